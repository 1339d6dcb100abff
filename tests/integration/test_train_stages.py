"""Every stage and method through the real engines (Transformers, TRL, PEFT, bitsandbytes) on a tiny random Llama."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from tests.integration.train_helpers import losses, metrics, train_in_process, write_job

pytestmark = pytest.mark.integration


def assert_run_directory(run: Path, adapter: bool) -> None:
    """docs/architecture.md §4: resolved job, plan, env, metrics, plots, checkpoints, final."""
    for name in ("job.yaml", "plan.json", "env.json", "metrics.jsonl", "summary.json"):
        assert (run / name).is_file(), name
    assert list((run / "plots").glob("*.png")), "no plots"
    checkpoints = sorted((run / "checkpoints").glob("checkpoint-*"))
    assert checkpoints and all((c / "factory_complete.json").is_file() for c in checkpoints)
    final = run / "final"
    assert (final / ("adapter_config.json" if adapter else "config.json")).is_file()
    assert (final / "tokenizer.json").is_file()
    env = json.loads((run / "env.json").read_text())
    assert env["versions"]["trl"] and env["versions"]["transformers"]


@pytest.mark.parametrize(
    ("stage", "method"),
    [("pt", "full"), ("sft", "lora"), ("sft", "full"), ("sft", "freeze"), ("sft", "qlora"), ("dpo", "lora")],
)
def test_stage_runs_and_fills_the_run_directory(tmp_path: Path, tiny_llama_dir: Path, stage: str, method: str) -> None:
    extra = {"method": {"freeze": {"trainable_layers": 1}}} if method == "freeze" else None
    job = write_job(tmp_path, tiny_llama_dir, stage, method, extra)
    assert train_in_process(job) == 0
    run = tmp_path / "run"
    assert_run_directory(run, adapter=method in ("lora", "qlora"))
    steps = losses(run)
    assert sorted(steps) == [1, 2, 3]
    assert all(math.isfinite(v) for v in steps.values())
    record = next(r for r in metrics(run) if r.get("step") == 2 and "loss" in r)
    assert record["learning_rate"] > 0 and "grad_norm" in record and record["tokens_per_second"] > 0


def test_dpo_full_uses_a_frozen_reference_copy(tmp_path: Path, tiny_llama_dir: Path) -> None:
    job = write_job(tmp_path, tiny_llama_dir, "dpo", "full", {"train": {"learning_rate": 1e-4}})
    assert train_in_process(job) == 0
    records = [r for r in metrics(tmp_path / "run") if "rewards/margins" in r]
    assert records, "DPO must log reward margins"
    # before the first update the policy is its reference: no reward, and the loss is -log sigmoid(0) = ln 2
    first = next(r for r in records if r["step"] == 1)
    assert first["rewards/chosen"] == 0.0 and first["loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_dpo_ref_model_is_the_reference(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """dpo.ref_model: another model scores the pairs, so the rewards start away from zero (the base would give 0)."""
    import torch
    from transformers import AutoModelForCausalLM

    reference = tmp_path / "reference"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(reference)
    extra = {"train": {"max_steps": 1}, "dpo": {"ref_model": str(reference)}}
    job = write_job(tmp_path, tiny_llama_dir, "dpo", "full", extra)
    assert train_in_process(job) == 0
    (first,) = [r for r in metrics(tmp_path / "run") if "rewards/margins" in r]
    assert abs(first["rewards/chosen"]) > 1e-3 and abs(first["loss"] - math.log(2)) > 1e-4, first


def test_model_tokenizer_serves_a_model_folder_without_one(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """model.tokenizer: the data is tokenized with it, training loads it, and final/ carries it."""
    from transformers import AutoTokenizer

    weights_only = tmp_path / "weights-only"
    weights_only.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(tiny_llama_dir / name, weights_only / name)
    extra = {"model": {"tokenizer": str(tiny_llama_dir)}, "train": {"max_steps": 1}}
    job = write_job(tmp_path, weights_only, "sft", "lora", extra)
    assert train_in_process(job) == 0
    given, saved = (
        AutoTokenizer.from_pretrained(tiny_llama_dir),
        AutoTokenizer.from_pretrained(tmp_path / "run" / "final"),
    )
    assert saved("Hello, world!")["input_ids"] == given("Hello, world!")["input_ids"]
    assert saved.chat_template == given.chat_template and len(saved) == len(given)


def test_grpo_logs_rewards_per_function(tmp_path: Path, tiny_llama_dir: Path) -> None:
    reward = tmp_path / "my_reward.py"
    reward.write_text(
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
        "    return 1.0 if data_source == 'demo_math' and ground_truth is not None else 0.0\n"
    )
    extra = {"grpo": {"rewards": ["math_answer", {"function": f"{reward}:compute_score", "weight": 0.5}]}}
    job = write_job(tmp_path, tiny_llama_dir, "grpo", "lora", extra)
    assert train_in_process(job) == 0
    records = metrics(tmp_path / "run")
    logged = {k for r in records for k in r}
    assert "reward" in logged and "reward_std" in logged
    assert "rewards/math_answer/mean" in logged and "rewards/compute_score/mean" in logged
    verl_means = [r["rewards/compute_score/mean"] for r in records if "rewards/compute_score/mean" in r]
    assert verl_means and all(v == 1.0 for v in verl_means), "the verl-style function saw data_source and answer"
    assert any(k.startswith("completions/") for k in logged)


def test_nan_loss_stops_the_run_and_names_the_step(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(
        tmp_path, tiny_llama_dir, "sft", "full", {"train": {"learning_rate": 1e6, "max_steps": 6, "max_grad_norm": 0}}
    )
    assert train_in_process(job) == 1
    out = capsys.readouterr().out
    assert "NaN/inf at step" in out and "last good checkpoint" in out
    assert not (tmp_path / "run" / "final").exists()


def test_tensorboard_reporting_writes_into_the_run_directory(tmp_path: Path, tiny_llama_dir: Path) -> None:
    job = write_job(tmp_path, tiny_llama_dir, "sft", "lora", {"logging": {"report_to": ["tensorboard"]}})
    assert train_in_process(job) == 0
    events = list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
