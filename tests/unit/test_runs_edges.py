"""The run directory at its edges (factory_cli/runs.py): the exact messages and hints of a missing or broken file, the
lock file's owner record, a full disk's message, the sizes it states, metrics.jsonl's torn and unreadable lines, the
seals and trainer states a finished run is judged by, and the plots."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from factory_cli.config.dump import job_to_yaml
from factory_cli.config.errors import JobError, UsageError
from factory_cli.config.schema import DeepSpeedJob
from factory_cli.runs import (
    COMPLETE_MARKER,
    LOCK_FILE,
    MetricsWriter,
    RunDir,
    RunLock,
    _size,
    checkpoint_dirs,
    checkpoint_step,
    first_last,
    is_complete,
    is_disk_full,
    iter_reward_keys,
    last_complete_checkpoint,
    mark_complete,
    plot_metrics,
    prepare_run_dir,
    resume_checkpoint,
    series,
    write_json_atomic,
    write_text_atomic,
)
from tests.unit.test_run_dir import _checkpoint, _final, resolved, written_run

AGAIN = "run the job again with `factory train`"


def _seal(folder: Path, step: int, when: float, **facts: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / COMPLETE_MARKER).write_text(json.dumps({"step": step, "time": when, **facts}), encoding="utf-8")


# ----------------------------------------------------------------------------------- reading: messages and hints


def test_a_missing_file_names_itself_what_it_holds_and_the_fix(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with pytest.raises(UsageError) as nowhere:
        run.summary()
    assert nowhere.value.message == f"run directory {run.path} does not exist"
    assert nowhere.value.hint == (
        "give the output.dir of a `factory train` run (it holds job.yaml, plan.json, metrics.jsonl, final/)"
    )
    run.path.mkdir()
    with pytest.raises(UsageError) as bare:
        run.summary()
    assert bare.value.message == f"{run.path} is not a run directory: it has no job.yaml"
    assert bare.value.hint == nowhere.value.hint
    run.job_file.write_text("backend: deepspeed\n", encoding="utf-8")
    with pytest.raises(UsageError) as missing:
        run.summary()
    assert missing.value.message == f"{run.summary_file} is missing (the run's summary, written when training ends)"
    assert missing.value.hint == AGAIN


def test_an_unreadable_or_broken_json_file_says_so(tmp_path: Path) -> None:
    run, _ = written_run(tmp_path)
    run.summary_file.unlink()
    run.summary_file.mkdir()  # a folder where the file should be: reading it fails with an OSError
    with pytest.raises(UsageError) as unreadable:
        run.summary()
    assert unreadable.value.message.startswith(f"cannot read {run.summary_file}: ")
    assert "Is a directory" in unreadable.value.message and unreadable.value.hint == "check its permissions"
    run.plan_file.write_text("[1, 2", encoding="utf-8")
    with pytest.raises(UsageError) as broken:
        run.plan()
    assert broken.value.message.startswith(f"{run.plan_file} is not valid JSON (") and broken.value.hint == AGAIN
    run.plan_file.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(UsageError) as not_object:
        run.plan()
    assert not_object.value.message == f"{run.plan_file} is not a JSON object" and not_object.value.hint == AGAIN


def test_the_job_of_another_backend_and_a_broken_job_yaml(tmp_path: Path) -> None:
    from factory_cli.config.schema import VerlJob

    run, _ = written_run(tmp_path)
    with pytest.raises(UsageError) as other:
        run.job(VerlJob)
    assert other.value.hint == "run it with `factory train` on the job's own backend"
    run.job_file.write_text(run.job_file.read_text(encoding="utf-8").replace("stage: sft", "stage: sftt"))
    with pytest.raises(JobError) as broken:
        run.job()
    assert str(run.job_file) in str(broken.value)  # the error names the file it read


def test_the_job_is_read_without_reaching_for_its_model_or_data(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    job = resolved("sft_lora.yaml", "cpu", run.path)
    text = job_to_yaml(job).replace(job.model.name_or_path, str(tmp_path / "no-such-model"))
    run.prepare(text)
    assert run.job(DeepSpeedJob).model.name_or_path == str(tmp_path / "no-such-model")


def test_base_dirs_without_a_plan_are_the_run_directory(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.prepare("backend: deepspeed\n")
    assert run.base_dirs() == (run.path,)
    run.write_plan({"base_dirs": ["/a", 3, "/b"]})
    assert run.base_dirs() == (Path("/a"), Path("/b"), run.path)


def test_checkpoints_are_folders_named_by_their_step(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    (run.checkpoints_dir / "checkpoint-10").mkdir(parents=True)
    (run.checkpoints_dir / "checkpoint-9").mkdir()
    (run.checkpoints_dir / "global_step9").mkdir()
    (run.checkpoints_dir / "checkpoint-11").write_text("a file", encoding="utf-8")
    expected = [(9, run.checkpoints_dir / "checkpoint-9"), (10, run.checkpoints_dir / "checkpoint-10")]
    assert run.checkpoints() == expected and checkpoint_dirs(run.path) == expected


def test_a_checkpoint_is_complete_with_its_marker_and_trainer_state(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    mark_complete(folder, 3)
    assert not is_complete(folder)  # the marker alone
    (folder / "trainer_state.json").write_text("{}", encoding="utf-8")
    assert is_complete(folder)
    (folder / COMPLETE_MARKER).unlink()
    assert not is_complete(folder)  # the state alone


def test_the_bare_path_helpers(tmp_path: Path) -> None:
    run_dir = tmp_path / "a" / "run"
    assert prepare_run_dir(run_dir, "backend: deepspeed\n") == []
    assert (run_dir / "job.yaml").read_text(encoding="utf-8") == "backend: deepspeed\n"
    assert last_complete_checkpoint(run_dir) is None
    sealed = _checkpoint(RunDir(run_dir), 4, 8)
    assert last_complete_checkpoint(run_dir) == sealed
    assert resume_checkpoint(run_dir, "auto") == sealed and resume_checkpoint(run_dir, "never") is None
    assert resume_checkpoint(run_dir, "/elsewhere/checkpoint-2") == Path("/elsewhere/checkpoint-2")
    assert RunDir(run_dir).resume_checkpoint("/elsewhere/checkpoint-2") == Path("/elsewhere/checkpoint-2")


def test_checkpoint_step_from_the_state_else_the_name(tmp_path: Path) -> None:
    assert checkpoint_step(None) == 0
    named = tmp_path / "checkpoint-12"
    named.mkdir()
    assert checkpoint_step(named) == 12
    (named / "trainer_state.json").write_text(json.dumps({"global_step": 7}), encoding="utf-8")
    assert checkpoint_step(named) == 7
    (named / "trainer_state.json").write_text(json.dumps({"global_step": "7"}), encoding="utf-8")
    assert checkpoint_step(named) == 12
    other = tmp_path / "final"
    other.mkdir()
    assert checkpoint_step(other) == 0


def test_trainer_state_and_final_seal_are_empty_when_unreadable(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    folder = run.checkpoints_dir / "checkpoint-1"
    folder.mkdir(parents=True)
    assert run.trainer_state(folder) == {}  # missing
    for text in ("{not json", "[1, 2]"):
        (folder / "trainer_state.json").write_text(text, encoding="utf-8")
        assert run.trainer_state(folder) == {}
    assert run.final_seal() is None  # no final/
    run.final_dir.mkdir()
    for text in ("{not json", "[3]", '{"step": "3"}', '{"time": 1.0}'):
        (run.final_dir / COMPLETE_MARKER).write_text(text, encoding="utf-8")
        assert run.final_seal() is None, text
    (run.final_dir / COMPLETE_MARKER).write_text('{"step": 3, "time": 1.0}', encoding="utf-8")
    assert run.final_seal() == {"step": 3, "time": 1.0}


# ----------------------------------------------------------------------------------------- a finished run


def test_a_final_without_a_time_counts_only_without_a_newer_checkpoint(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.final_dir.mkdir(parents=True)
    (run.final_dir / COMPLETE_MARKER).write_text(json.dumps({"step": 3, "max_steps": 3}), encoding="utf-8")
    done = run.finished(3, None)
    assert done is not None and done.run == run and done.step == 3 and done.from_checkpoint is None
    _checkpoint(run, 2, 3, weights=False)  # sealed now: newer than a final/ of unknown time
    assert run.finished(3, None) is None


def test_a_final_sealed_at_the_same_time_as_the_last_checkpoint_counts(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    checkpoint = _checkpoint(run, 2, 3)
    _seal(checkpoint, 2, 100.0)
    _seal(run.final_dir, 3, 100.0, max_steps=3)
    done = run.finished(3, None)
    assert done is not None and done.step == 3 and done.from_checkpoint is None


def test_a_checkpoint_whose_seal_has_no_readable_time_leaves_final_to_decide(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    checkpoint = _checkpoint(run, 2, 3)
    _final(run, 3, 3)
    for seal in ("{broken", "[1]", '{"step": 2}', '{"step": 2, "time": "soon"}'):
        (checkpoint / COMPLETE_MARKER).write_text(seal, encoding="utf-8")
        done = run.finished(3, None)
        assert done is not None and done.step == 3 and done.from_checkpoint is None, seal


def test_a_finished_checkpoint_names_its_run_and_step(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    last = _checkpoint(run, 3, 3)
    done = run.finished(3, None)
    assert done is not None and (done.run, done.step, done.from_checkpoint) == (run, 3, last)


def test_a_checkpoint_without_a_step_is_not_finished(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    last = _checkpoint(run, 3, 3)
    (last / "trainer_state.json").write_text("{}", encoding="utf-8")
    assert run.finished(3, None) is None


def test_a_run_counted_in_epochs_is_finished_from_its_checkpoint_too(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    job = resolved("sft_lora.yaml", "cpu", run.path, "train.max_steps=null", "train.epochs=2")
    run.prepare(job_to_yaml(job))
    last = _checkpoint(run, 12, 12)
    done = run.finished(None, 2)
    assert done is not None and done.from_checkpoint == last
    assert run.finished(None, 3) is None
    _checkpoint(run, 14, 16)  # the run's own max_steps not reached
    assert run.finished(None, 2) is None


def test_epochs_cannot_be_compared_without_a_readable_job(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    _final(run, 12, 12)
    assert run.finished(None, 2) is None  # no job.yaml
    run.job_file.write_text("backend: deepspeed\nstage: sftt\n", encoding="utf-8")
    assert run.finished(None, 2) is None  # a job.yaml that does not validate
    shutil.rmtree(run.final_dir)
    run.final_dir.mkdir()
    mark_complete(run.final_dir, 12)  # no max_steps in the seal: a run of unknown length
    assert run.finished(None, 2) is None


def test_final_from_a_checkpoint_replaces_staging_and_an_older_final(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    last = _checkpoint(run, 3, 5)
    (run.path / ".final.partial").mkdir()
    (run.path / ".final.partial" / "half.bin").write_text("x", encoding="utf-8")
    run.final_dir.mkdir()
    (run.final_dir / "old.bin").write_text("x", encoding="utf-8")
    run.finish_from_checkpoint(last)
    assert not (run.final_dir / "old.bin").exists() and not (run.path / ".final.partial").exists()
    seal = run.final_seal()
    assert seal is not None and seal["step"] == 3 and seal["max_steps"] == 5


def test_the_rebuilt_summary_in_full(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    writer = run.metrics_writer()
    for step, speed in ((1, 40.0), (2, 10.0), (3, 30.0), (4, 20.0)):
        writer.write({"step": step, "loss": 5.0 - step, "tokens_per_second": speed})
    summary = run.recover_summary(4)
    assert summary == {
        "global_step": 4,
        "first_loss": 4.0,
        "final_loss": 1.0,
        "tokens_per_second": 30.0,  # the median: the upper one of an even count
        "final_dir": str(run.final_dir),
        "recovered": "rebuilt from final/ and metrics.jsonl: the run stopped before writing it",
    }
    run.metrics_file.write_text('{"step": 1, "grad_norm": 1.0}\n', encoding="utf-8")
    summary = run.recover_summary(1)
    assert (summary["first_loss"], summary["final_loss"], summary["tokens_per_second"]) == (None, None, None)


# -------------------------------------------------------------------------------------------- writing


def test_prepare_makes_the_parents_and_names_the_kept_job_by_time(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "a" / "b" / "run")
    assert run.prepare("one\n") == []
    assert run.checkpoints_dir.is_dir()
    (note,) = run.prepare("two\n")
    (kept,) = run.path.glob("job.*.yaml")
    assert re.fullmatch(r"job\.\d{8}-\d{6}\.yaml", kept.name), kept.name
    assert kept.read_text(encoding="utf-8") == "one\n" and kept.name in note
    assert run.prepare("two\n") == []  # unchanged: nothing kept


def test_runs_set_aside_at_the_same_second_do_not_collide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir(tmp_path / "run")
    monkeypatch.setattr(time, "strftime", lambda fmt, *args: "20260101-120000")
    for _ in range(3):
        run.metrics_file.parent.mkdir(parents=True, exist_ok=True)
        run.metrics_file.write_text('{"step": 1}\n', encoding="utf-8")
        note = run.set_aside_previous_run()
        assert note is not None
    names = sorted(p.name for p in (run.path / "previous").iterdir())
    assert names == ["20260101-120000", "20260101-120000-1", "20260101-120000-1-1"]
    assert note == "output.resume: never: the earlier run's metrics.jsonl moved to previous/20260101-120000-1-1/"


def test_set_aside_folders_are_named_by_the_time(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.summary_file.write_text("{}", encoding="utf-8")
    assert run.set_aside_previous_run() is not None
    (target,) = (run.path / "previous").iterdir()
    assert re.fullmatch(r"\d{8}-\d{6}", target.name) and (target / "summary.json").is_file()


def test_atomic_writes_make_parents_and_write_utf8_json(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c.json"
    write_json_atomic(path, {"path": Path("/x"), "name": "Straße"})
    assert path.read_bytes() == (json.dumps({"path": "/x", "name": "Straße"}, indent=2) + "\n").encode("utf-8")
    write_text_atomic(tmp_path / "d" / "e.txt", "é\n")
    assert (tmp_path / "d" / "e.txt").read_bytes() == "é\n".encode()


def test_a_write_that_cannot_open_its_temp_file_fails_with_that_error(tmp_path: Path) -> None:
    target = tmp_path / "job.yaml"
    (tmp_path / f".job.yaml.tmp{os.getpid()}").mkdir()  # the temp file's name is taken by a folder
    with pytest.raises(IsADirectoryError):
        write_text_atomic(target, "x")
    assert not target.exists()


def test_the_metrics_writer_makes_its_folder(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path / "a" / "run")
    writer.write({"step": 1, "loss": float("inf")})
    assert (tmp_path / "a" / "run" / "metrics.jsonl").read_text(encoding="utf-8") == '{"step": 1, "loss": "inf"}\n'


# ------------------------------------------------------------------------------------------- metrics.jsonl


def test_unreadable_lines_anywhere_are_skipped_and_numbered(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    lines = ['{"step": 1, "loss": "nan"}', "[1]", '{"step": 2, "loss": "inf", "kl": "-inf", "note": "ok"}', "{torn"]
    lines += ["", "17", '"text"', "null", '{"step": 3', '{"step": 4, "loss": 0.5}']
    run.metrics_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    notes: list[str] = []
    records = run.metrics(notes)
    assert [r["step"] for r in records] == [1, 2, 4]
    assert records[1]["loss"] == float("inf") and records[1]["kl"] == float("-inf") and records[1]["note"] == "ok"
    assert notes == [
        f"{run.metrics_file}: skipped 6 unreadable line(s) (2, 4, 6, 7, 8 ...), e.g. cut short when a run was killed"
    ]


def test_five_unreadable_lines_are_all_listed(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.metrics_file.write_text("x\n" * 5 + '{"step": 1}\n', encoding="utf-8")
    notes: list[str] = []
    assert run.metrics(notes) == [{"step": 1}]
    assert notes == [
        f"{run.metrics_file}: skipped 5 unreadable line(s) (1, 2, 3, 4, 5), e.g. cut short when a run was killed"
    ]


def test_a_line_of_invalid_utf8_is_skipped_not_fatal(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.metrics_file.write_bytes(b'{"step": 1}\n{"step": \xff\xfe}\n{"step": 2}\n')
    notes: list[str] = []
    assert [r["step"] for r in run.metrics(notes)] == [1, 2] and "skipped 1 unreadable line(s) (2)" in notes[0]


def test_no_metrics_file_is_no_records_and_no_note(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    notes: list[str] = []
    assert run.metrics(notes) == [] and notes == []
    assert run.trim_metrics(after_step=3) == [] and not run.metrics_file.exists()


def test_trimming_with_nothing_to_drop_leaves_the_file_as_written(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    text = '{"step": 1,   "loss": 2.0}\n{"step": 2, "loss": 1.0}\n'
    run.metrics_file.write_text(text, encoding="utf-8")
    assert run.trim_metrics(after_step=5) == []
    assert run.metrics_file.read_text(encoding="utf-8") == text


def test_trimming_says_what_it_dropped_and_what_it_skipped(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.metrics_file.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n', encoding="utf-8")
    assert run.trim_metrics(after_step=1) == [
        "metrics.jsonl: dropped 2 record(s) after step 1, where this run continues"
    ]
    run.metrics_file.write_text('{"step": 1}\n{"st', encoding="utf-8")
    assert run.trim_metrics(after_step=1) == [
        f"{run.metrics_file}: skipped 1 unreadable line(s) (2), e.g. cut short when a run was killed"
    ]
    run.metrics_file.write_text('{"step": 1}', encoding="utf-8")  # whole, without its newline
    assert run.trim_metrics(after_step=1) == []
    assert run.metrics_file.read_text(encoding="utf-8") == '{"step": 1}\n'


def test_series_first_last_and_reward_keys() -> None:
    records: list[dict[str, Any]] = [
        {"step": 1, "loss": 3.0, "rewards/acc/mean": 0.1, "rewards/acc/std": 0.0},
        {"loss": 9.0},  # no step: not a point of the curve
        {"step": 2, "loss": "nan?", "rewards/fmt/mean": 1.0, "reward": 1.0},
        {"step": 3, "loss": 1, "rewards/acc/mean": 0.2},
    ]
    assert series(records, "loss") == ([1.0, 3.0], [3.0, 1.0])
    assert first_last(records, "loss") == (3.0, 1.0) and first_last(records, "kl") == (None, None)
    assert list(iter_reward_keys(records)) == ["rewards/acc/mean", "rewards/fmt/mean"]


# ------------------------------------------------------------------------------------------------ the lock


def test_a_held_lock_names_its_owner_as_recorded(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    lock_path = run.path / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by another open file, as by another process
    try:
        for content, described in (
            (b'{"pid": 5}', "pid 5 on ?, started ?"),
            (b'{"host": "h", "started": "s"}', "pid ? on h, started s"),
            (b"", "owner unknown"),
            (b"[1]", "owner unknown"),
            (b"\xff\xfe{", "owner unknown"),
            (b'{"pid": 6, "x": "' + b"a" * 4078 + b'"}', "owner unknown"),  # 4097 bytes: one more than is read
            (b'{"pid": 5, "host": "h\xff"}', "pid 5 on h\ufffd, started ?"),  # a broken byte is replaced
        ):
            os.ftruncate(fd, 0)
            os.pwrite(fd, content, 0)
            with pytest.raises(UsageError) as refused, run.lock():
                pass
            assert refused.value.message == f"{run.path} is in use by another `factory train` ({described})"
            assert refused.value.hint == "wait for it to finish or stop it, or give this run another output.dir"
    finally:
        os.close(fd)


def test_the_lock_file_records_its_owner_readably(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with run.lock():
        lock_path = run.path / LOCK_FILE
        assert stat.S_IMODE(lock_path.stat().st_mode) == 0o644 & ~_umask()
        owner = json.loads(lock_path.read_text(encoding="utf-8"))
        assert owner["pid"] == os.getpid()
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} .+", owner["started"]), owner["started"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_stale_lock_record_of_a_gone_run_is_taken_over_with_a_note(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    (run.path / LOCK_FILE).write_text('{"pid": 5, "host": "h", "started": "s"}\n' + " " * 100, encoding="utf-8")
    with run.lock() as notes:
        assert notes == ["took over the lock of a run that is gone (pid 5 on h, started s); it was stopped uncleanly"]
        owner = json.loads((run.path / LOCK_FILE).read_text(encoding="utf-8"))
        assert owner["pid"] == os.getpid()
    (run.path / LOCK_FILE).write_text("not json", encoding="utf-8")
    with run.lock() as notes:
        assert notes == []  # nothing readable to name


def test_releasing_is_safe_twice_unacquired_and_after_the_file_went(tmp_path: Path) -> None:
    lock = RunLock(tmp_path / LOCK_FILE)
    lock.release()  # never acquired
    assert lock.acquire() == []
    (tmp_path / LOCK_FILE).unlink()
    lock.release()
    lock.release()
    assert lock.fd is None


# ---------------------------------------------------------------------------------------------- a full disk


@pytest.mark.parametrize(
    ("count", "written"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KB"),
        (1536, "1.5 KB"),
        (3 * 1024**2 // 2, "1.5 MB"),
        (1024**3, "1.0 GB"),
        (5 * 1024**3, "5.0 GB"),
        (3 * 1024**4, "3.0 TB"),
    ],
)
def test_sizes_are_written_in_binary_units(count: int, written: str) -> None:
    assert _size(count) == written


def _chain(depth: int, last: BaseException) -> BaseException:
    """`last` behind `depth` wrapping exceptions, each the cause of the one before."""
    exc = last
    for i in range(depth):
        outer = RuntimeError(f"wrapper {i}")
        outer.__cause__ = exc
        exc = outer
    return exc


def test_a_full_disk_is_recognised_through_causes_contexts_and_quotas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "full"))  # by its errno, whatever it says
    assert is_disk_full(OSError(errno.EDQUOT, "over"))
    assert is_disk_full(RuntimeError("write failed: Disk quota exceeded"))
    context = RuntimeError("saving failed")
    context.__context__ = RuntimeError("No space left on device")
    assert is_disk_full(context)
    assert is_disk_full(_chain(9, OSError(errno.ENOSPC, "x")))  # the 10th exception is still looked at
    assert not is_disk_full(_chain(10, OSError(errno.ENOSPC, "x")))  # the 11th is not
    assert is_disk_full(_chain(9, RuntimeError("No space left on device")))
    assert not is_disk_full(_chain(10, RuntimeError("No space left on device")))
    torch_save = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 16 * 1024 * 1024))  # type: ignore[attr-defined]
    assert not is_disk_full(torch_save, tmp_path)  # exactly 16 MiB left: not nearly full
    assert not is_disk_full(RuntimeError("unrelated"), tmp_path)  # not torch's writer: the disk is not asked
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1024))  # type: ignore[attr-defined]
    assert is_disk_full(torch_save, tmp_path) and not is_disk_full(RuntimeError("unrelated"), tmp_path)

    def unknown(path: Path) -> Any:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(shutil, "disk_usage", unknown)
    assert not is_disk_full(torch_save, tmp_path)
    asked: list[Path] = []

    def usage(path: Path) -> Any:
        asked.append(Path(path))
        return shutil._ntuple_diskusage(10**9, 10**9, 1024)  # type: ignore[attr-defined]

    monkeypatch.setattr(shutil, "disk_usage", usage)
    assert is_disk_full(torch_save, tmp_path / "run" / "checkpoints" / "checkpoint-6")
    assert asked == [tmp_path]  # the nearest folder that exists, not one above it


def test_the_full_disk_message_names_what_was_being_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1536))  # type: ignore[attr-defined]
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    hint = "free some space (or point output.dir elsewhere), then run the same command again to resume"
    no_file = OSError(errno.ENOSPC, "No space left on device")
    assert run.disk_full_message(no_file) == (
        f"the disk is full: writing {run.path} failed; 1.5 KB free there. Last good checkpoint: none yet",
        hint,
    )
    sealed = _checkpoint(run, 2, 4)
    (sealed / "model.bin").write_bytes(b"x" * 2048)
    size = _size(sum(p.stat().st_size for p in sealed.rglob("*") if p.is_file()))
    message, _ = run.disk_full_message(RuntimeError("torch could not write"))
    assert message == (
        f"the disk is full: writing {run.path} failed; 1.5 KB free there; a checkpoint here takes about {size}. "
        f"Last good checkpoint: {sealed}"
    )
    assert size.endswith(" KB") and float(size.split()[0]) > 2.0
    half = run.checkpoints_dir / "checkpoint-4"
    half.mkdir()
    assert run.disk_full_message(no_file)[0].startswith(f"the disk is full: writing {half} failed; ")
    (run.path / ".final.partial").mkdir()
    assert run.disk_full_message(no_file)[0].startswith(f"the disk is full: writing {run.path / '.final.partial'} ")
    shutil.rmtree(run.path / ".final.partial")
    shutil.rmtree(half)
    _checkpoint(run, 4, 4)  # the newest is sealed: nothing half-written but the run directory itself
    assert run.disk_full_message(no_file)[0].startswith(f"the disk is full: writing {run.path} failed; ")

    def unknown(path: Path) -> Any:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(shutil, "disk_usage", unknown)
    message, _ = run.disk_full_message(no_file)
    assert "free there" not in message and message.startswith(f"the disk is full: writing {run.path} failed; a ")


# ------------------------------------------------------------------------------------------------- plots


def test_plots_have_their_title_axis_legend_and_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    seen: dict[str, dict[str, Any]] = {}
    save = Figure.savefig

    def record(fig: Figure, path: Any, *args: Any, **kwargs: Any) -> None:
        ax = fig.axes[0]
        legend = ax.get_legend()
        seen[Path(path).stem] = {
            "size": tuple(fig.get_size_inches()),
            "dpi": fig.dpi,
            "title": ax.get_title(),
            "xlabel": ax.get_xlabel(),
            "legend": [t.get_text() for t in legend.get_texts()] if legend else None,
            "lines": [
                (ln.get_label(), list(ln.get_xdata()), list(ln.get_ydata()), ln.get_marker(), ln.get_markersize())
                for ln in ax.get_lines()
            ],
            "grid": ax.xaxis.get_gridlines()[0].get_visible() and ax.xaxis.get_gridlines()[0].get_alpha(),
        }
        save(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    run = RunDir(tmp_path / "run")
    writer = run.metrics_writer()
    for step in range(1, 4):
        writer.write({"step": step, "loss": 4.0 - step, "grad_norm": 0.5 * step})
    writer.write({"step": 3, "eval_loss": 2.5})
    for step in range(1, 31):
        writer.write({"step": step, "tokens_per_second": 100.0 + step})
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()  # figures other tests of this process left open
    written = plot_metrics(run.path)
    assert [p.name for p in written] == ["loss.png", "grad_norm.png", "tokens_per_second.png"]
    assert all(p.is_file() for p in written)
    loss = seen["loss"]
    assert loss["size"] == (6.0, 3.5) and loss["dpi"] == 100
    assert loss["title"] == "loss" and loss["xlabel"] == "step" and loss["legend"] == ["loss", "eval_loss"]
    assert loss["lines"] == [
        ("loss", [1.0, 2.0, 3.0], [3.0, 2.0, 1.0], "o", 3.0),
        ("eval_loss", [3.0], [2.5], "o", 3.0),
    ]
    assert loss["grid"] == 0.3
    assert seen["grad_norm"]["title"] == "grad norm" and seen["grad_norm"]["legend"] is None
    (speed,) = seen["tokens_per_second"]["lines"]
    assert seen["tokens_per_second"]["title"] == "tokens per second" and speed[3] == "None"  # 30 points: no markers
    assert plot_metrics(run.path) == written  # again, into the existing plots/
    assert plt.get_fignums() == open_before  # every figure it made is closed


def test_a_plot_that_cannot_be_written_leaves_no_figure_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    def full_disk(self: Figure, *args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    run = RunDir(tmp_path / "run")
    run.metrics_writer().write({"step": 1, "loss": 1.0})
    open_before = plt.get_fignums()
    with pytest.raises(OSError):
        plot_metrics(run.path)
    assert plt.get_fignums() == open_before
