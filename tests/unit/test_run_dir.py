"""runs.RunDir: the one reader of a run directory (job, plan, manifest, metrics, checkpoints, final, summary) and the
readers that used to parse job.yaml on their own (deepspeed worker, megatron, verl, eval, export) going through it."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from factory_cli.backends import get_backend
from factory_cli.config.defaults import DeviceFacts, resolve_device_defaults
from factory_cli.config.dump import job_to_yaml
from factory_cli.config.errors import JobError, UsageError
from factory_cli.config.schema import DeepSpeedJob, JobBase, MegatronJob
from factory_cli.config.validate import load_and_validate
from factory_cli.runs import (
    COMPLETE_MARKER,
    LOCK_FILE,
    MetricsWriter,
    RunDir,
    is_disk_full,
    mark_complete,
    plot_metrics,
    read_metrics,
    write_text_atomic,
)
from tests.unit.plan_helpers import EXAMPLES


def resolved(example: str, device: str, run_dir: Path, *overrides: str) -> JobBase:
    """An example job as `factory train` resolves it for `device`, writing into `run_dir`."""
    job = load_and_validate(EXAMPLES / example, [f"output.dir={run_dir}", *overrides]).job
    return resolve_device_defaults(job, DeviceFacts(device, bf16=device != "cpu"))


def written_run(tmp_path: Path, example: str = "sft_lora.yaml", device: str = "cpu") -> tuple[RunDir, JobBase]:
    """A run directory with every file a finished deepspeed run leaves."""
    run = RunDir(tmp_path / "run")
    job = resolved(example, device, run.path)
    assert run.prepare(job_to_yaml(job)) == []
    run.write_plan({"run_dir": str(run.path), "base_dirs": [str(EXAMPLES)], "device": device})
    run.manifest_file.parent.mkdir(parents=True)
    run.manifest_file.write_text(json.dumps({"model_path": "m", "train": "t", "eval": None}), encoding="utf-8")
    writer = run.metrics_writer()
    writer.write({"step": 1, "loss": 2.5})
    writer.write({"step": 2, "loss": float("nan")})
    for step, sealed in ((2, True), (4, True), (6, False)):
        checkpoint = run.checkpoints_dir / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        if sealed:
            (checkpoint / "trainer_state.json").write_text("{}", encoding="utf-8")
            mark_complete(checkpoint, step)
    run.final_dir.mkdir()
    run.summary_file.write_text(json.dumps({"ok": True, "steps": 6}), encoding="utf-8")
    return run, job


def test_reads_every_file_of_a_run(tmp_path: Path) -> None:
    run, job = written_run(tmp_path)
    assert run.is_run_dir()
    assert run.job() == job and run.job(DeepSpeedJob) == job
    assert run.plan()["device"] == "cpu" and run.base_dirs() == (EXAMPLES, run.path)
    assert run.manifest()["model_path"] == "m"
    records = run.metrics()
    assert records[0] == {"step": 1, "loss": 2.5} and records[1]["loss"] != records[1]["loss"]  # nan back
    assert len(read_metrics(run.path)) == 2  # the bare-path helper reads the same file
    assert [step for step, _ in run.checkpoints()] == [2, 4, 6]
    assert run.last_complete_checkpoint() == run.checkpoints_dir / "checkpoint-4"  # 6 was never sealed
    assert run.resume_checkpoint("auto") == run.checkpoints_dir / "checkpoint-4"
    assert run.resume_checkpoint("never") is None
    assert run.final_dir.is_dir() and run.summary() == {"ok": True, "steps": 6}
    assert isinstance(run.metrics_writer(), MetricsWriter)


def test_a_changed_job_keeps_the_previous_one(tmp_path: Path) -> None:
    run, job = written_run(tmp_path)
    changed = job.model_copy(update={"stage": "pt"})
    (note,) = run.prepare(job_to_yaml(changed))
    assert "previous one is kept" in note and len(list(run.path.glob("job.*.yaml"))) == 1


def test_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist") as nowhere:
        RunDir(tmp_path / "nowhere").job()
    assert nowhere.value.hint is not None and "output.dir" in nowhere.value.hint
    folder = RunDir(tmp_path / "folder")
    folder.path.mkdir()
    for read in (folder.job, folder.plan, folder.manifest, folder.summary):
        with pytest.raises(UsageError, match=r"is not a run directory: it has no job\.yaml"):
            read()
    assert not folder.is_run_dir() and folder.metrics() == [] and folder.checkpoints() == []
    run = RunDir(tmp_path / "run")
    run.prepare(job_to_yaml(resolved("sft_lora.yaml", "cpu", run.path)))
    with pytest.raises(UsageError, match=r"plan.json is missing \(the plan"):
        run.plan()
    with pytest.raises(UsageError, match=r"manifest.json is missing \(the prepared data"):
        run.manifest()
    run.plan_file.write_text("[1, 2", encoding="utf-8")
    with pytest.raises(UsageError, match=r"plan\.json is not valid JSON"):
        run.plan()


def test_the_job_is_validated_and_of_the_backend_asked_for(tmp_path: Path) -> None:
    run, _ = written_run(tmp_path)
    with pytest.raises(UsageError, match="is a deepspeed job, not the MegatronJob"):
        run.job(MegatronJob)
    run.job_file.write_text(run.job_file.read_text(encoding="utf-8").replace("stage: sft", "stage: sftt"))
    with pytest.raises(JobError, match="unknown stage"):
        run.job()


# ------------------------------------------------------------------------------------- the former readers


class Read(Exception):
    """Raised by the recording RunDir.job once a reader asked for the job."""


def _worker(run: RunDir, tmp_path: Path) -> None:
    from factory_cli.backends.deepspeed.worker import load_run_inputs

    load_run_inputs(run.plan_file)


def _megatron(run: RunDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from factory_cli.backends.common import run as common_run
    from factory_cli.backends.megatron import backend as megatron_backend

    job = resolved("megatron_sft.yaml", "npu", run.path)
    plan = get_backend("megatron").plan(job, "npu")
    monkeypatch.setattr(common_run, "_module_found", lambda dotted, homes: True)
    monkeypatch.setattr(megatron_backend, "stack_problems", lambda *args, **kwargs: [])  # the engine stack is in place
    monkeypatch.setenv("MINDSPEED_LLM_HOME", str(tmp_path))
    get_backend("megatron").run(plan, _Quiet())


def _verl(run: RunDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from factory_cli.backends.common import engine_env
    from factory_cli.backends.common import run as common_run
    from tests.unit.plan_helpers import all_installed

    job = resolved("verl_sft.yaml", "cuda", run.path)
    monkeypatch.setattr(common_run, "_module_found", lambda dotted, homes: True)
    monkeypatch.setattr(engine_env, "probe_engine", all_installed)
    get_backend("verl").run(get_backend("verl").plan(job, "cuda"), _Quiet())


def _eval(run: RunDir, tmp_path: Path) -> None:
    from factory_cli.evaluation.run import EvalRequest, ppl_source

    ppl_source(EvalRequest(model=str(run.path), tasks=["ppl"]), [run.path])


def _quantize(run: RunDir, tmp_path: Path) -> None:
    from factory_cli.export.quantize import calibration_source

    calibration_source(None, run.path)


def _merge(run: RunDir, tmp_path: Path) -> None:
    from factory_cli.export.merge import _run_template

    _run_template(run.path)


class _Quiet:
    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...


READERS: dict[str, Callable[..., None]] = {
    "deepspeed worker": _worker,
    "megatron": _megatron,
    "verl": _verl,
    "eval": _eval,
    "export quantize": _quantize,
    "export merge": _merge,
}


@pytest.mark.parametrize("reader", list(READERS))
def test_every_former_reader_goes_through_run_dir(reader: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, _ = written_run(tmp_path)
    asked: list[tuple[Path, Any]] = []

    def recording_job(self: RunDir, kind: Any = None) -> JobBase:
        asked.append((self.path, kind))
        raise Read

    monkeypatch.setattr(RunDir, "job", recording_job)
    call = READERS[reader]
    with pytest.raises(Read):
        if reader in ("megatron", "verl"):
            call(run, tmp_path, monkeypatch)
        else:
            call(run, tmp_path)
    assert [path for path, _ in asked] == [run.path]


# ------------------------------------------------------------------------------------- one owner (the lock)


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_owner_is_refused_naming_the_first(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with run.lock() as notes:
        assert notes == []
        refusal = rf"in use by another `factory train` \(pid {os.getpid()} on "
        with pytest.raises(UsageError, match=refusal) as refused, RunDir(run.path).lock():
            pass
        assert socket.gethostname() in refused.value.message and "started 20" in refused.value.message
        assert refused.value.hint is not None and "output.dir" in refused.value.hint
    assert not (run.path / LOCK_FILE).exists()
    with pytest.raises(RuntimeError, match="boom"), run.lock():  # released on a failure too
        raise RuntimeError("boom")
    with run.lock() as notes:
        assert notes == []


def test_the_lock_of_a_killed_owner_is_taken_over(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from factory_cli.runs import RunDir\n"
            "with RunDir(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(120)",
            str(run.path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(UsageError, match=rf"pid {holder.pid} on "), run.lock():
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run.lock() as notes:
        (note,) = notes
        assert f"took over the lock of a run that is gone (pid {holder.pid} on " in note


# ------------------------------------------------------------------------------------- metrics.jsonl after a kill


def test_a_torn_last_metrics_line_is_skipped_and_never_appended_to(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    writer = run.metrics_writer()
    writer.write({"step": 1, "loss": 2.0})
    writer.write({"step": 2, "loss": 1.5})
    with open(run.metrics_file, "a", encoding="utf-8") as handle:
        handle.write('{"step": 3, "lo')  # a kill mid-write
    notes: list[str] = []
    assert [r["step"] for r in run.metrics(notes)] == [1, 2]
    (note,) = notes
    assert "skipped 1 unreadable line(s) (3)" in note
    assert [p.name for p in plot_metrics(run.path)] == ["loss.png"]
    writer.write({"step": 3, "loss": 1.25})
    assert [r["step"] for r in run.metrics()] == [1, 2, 3]


def test_resuming_drops_the_records_after_the_checkpoint(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    writer = run.metrics_writer()
    for step in range(1, 6):
        writer.write({"step": step, "loss": 1.0 / step})
    writer.write({"step": 5, "eval_loss": 0.5})
    with open(run.metrics_file, "a", encoding="utf-8") as handle:
        handle.write('{"step": 6')
    notes = run.trim_metrics(after_step=3)
    assert len(notes) == 2 and "dropped 3 record(s) after step 3" in notes[1]
    assert [r["step"] for r in run.metrics()] == [1, 2, 3]
    assert run.metrics_file.read_text(encoding="utf-8").endswith("}\n")
    assert run.trim_metrics(after_step=3) == []  # nothing more to do
    assert run.trim_metrics(after_step=0) and run.metrics() == []  # output.resume: never starts over


# ------------------------------------------------------------------------------------- a finished run


def _checkpoint(run: RunDir, step: int, max_steps: int, weights: bool = True) -> Path:
    folder = run.checkpoints_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    state = {"global_step": step, "max_steps": max_steps, "num_train_epochs": 1}
    (folder / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")
    for name in ("adapter_config.json", "tokenizer.json", "optimizer.pt", "rng_state.pth"):
        (folder / name).write_text(name, encoding="utf-8")
    if weights:
        (folder / "adapter_model.safetensors").write_text("weights", encoding="utf-8")
    mark_complete(folder, step)
    return folder


def _final(run: RunDir, step: int, max_steps: int) -> None:
    run.final_dir.mkdir(parents=True)
    mark_complete(run.final_dir, step, max_steps=max_steps)


def test_a_run_at_its_max_steps_is_finished(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    _checkpoint(run, 2, 3)
    assert run.finished(3, None) is None  # stopped at step 2
    _checkpoint(run, 3, 3)
    _final(run, 3, 3)
    done = run.finished(3, None)
    assert done is not None and done.step == 3 and done.from_checkpoint is None
    assert run.finished(5, None) is None  # max_steps raised: train on
    assert run.finished(2, None) is not None


def test_a_stop_between_the_last_checkpoint_and_final_is_finished_from_the_checkpoint(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    last = _checkpoint(run, 3, 3)
    done = run.finished(3, None)
    assert done is not None and done.from_checkpoint == last
    run.finish_from_checkpoint(last)
    assert sorted(p.name for p in run.final_dir.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        COMPLETE_MARKER,
        "tokenizer.json",
    ]
    assert run.final_seal() is not None and run.final_seal()["step"] == 3  # type: ignore[index]
    assert not (run.path / ".final.partial").exists()
    done = run.finished(3, None)
    assert done is not None and done.from_checkpoint is None


def test_an_older_final_does_not_count(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    _final(run, 3, 3)  # an earlier run's final/
    time.sleep(0.01)
    _checkpoint(run, 2, 3, weights=False)  # a later run, stopped at step 2 without weights in its checkpoint
    assert run.finished(3, None) is None


def test_a_run_counted_in_epochs_is_finished_only_for_the_same_epochs(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    job = resolved("sft_lora.yaml", "cpu", run.path, "train.max_steps=null", "train.epochs=2")
    run.prepare(job_to_yaml(job))
    _final(run, 12, 12)
    assert job.train.max_steps is None and job.train.epochs == 2
    assert run.finished(None, 2) is not None
    assert run.finished(None, 3) is None  # more epochs: train on
    assert run.finished(12, None) is not None and run.finished(13, None) is None


def test_the_summary_is_rebuilt_from_metrics(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    writer = run.metrics_writer()
    for step, loss in ((1, 3.0), (2, 2.0), (3, 1.0)):
        writer.write({"step": step, "loss": loss, "tokens_per_second": 100.0 * step})
    summary = run.recover_summary(3)
    assert run.summary() == summary
    assert summary["global_step"] == 3 and summary["first_loss"] == 3.0 and summary["final_loss"] == 1.0
    assert summary["tokens_per_second"] == 200.0 and "recovered" in summary


# ------------------------------------------------------------------------------------- leftovers, a full disk


def test_leftovers_of_a_stopped_run_are_removed(tmp_path: Path) -> None:
    run, _ = written_run(tmp_path)
    leftovers = [run.path / ".job.yaml.tmp123", run.path / ".plan.json.tmp9", run.manifest_file.parent / ".m.tmp"]
    for path in leftovers:
        path.write_text("", encoding="utf-8")
    (run.path / ".final.partial").mkdir()
    kept = run.path / "notes.tmp"
    kept.write_text("mine", encoding="utf-8")
    assert sorted(run.clean_leftovers()) == sorted([*leftovers, run.path / ".final.partial"])
    assert kept.is_file() and run.job_file.is_file() and run.clean_leftovers() == []


def test_abandoned_cache_staging_folders_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from factory_cli.data import cache

    live = cache.staging_dir(tmp_path, "ab" * 32)
    dead = live.with_name(live.name.replace(f".{os.getpid()}@", f".{_dead_pid()}@"))
    elsewhere = live.with_name(live.name.replace(f"@{socket.gethostname()}.", "@another-host.example."))
    untagged = tmp_path / "data" / f".{'cd' * 8}.x1y2z3.partial"
    for folder in (dead, elsewhere, untagged):
        folder.mkdir()
    os.utime(untagged, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    assert sorted(cache.remove_abandoned(tmp_path)) == sorted([dead, untagged])
    assert live.is_dir() and elsewhere.is_dir()


def test_a_failed_atomic_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(tmp_path / "job.yaml", "backend: deepspeed\n")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, _ = written_run(tmp_path)
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(
        RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4160 vs 4054; No space left on device")
    )
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    torch_save = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert not is_disk_full(torch_save) and not is_disk_full(torch_save, tmp_path)  # room left: a bug, not the disk
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 4096))  # type: ignore[attr-defined]
    assert is_disk_full(torch_save, tmp_path / "run" / "checkpoints" / "checkpoint-6")
    monkeypatch.undo()
    failed = OSError(errno.ENOSPC, "No space left on device", str(run.checkpoints_dir / "checkpoint-6" / "x.pt"))
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = failed
    message, hint = run.disk_full_message(wrapped)
    assert message.startswith(f"the disk is full: writing {failed.filename} failed; ")
    assert " free there; a checkpoint here takes about " in message
    assert message.endswith(f"Last good checkpoint: {run.checkpoints_dir / 'checkpoint-4'}")
    assert "run the same command again" in hint


# ------------------------------------------------------------------------------------- eval / export of a checkpoint


@pytest.mark.parametrize("command", ["eval", "export"])
def test_an_unsealed_checkpoint_is_refused_naming_the_last_sealed(tmp_path: Path, command: str) -> None:
    from factory_cli.inference.load import describe_model_dir
    from tests.unit.test_cli import run_cli

    run, _ = written_run(tmp_path)
    for step in (4, 6):  # both hold a model; 6 was never sealed
        (run.checkpoints_dir / f"checkpoint-{step}" / "config.json").write_text("{}", encoding="utf-8")
    assert describe_model_dir(str(run.checkpoints_dir / "checkpoint-4")).kind == "full"
    args = ["--model", str(run.checkpoints_dir / "checkpoint-6")]
    code, _, err = run_cli([command, *args, *(["-o", str(tmp_path / "out")] if command == "export" else [])])
    assert code == 2, err
    flat = " ".join(err.split())
    assert "checkpoint-6 is an incomplete checkpoint" in flat and "Traceback" not in err
    assert f"use the last sealed checkpoint {run.checkpoints_dir / 'checkpoint-4'}" in flat


def test_a_worker_process_answers_a_users_mistake_with_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker started by the launcher turns a UsageError (here: no run directory) into exit 2 and one message."""
    from factory_cli.backends.deepspeed import worker

    assert worker.main([str(tmp_path / "plan.json")]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err


def test_a_run_started_anew_sets_the_earlier_one_aside(tmp_path: Path) -> None:
    """output.resume: never in a used directory: checkpoints, final/, metrics, summary and plots move to
    previous/<time>/ (renamed, nothing lost); job.yaml stays; an unused directory moves nothing."""
    run = RunDir(tmp_path / "run")
    assert run.set_aside_previous_run() is None
    run.path.mkdir()
    assert run.set_aside_previous_run() is None
    (run.checkpoints_dir / "checkpoint-4").mkdir(parents=True)
    (run.checkpoints_dir / "checkpoint-4" / "model.safetensors").write_bytes(b"weights")
    run.final_dir.mkdir()
    (run.final_dir / "config.json").write_text("{}")
    run.metrics_file.write_text('{"step": 1, "loss": 2.0}\n')
    run.job_file.write_text("backend: deepspeed\n")
    note = run.set_aside_previous_run()
    assert note is not None and "checkpoints/, final/, metrics.jsonl moved to previous/" in note
    (earlier,) = (run.path / "previous").iterdir()
    assert (earlier / "checkpoints" / "checkpoint-4" / "model.safetensors").read_bytes() == b"weights"
    assert (earlier / "metrics.jsonl").is_file() and (earlier / "final").is_dir()
    assert not run.checkpoints_dir.exists() and not run.final_dir.exists() and run.job_file.is_file()
    assert run.last_complete_checkpoint() is None
