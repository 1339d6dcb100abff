"""What `factory sample` does, from the command line or a job's `sample:` section; every option checked before a
model loads. Pure: no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from factory_cli.config.errors import UsageError
from factory_cli.config.schema import SEED_MAX, DatasetSpec, RewardSpec

KeepMode = Literal["best", "top-k", "all"]
KEEP_MODES: tuple[KeepMode, ...] = ("best", "top-k", "all")
ENGINES = ("auto", "vllm", "transformers")
DEVICES = ("auto", "cuda", "npu", "cpu")
DTYPES = ("auto", "bf16", "fp16", "fp32")


@dataclass(frozen=True)
class SampleRequest:
    """Generate `n` answers per prompt of `datasets`, score them with `rewards`, keep what `keep` says."""

    model: str
    datasets: tuple[DatasetSpec, ...]
    rewards: tuple[RewardSpec, ...]
    output: Path
    n: int = 8
    temperature: float = 1.0
    max_new_tokens: int = 256
    keep: KeepMode = "best"
    k: int = 2  # top-k: the most answers kept per prompt
    min_score: float = 1.0  # an answer is accepted at or above this total reward (1.0: correct under a 0/1 reward)
    pairs: bool = False  # write DPO preference rows (best accepted vs worst) instead of SFT rows
    pairs_output: Path | None = None  # also write those DPO rows here, from the same answers as output's SFT rows
    limit: int | None = None  # prompts read (default: all)
    batch_size: int = 8  # prompts per generation batch, each with its n answers
    seed: int = 42
    engine: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    dataset_dir: str | None = None
    force: bool = False  # start over instead of continuing an output a stopped run left
    base_dirs: tuple[Path, ...] = field(default_factory=tuple)

    def fingerprint(self) -> dict[str, Any]:
        """What decides the rows written: a stopped run continues only under the same settings."""
        return {
            "model": self.model,
            "datasets": [spec.model_dump(mode="json") for spec in self.datasets],
            "rewards": [spec.model_dump(mode="json") for spec in self.rewards],
            "n": self.n,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "keep": self.keep,
            "k": self.k,
            "min_score": self.min_score,
            "pairs": self.pairs,
            "pairs_output": str(self.pairs_output) if self.pairs_output is not None else None,
            "limit": self.limit,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "engine": self.engine,
            "dtype": self.dtype,
        }


def parse_rewards(text: str | None) -> tuple[RewardSpec, ...]:
    """`--rewards math_answer,my_rewards.py:score`: built-in names or file.py:function, weight 1 each."""
    items = [part.strip() for part in (text or "").split(",") if part.strip()]
    if not items:
        raise UsageError(
            "no reward to score the answers with",
            "give --rewards math_answer (see `factory list rewards`) or --rewards path/to/file.py:function",
        )
    return tuple(RewardSpec.model_validate(item) for item in items)


def validate_request(request: SampleRequest) -> None:
    """Every option checked; raises UsageError naming the option and a value that works."""
    checks: list[tuple[bool, str, str]] = [
        (
            bool(request.model.strip()),
            "no model to sample from",
            "give --model (a run dir, model dir or registry name)",
        ),
        (
            bool(request.datasets),
            "no prompts to sample for",
            "give --data (a registry name such as demo-grpo-math or a file)",
        ),
        (request.n >= 1, f"--n must be at least 1, got {request.n}", "e.g. --n 8 answers per prompt"),
        (request.temperature >= 0, f"--temperature must be 0 or more, got {request.temperature}", "e.g. 1.0"),
        (request.max_new_tokens >= 1, f"--max-new-tokens must be at least 1, got {request.max_new_tokens}", "e.g. 256"),
        (request.keep in KEEP_MODES, f"unknown --keep `{request.keep}`", f"one of {', '.join(KEEP_MODES)}"),
        (request.k >= 1, f"--k must be at least 1, got {request.k}", "e.g. --keep top-k --k 2"),
        (
            request.limit is None or request.limit >= 1,
            f"--limit must be at least 1, got {request.limit}",
            "leave it out for every prompt",
        ),
        (request.batch_size >= 1, f"--batch-size must be at least 1, got {request.batch_size}", "e.g. 8"),
        (0 <= request.seed <= SEED_MAX, f"--seed must be in 0..{SEED_MAX}, got {request.seed}", "e.g. 42"),
        (request.engine in ENGINES, f"unknown --engine `{request.engine}`", f"one of {', '.join(ENGINES)}"),
        (request.device in DEVICES, f"unknown --device `{request.device}`", f"one of {', '.join(DEVICES)}"),
        (request.dtype in DTYPES, f"unknown --dtype `{request.dtype}`", f"one of {', '.join(DTYPES)}"),
    ]
    for ok, message, hint in checks:
        if not ok:
            raise UsageError(message, hint)
    if request.pairs and request.pairs_output is not None:
        raise UsageError(
            "--pairs writes the pairs to -o; --pairs-output writes them beside the SFT rows of -o",
            "give one: --pairs-output for both kinds of rows from one generation",
        )
    if (request.pairs or request.pairs_output is not None) and request.n < 2:
        option = "--pairs" if request.pairs else "--pairs-output"
        raise UsageError(f"{option} needs at least 2 answers per prompt to compare", "e.g. --n 8")
    if request.temperature == 0 and request.n > 1:
        raise UsageError(
            f"--temperature 0 is greedy: the {request.n} answers of a prompt would all be the same",
            "sample at a high temperature (e.g. --temperature 1.0), or use --n 1",
        )
    if request.output.suffix != ".jsonl":
        raise UsageError(f"-o {request.output}: the rows are written as JSON lines", "name the output *.jsonl")
    if request.output.is_dir():
        raise UsageError(f"-o {request.output} is a directory", "give a file path such as data/rft.jsonl")
    if request.pairs_output is not None:
        pairs = request.pairs_output
        if pairs.suffix != ".jsonl" or pairs.is_dir():
            raise UsageError(f"--pairs-output {pairs}: the pairs are written as JSON lines", "e.g. data/pairs.jsonl")
        if pairs.resolve() == request.output.resolve():
            raise UsageError(f"--pairs-output is -o ({pairs})", "give the pairs a file of their own")
