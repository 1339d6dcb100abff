"""Which checkpoint a run continues from, and which checkpoints it keeps: `output.resume` and
`output.save_total_limit` on the tiny random Llama (docs/architecture.md §4)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.train_helpers import metrics, train_in_process, write_job

pytestmark = pytest.mark.integration


def logged_steps(run: Path) -> Counter[int]:
    """How many times each step's training loss was logged (a step trained twice is logged twice)."""
    return Counter(int(r["step"]) for r in metrics(run) if "loss" in r)


def sealed(run: Path) -> list[str]:
    return sorted(p.parent.name for p in (run / "checkpoints").glob("checkpoint-*/factory_complete.json"))


def test_resume_continues_from_the_newest_sealed_checkpoint_and_never_starts_over(
    tmp_path: Path, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, tiny_llama_dir, "sft", "lora", {"train": {"max_steps": 5}, "output": {"save_steps": 1}})
    run = tmp_path / "run"
    monkeypatch.setenv("FACTORY_TEST_INTERRUPT_AT_STEP", "3")
    assert train_in_process(job) == 1
    monkeypatch.delenv("FACTORY_TEST_INTERRUPT_AT_STEP")
    assert sealed(run) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    capsys.readouterr()

    assert train_in_process(job) == 0  # output.resume: auto
    out = "".join(capsys.readouterr().out.split())  # the console wraps long paths anywhere
    assert f"resumingfrom{run / 'checkpoints' / 'checkpoint-3'}train" in out, out
    # steps 1-3 come from the first run, 4-5 from the resumed one: each trained exactly once
    assert logged_steps(run) == Counter({1: 1, 2: 1, 3: 1, 4: 1, 5: 1})
    assert json.loads((run / "summary.json").read_text())["global_step"] == 5

    # never: from step 1 again, though checkpoint-5 is there (`auto` would find nothing left to train)
    assert train_in_process(job, "output.resume=never", "train.max_steps=1") == 0
    assert "resuming from" not in capsys.readouterr().out
    # a run started anew keeps only its own records; the earlier run moved to previous/<time>/, whole
    assert logged_steps(run) == Counter({1: 1})
    assert json.loads((run / "summary.json").read_text())["global_step"] == 1
    assert sealed(run) == ["checkpoint-1"]  # checkpoint-5 of the earlier run can no longer be resumed by mistake
    (earlier,) = (run / "previous").iterdir()
    assert sorted(p.name for p in (earlier / "checkpoints").iterdir())[-1] == "checkpoint-5"
    assert json.loads((earlier / "summary.json").read_text())["global_step"] == 5
    assert (earlier / "final" / "factory_complete.json").is_file()


def test_save_total_limit_keeps_only_the_newest_checkpoints(tmp_path: Path, tiny_llama_dir: Path) -> None:
    extra = {"train": {"max_steps": 4}, "output": {"save_steps": 1, "save_total_limit": 2}}
    job = write_job(tmp_path, tiny_llama_dir, "sft", "lora", extra)
    assert train_in_process(job) == 0
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert sealed(run) == ["checkpoint-3", "checkpoint-4"]
