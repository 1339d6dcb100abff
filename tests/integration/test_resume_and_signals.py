"""Interrupted runs save a sealed checkpoint and resume at the right step with the same loss curve."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.train_helpers import REPO, losses, train_in_process, write_job

pytestmark = pytest.mark.integration


def test_resume_continues_with_the_same_losses(
    tmp_path: Path, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {"train": {"max_steps": 5}, "method": {"lora": {"dropout": 0.1}}}
    straight = write_job(tmp_path / "straight", tiny_llama_dir, "sft", "lora", extra)
    assert train_in_process(straight) == 0
    reference = losses(tmp_path / "straight" / "run")

    resumed = write_job(tmp_path / "resumed", tiny_llama_dir, "sft", "lora", extra)
    monkeypatch.setenv("FACTORY_TEST_INTERRUPT_AT_STEP", "3")
    assert train_in_process(resumed) == 1
    out = capsys.readouterr().out
    assert "interrupted by SIGTERM at step 3" in out
    run = tmp_path / "resumed" / "run"
    assert (run / "checkpoints" / "checkpoint-3" / "factory_complete.json").is_file()
    assert not (run / "final").exists()

    monkeypatch.delenv("FACTORY_TEST_INTERRUPT_AT_STEP")
    assert train_in_process(resumed) == 0
    assert "resuming from" in capsys.readouterr().out
    after = losses(run)
    assert sorted(after) == [1, 2, 3, 4, 5]
    for step in (4, 5):
        assert after[step] == pytest.approx(reference[step], rel=1e-5), step


def test_half_written_checkpoint_is_skipped(tmp_path: Path, tiny_llama_dir: Path) -> None:
    from factory_cli.runs import last_complete_checkpoint

    job = write_job(tmp_path, tiny_llama_dir, "sft", "lora", {"train": {"max_steps": 2}})
    assert train_in_process(job) == 0
    run = tmp_path / "run"
    broken = run / "checkpoints" / "checkpoint-9"
    broken.mkdir()
    (broken / "trainer_state.json").write_text("{")
    assert last_complete_checkpoint(run) == run / "checkpoints" / "checkpoint-2"


def test_sigterm_from_outside_saves_and_exits_cleanly(tmp_path: Path, tiny_llama_dir: Path) -> None:
    job = write_job(
        tmp_path, tiny_llama_dir, "sft", "lora", {"train": {"max_steps": 400}, "output": {"save_steps": 1000}}
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    process = subprocess.Popen(
        [sys.executable, "-m", "factory_cli", "train", str(job)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output
    assert "interrupted by SIGTERM" in output and "Traceback" not in output
    sealed = list((tmp_path / "run" / "checkpoints").glob("checkpoint-*/factory_complete.json"))
    assert len(sealed) == 1
