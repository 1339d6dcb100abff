"""Two processes on this CPU (gloo): torchrun DDP, DeepSpeed ZeRO-2 and ZeRO-3, launched by `factory train`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.train_helpers import losses, train_cli, write_job

pytestmark = [pytest.mark.integration, pytest.mark.multiproc]


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_two_process_zero(tmp_path: Path, tiny_llama_dir: Path, zero_stage: int) -> None:
    job = write_job(tmp_path, tiny_llama_dir, "sft", "full", {"train": {"max_steps": 3}})
    result = train_cli(job, "parallel.nproc_per_node=2", f"parallel.zero_stage={zero_stage}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    run = tmp_path / "run"
    plan = json.loads((run / "plan.json").read_text())
    argv = plan["steps"][-1]["argv"]
    assert argv[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=2" in argv
    assert plan["steps"][-1]["env"]["OMP_NUM_THREADS"] == "1"
    ds = json.loads((run / "deepspeed.json").read_text())
    assert ds["zero_optimization"]["stage"] == zero_stage
    assert sorted(losses(run)) == [1, 2, 3]
    assert (run / "final" / "model.safetensors").is_file()
    assert (run / "checkpoints" / "checkpoint-2" / "factory_complete.json").is_file()


def test_two_process_ddp_with_lora(tmp_path: Path, tiny_llama_dir: Path) -> None:
    job = write_job(tmp_path, tiny_llama_dir, "sft", "lora", {"train": {"max_steps": 2}})
    result = train_cli(job, "parallel.nproc_per_node=2")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    run = tmp_path / "run"
    assert sorted(losses(run)) == [1, 2]
    assert (run / "final" / "adapter_model.safetensors").is_file()
