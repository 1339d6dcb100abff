"""bench/verl_grpo_device.py: its job plans for a GPU (the same checks and planner `factory train` runs there), the
schedule gives the rollout steps it promises, and without verl it says what is missing instead of failing later."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from bench import verl_grpo_device
from factory_cli.backends import get_backend
from factory_cli.config.defaults import DeviceFacts, resolve_device_defaults
from factory_cli.config.validate import load_and_validate

REPO = Path(__file__).resolve().parents[2]


def test_device_job_plans_on_cuda(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps({"model_type": "qwen2", **verl_grpo_device.SHAPE, "vocab_size": 49152})
    )
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(verl_grpo_device.device_job(model, tmp_path / "run", sys.executable)))
    job = resolve_device_defaults(load_and_validate(job_file).job, DeviceFacts("cuda", bf16=True))
    plan = get_backend("verl").plan(job, "cuda")
    overrides = plan.engine_config["overrides"]
    assert "actor_rollout_ref.rollout.name=vllm" in overrides
    assert f"trainer.total_training_steps={verl_grpo_device.ROLLOUT_STEPS}" in overrides
    assert "+actor_rollout_ref.model.override_config.attn_implementation=sdpa" in overrides


def test_without_verl_it_says_what_is_missing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.verl_grpo_device", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    result = json.loads((tmp_path / "verl_grpo_device.json").read_text())
    assert result["outcome"].startswith("not run: verl, vllm, ray, transfer_queue missing")
