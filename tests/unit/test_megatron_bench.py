"""bench/megatron_gpu.py's CPU-checkable parts: the job it plans, the log it reads and the verdict it writes (the
GPU phases themselves run only on a GPU, bench/megatron_device_run.sh)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import megatron_gpu

LOG = """ iteration        1/       4 | consumed samples:            4 | lm loss: 1.082471E+01 | loss scale: 1.0 |
 iteration        2/       4 | consumed samples:            8 | lm loss: 1.071000E+01 | loss scale: 1.0 |
"""
RESUMED = """  successfully loaded checkpoint from /r/run/checkpoints [ t 1/1, p 1/1 ] at iteration 4
 iteration        5/       6 | consumed samples:           20 | lm loss: 1.0E+01 |
 iteration        6/       6 | consumed samples:           24 | lm loss: 9.9E+00 |
"""


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_llama_dir: Path) -> Path:
    monkeypatch.setattr(megatron_gpu, "WORK", tmp_path)
    monkeypatch.setattr(megatron_gpu, "MODEL_DIR", tiny_llama_dir)
    monkeypatch.setattr(megatron_gpu, "RUN_DIR", tmp_path / "run")
    monkeypatch.setattr(megatron_gpu, "JOB", tmp_path / "job.yaml")
    return tmp_path


def test_the_proof_plans_preprocess_and_a_resumable_local_train(work: Path) -> None:
    _, plan = megatron_gpu.plan_of(megatron_gpu.FIRST_STEPS)
    assert [s.name for s in plan.steps] == ["preprocess", "train"]  # base given: no Bridge convert; no export
    args = plan.engine_config["train_args"]
    assert args[args.index("--train-iters") + 1] == str(megatron_gpu.FIRST_STEPS)
    assert args[args.index("--transformer-impl") + 1] == "local"
    assert args[args.index("--load") + 1].endswith("run/checkpoints")
    assert args[args.index("--pretrained-checkpoint") + 1].endswith("run/megatron_base")
    assert "--bf16" not in args and "--fp16" not in args  # fp32, to compare with the HF loss


def test_report_verdicts(work: Path) -> None:
    (work / "train1.log").write_text(LOG)
    (work / "train2.log").write_text(RESUMED)
    (work / "hf.json").write_text(json.dumps({"ran": True, "hf_loss": 10.82}))
    assert megatron_gpu.report(work / "out") == 0
    record = json.loads((work / "out" / "megatron_gpu.json").read_text())
    assert record["loss_matches"] and record["resume_ok"] and record["resumed_from_iteration"] == 4
    (work / "hf.json").write_text(json.dumps({"ran": True, "hf_loss": 10.5}))
    assert megatron_gpu.report(work / "out") == 1  # iteration 1's loss is not the HF model's
    (work / "hf.json").write_text(json.dumps({"ran": True, "hf_loss": 10.82}))
    (work / "train2.log").write_text(LOG)  # started over instead of resuming
    assert megatron_gpu.report(work / "out") == 1
