"""The post-training chain (bench/chain.py, `make chain`) with fewer steps on the real small model: SFT (LoRA) ->
GRPO -> factory sample -> SFT on the sampled answers -> DPO on the pairs -> factory export --quant int8 -> every
stage evaluated on the same tasks. One chain for the module; each test checks one link of it.

The quick settings accept every answer (min_score 0) so that the RFT and DPO links always have rows to train on;
`make chain` accepts only right answers. Timed on the shared 2-core box pinned to one core (taskset -c 1): 82-138 s
at a load average of about 4 from other jobs; unpinned, torch's two threads fought the other jobs for both cores and
the same test took 8 min at a load of 5, 25 min at 8.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.chain import QUICK, ChainResult, Stage, markdown, run_chain

pytestmark = pytest.mark.e2e

STAGES = ["base", "sft", "grpo", "sample", "rft", "dpo", "int8"]


@pytest.fixture(scope="module")
def chain(smollm2_hf_dir: Path, factory_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChainResult]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACTORY_CACHE", str(factory_cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        yield run_chain(tmp_path_factory.mktemp("chain") / "runs", QUICK, say=lambda _message: None)


def _stage(chain: ChainResult, name: str) -> Stage:
    return next(stage for stage in chain.stages if stage.name == name)


def test_every_link_ran_and_took_time(chain: ChainResult) -> None:
    assert [stage.name for stage in chain.stages] == STAGES
    for stage in chain.stages[1:]:
        assert stage.seconds > 0 and not stage.note, stage


def test_every_model_is_measured_on_the_same_tasks(chain: ChainResult) -> None:
    measured = [stage for stage in chain.stages if stage.model is not None]
    assert [stage.name for stage in measured] == ["base", "sft", "grpo", "rft", "dpo", "int8"]
    for stage in measured:
        assert set(stage.metrics) == {"ppl", "gsm8k_demo"}, stage
        assert 1.0 < stage.metrics["ppl"] < 100.0 and 0.0 <= stage.metrics["gsm8k_demo"] <= 1.0
        assert stage.eval_seconds > 0
    base = _stage(chain, "base")
    assert base.deltas == {"ppl": 0.0, "gsm8k_demo": 0.0}
    # every link moved the model: no stage scores the perplexity of the one before it to the last digits
    ppl = [stage.metrics["ppl"] for stage in measured]
    for before, after, stage in zip(ppl, ppl[1:], measured[1:], strict=False):
        assert not math.isclose(before, after, rel_tol=1e-9), f"{stage.name} did not change the model"


def test_sampled_rows_were_trained_on(chain: ChainResult) -> None:
    rft, pairs = chain.sampling["rft"], chain.sampling["pairs"]
    assert rft["prompts"] == pairs["prompts"] == QUICK.sample_prompts
    assert rft["samples"] == QUICK.sample_prompts * QUICK.sample_n
    assert rft["rows"] == QUICK.sample_prompts  # keep best, every answer accepted: one row per prompt
    assert 0 < pairs["rows"] <= QUICK.sample_prompts
    rows = [json.loads(line) for line in Path(rft["output"]).read_text().splitlines()]
    assert all(row["model"].endswith("grpo-merged") for row in rows)
    rft_run = Path(_stage(chain, "rft").model or "")
    manifest = json.loads((rft_run / "data" / "manifest.json").read_text())
    assert manifest["report"]["datasets"][0]["converted"] == manifest["report"]["train_rows"] == rft["rows"]


def test_the_export_is_quantized_and_the_table_is_written(chain: ChainResult) -> None:
    export = Path(_stage(chain, "int8").model or "")
    config = json.loads((export / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "bitsandbytes"
    table = markdown(chain)
    for name in STAGES:
        assert f"| {name} |" in table
    assert "total wall time" in table
