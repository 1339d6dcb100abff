"""The real small model (SmolLM2-135M-Instruct from its GGUF) learns: SFT loss falls, DPO margins rise, GRPO scores."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

import pytest

from tests.integration.train_helpers import losses, metrics, train_in_process, write_job

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m-instruct-gguf"


@pytest.fixture()
def smollm2(smollm2_hf_dir: Path, factory_cache: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The registry name, with the session's cache holding the converted checkpoint."""
    monkeypatch.setenv("FACTORY_CACHE", str(factory_cache))
    return MODEL


def test_sft_lora_loss_goes_down(tmp_path: Path, smollm2: str) -> None:
    # A few passes over the same 8 conversations: the per-step loss of packed batches is noisy, learning is not.
    extra = {
        "data": {"train": [{"path": "demo-sft-alpaca", "max_samples": 8}], "packing": True},
        "train": {"max_steps": 8, "learning_rate": 1e-3, "micro_batch_size": 2},
        "method": {"lora": {"rank": 16}},
        "logging": {"sample_after_training": True},
    }
    job = write_job(tmp_path, smollm2, "sft", "lora", extra)
    assert train_in_process(job) == 0
    steps = losses(tmp_path / "run")
    values = [steps[s] for s in sorted(steps)]
    assert mean(values[-3:]) < mean(values[:3]) - 0.1, values
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["sample"]["answer"], "the trained model answers the sample prompt"


def test_dpo_reward_margin_rises(tmp_path: Path, smollm2: str) -> None:
    extra = {
        "data": {"train": [{"path": "demo-dpo", "max_samples": 48}]},
        "train": {"max_steps": 8, "learning_rate": 2e-4, "micro_batch_size": 2},
        "method": {"lora": {"rank": 16}},
    }
    job = write_job(tmp_path, smollm2, "dpo", "lora", extra)
    assert train_in_process(job) == 0
    margins = [r["rewards/margins"] for r in metrics(tmp_path / "run") if "rewards/margins" in r]
    assert len(margins) >= 6
    assert mean(margins[-3:]) > mean(margins[:2]) + 0.05, margins


def test_grpo_logs_rewards_on_the_real_model(tmp_path: Path, smollm2: str) -> None:
    extra = {
        "data": {"train": [{"path": "demo-grpo-math", "max_samples": 16}]},
        "train": {"max_steps": 2, "micro_batch_size": 4},
        "grpo": {"num_generations": 4, "max_completion_length": 32, "rewards": ["math_answer", "length"]},
    }
    job = write_job(tmp_path, smollm2, "grpo", "lora", extra)
    assert train_in_process(job) == 0
    records = [r for r in metrics(tmp_path / "run") if "reward" in r]
    assert len(records) == 2
    for record in records:
        assert 0.0 <= record["rewards/math_answer/mean"] <= 1.0
        assert record["completions/mean_length"] > 0
        assert "kl" in record and "entropy" in record
