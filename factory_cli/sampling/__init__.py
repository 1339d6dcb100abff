"""Rejection sampling (`factory sample`): many answers per prompt, scored by the GRPO rewards, the best kept.

request (what to do, checked with no torch) -> prompts (canonical grpo rows, each with its id) -> engines (vLLM or
transformers generate through factory_cli/inference) -> scoring (factory_cli/rewards) -> selection (pure) -> output
(SFT messages or DPO preference rows, written resumably). Importing this package is cheap: torch loads with the model.
"""

from factory_cli.sampling.request import SampleRequest
from factory_cli.sampling.run import SampleSummary, run_sample

__all__ = ["SampleRequest", "SampleSummary", "run_sample"]
