"""Interrupted runs save a sealed checkpoint and resume at the right step with the same loss curve; a finished run
is not trained again, a run directory has one owner, and a full disk stops a run with one message."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.train_helpers import REPO, losses, metrics, train_cli, train_in_process, write_job

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
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:  # what a kill -9 after step 4 leaves
        handle.write(json.dumps({"step": 4, "loss": 99.0}) + "\n" + '{"step": 5, "lo')

    monkeypatch.delenv("FACTORY_TEST_INTERRUPT_AT_STEP")
    assert train_in_process(resumed) == 0
    out = capsys.readouterr().out
    assert "resuming from" in out and "dropped 1 record(s) after step 3" in out
    assert [r["step"] for r in metrics(run) if "loss" in r] == [1, 2, 3, 4, 5]  # each step once, no torn line
    after = losses(run)
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


def test_a_finished_run_is_not_trained_again(
    tmp_path: Path, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, tiny_llama_dir, "sft", "lora")  # 3 steps, checkpoints at 2 and 3
    run = tmp_path / "run"
    assert train_in_process(job) == 0
    capsys.readouterr()
    logged = (run / "metrics.jsonl").read_text()
    weights = (run / "final" / "adapter_model.safetensors").read_bytes()

    def rerun(*overrides: str) -> str:
        assert train_in_process(job, *overrides) == 0
        assert (run / "metrics.jsonl").read_text() == logged  # nothing trained
        assert json.loads((run / "summary.json").read_text())["global_step"] == 3
        assert (run / "final" / "adapter_model.safetensors").read_bytes() == weights
        return " ".join(capsys.readouterr().out.split())

    out = rerun()
    assert f"already finished: {run} was trained to step 3 (train.max_steps 3)" in out
    assert "output.resume: never" in out and "factory eval --model" in out

    (run / "summary.json").unlink()  # a kill between final/ and summary.json
    assert "summary.json rebuilt" in rerun()

    shutil.rmtree(run / "final")  # a kill between the last checkpoint and final/
    (run / "summary.json").unlink()
    out = rerun()
    assert f"final/ written from {run / 'checkpoints' / 'checkpoint-3'}" in out and "already finished" in out

    assert train_in_process(job, "train.max_steps=4") == 0  # a longer job trains on from step 3
    assert [r["step"] for r in metrics(run) if "loss" in r] == [1, 2, 3, 4]
    assert json.loads((run / "summary.json").read_text())["global_step"] == 4


def test_a_second_train_on_the_same_run_directory_is_refused(tmp_path: Path, tiny_llama_dir: Path) -> None:
    from factory_cli.runs import RunDir

    job = write_job(tmp_path, tiny_llama_dir, "sft", "lora")
    with RunDir(tmp_path / "run").lock():
        second = train_cli(job)
    assert second.returncode == 2, second.stdout + second.stderr
    said = " ".join((second.stdout + second.stderr).split())
    assert f"is in use by another `factory train` (pid {os.getpid()} on {socket.gethostname()}, started" in said
    assert "Traceback" not in said and not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MB tmpfs (mounting one needs root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)]).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _squeezed(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    return "".join((captured.out + captured.err).split())


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_full_disk_stops_with_one_message_and_keeps_the_sealed_checkpoint(
    tmp_path: Path,
    tiny_llama_dir: Path,
    small_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from factory_cli.backends.deepspeed.callbacks import CheckpointSealCallback

    run = small_disk / "run"
    job = write_job(tmp_path, tiny_llama_dir, "sft", "lora", {"train": {"max_steps": 4}, "output": {"dir": str(run)}})
    filler = small_disk / "filler"
    sealed: dict[str, str] = {}
    seal = CheckpointSealCallback.on_save

    def seal_then_fill_the_disk(self: Any, args: Any, state: Any, control: Any, **kw: Any) -> None:
        seal(self, args, state, control, **kw)
        if state.global_step == 2:  # leave room for metrics lines, not for the next checkpoint
            sealed.update(_digests(run / "checkpoints" / "checkpoint-2"))
            fd = os.open(filler, os.O_CREAT | os.O_WRONLY)
            os.posix_fallocate(fd, 0, shutil.disk_usage(small_disk).free - 256 * 1024)
            os.close(fd)

    monkeypatch.setattr(CheckpointSealCallback, "on_save", seal_then_fill_the_disk)
    assert train_in_process(job) == 1
    said = _squeezed(capsys)  # rich folds long paths
    assert f"thediskisfull:writing{run / 'checkpoints' / 'checkpoint-4'}failed;" in said
    assert "freethere;acheckpointheretakesabout" in said and "Traceback" not in said
    assert f"Lastgoodcheckpoint:{run / 'checkpoints' / 'checkpoint-2'}" in said
    assert sealed and _digests(run / "checkpoints" / "checkpoint-2") == sealed

    monkeypatch.setattr(CheckpointSealCallback, "on_save", seal)
    assert train_in_process(job) == 1  # the disk is still full: the same message, no temp file left
    assert "thediskisfull:writing" in _squeezed(capsys)
    assert not list(run.glob(".*.tmp*")) and not (run / ".factory.lock").exists()

    filler.unlink()
    assert train_in_process(job) == 0
    said = _squeezed(capsys)
    assert "metrics.jsonl:dropped2record(s)afterstep2" in said
    assert f"resumingfrom{run / 'checkpoints' / 'checkpoint-2'}" in said
    assert [r["step"] for r in metrics(run) if "loss" in r] == [1, 2, 3, 4]
