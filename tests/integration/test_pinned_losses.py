"""The shipped deepspeed example jobs on the tiny random Llama: losses and gradient norms pinned step by step.

A change that moves the numbers of a shipped job (a refactor, a kernel, a default) fails here and has to say why
by re-pinning: `python -m tests.integration.test_pinned_losses` (pytest with `--repin`) rewrites
`pinned_losses.json`.

Each example keeps its stage, method, data sources, packing, learning rate and batch shape; only the model (the tiny
one), the length (128 tokens), the rows read (16 per source), the steps (3) and the folders change. LoRA runs pin
`method.lora.base_precision: fp32`, so the numbers do not depend on whether this CPU multiplies bf16 in hardware.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.train_helpers import REPO, metrics, train_in_process, write_job

pytestmark = pytest.mark.integration

PINS = Path(__file__).with_name("pinned_losses.json")
EXAMPLES = ("quickstart_sft", "pt_full", "sft_full", "sft_lora", "sft_qlora", "dpo_lora", "grpo_lora")
STEPS = 3
# fp32 on the CPU: the same job gives the same numbers to ~1e-6 across CPUs (summation order of the vector units);
# a change in what is computed moves them by far more within three steps.
REL, ABS = 2e-4, 1e-6


def example_on_tiny_model(name: str, tiny_model: Path, folder: Path) -> Path:
    """examples/<name>.yaml with the tiny model, 3 steps, short rows, and folders under `folder`."""
    job: dict[str, Any] = yaml.safe_load((REPO / "examples" / f"{name}.yaml").read_text(encoding="utf-8"))
    assert job["backend"] == "deepspeed", name
    job["model"] = {"name_or_path": str(tiny_model)}
    job["device"] = "cpu"
    data = job["data"]
    data["train"] = [{**(s if isinstance(s, dict) else {"path": s}), "max_samples": 16} for s in data["train"]]
    data["max_length"] = 128
    data["cache_dir"] = str(folder / "cache")
    job["train"]["max_steps"] = STEPS
    if job["method"]["type"] == "lora":
        job["method"].setdefault("lora", {})["base_precision"] = "fp32"
    if "grpo" in job:
        # 16-token completions of a random model: the length reward's target is scaled to them, so the rewards of a
        # group differ and the GRPO loss and gradients are not all zero
        job["grpo"].update(max_prompt_length=96, max_completion_length=16)
        for reward in job["grpo"]["rewards"]:
            if isinstance(reward, dict) and reward.get("name") == "length":
                reward["kwargs"] = {"target_chars": 60}
    job["output"] = {"dir": str(folder / "run"), "save_steps": STEPS}
    job["logging"] = {"steps": 1, "sample_after_training": False}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
    return path


def train_and_read(name: str, tiny_model: Path, folder: Path) -> dict[str, list[float]]:
    """Train the example; the per-step loss and grad norm it logged."""
    assert train_in_process(example_on_tiny_model(name, tiny_model, folder)) == 0
    records = sorted((r for r in metrics(folder / "run") if "loss" in r), key=lambda r: r["step"])
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    return {key: [float(r[key]) for r in records] for key in ("loss", "grad_norm")}


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_losses_are_pinned(
    name: str, tiny_llama_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if request.config.getoption("--repin"):
        got = train_and_read(name, tiny_llama_dir, tmp_path)
        pinned = json.loads(PINS.read_text(encoding="utf-8")) if PINS.is_file() else {}
        pinned[name] = got
        PINS.write_text(json.dumps(dict(sorted(pinned.items())), indent=2) + "\n", encoding="utf-8")
        return
    pinned = json.loads(PINS.read_text(encoding="utf-8"))
    assert name in pinned, f"no pins for examples/{name}.yaml: run python -m tests.integration.test_pinned_losses"
    got = train_and_read(name, tiny_llama_dir, tmp_path)
    for key, values in got.items():
        assert all(math.isfinite(v) for v in values), (key, values)
        assert values == pytest.approx(pinned[name][key], rel=REL, abs=ABS), (
            f"examples/{name}.yaml {key} moved: pinned {pinned[name][key]}, got {values}. If the change is meant, "
            "say why in the commit and re-pin with python -m tests.integration.test_pinned_losses"
        )


def test_a_job_run_twice_gives_the_same_numbers_bit_for_bit(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """The seed covers what is built before training: pt's LoRA adapter is made (its A matrices drawn) before
    Trainer seeds; unseeded, a second run in the same process had another step-1 gradient norm (0.1915 vs 0.1697)."""
    numbers = []
    for folder in (tmp_path / "first", tmp_path / "second"):
        assert train_in_process(write_job(folder, tiny_llama_dir, "pt", "lora", {"train": {"max_steps": 2}})) == 0
        numbers.append([(r["loss"], r["grad_norm"]) for r in metrics(folder / "run") if "loss" in r])
    assert len(numbers[0]) == 2
    assert numbers[0] == numbers[1]


def test_pins_cover_every_deepspeed_example() -> None:
    shipped = {
        p.stem
        for p in (REPO / "examples").glob("*.yaml")
        if yaml.safe_load(p.read_text(encoding="utf-8"))["backend"] == "deepspeed"
    }
    assert shipped == set(EXAMPLES) == set(json.loads(PINS.read_text(encoding="utf-8")))


if __name__ == "__main__":
    import subprocess

    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "--repin"]))
