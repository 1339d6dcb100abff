"""The run directory (output.dir): one `RunDir` reads and writes what a run leaves there.

Layout: job.yaml (the resolved job, reproducible as is), plan.json, env.json, data/manifest.json (the deepspeed
backend's prepared data), metrics.jsonl, checkpoints/checkpoint-<step>/ (sealed by factory_complete.json), final/
(sealed the same way, with the step it was trained to), summary.json, plots/ and .factory.lock (held by the one
`factory train` that owns the directory). The module-level helpers below are the same operations for callers holding
a bare path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from factory_cli.config.errors import JobError, UsageError

if TYPE_CHECKING:
    from factory_cli.config.schema import JobBase

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
COMPLETE_MARKER = "factory_complete.json"
METRICS_FILE = "metrics.jsonl"
JOB_FILE = "job.yaml"
PLAN_FILE = "plan.json"
MANIFEST_FILE = "data/manifest.json"
SUMMARY_FILE = "summary.json"
FINAL_DIR = "final"
FINAL_STAGING = ".final.partial"
PREVIOUS_DIR = "previous"  # earlier runs set aside by `output.resume: never`
PLOTS_DIR = "plots"
LOCK_FILE = ".factory.lock"
# What write_text_atomic, backends/common/run.py write_jsonl and the verl backend leave when stopped mid-write.
TEMP_FILE_PATTERN = re.compile(r"^\..+\.tmp\d*$")
# Files of a checkpoint that only resuming needs; the rest is the model (or adapter) and tokenizer final/ holds.
RESUME_ONLY_FILES = re.compile(
    r"^(optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth|trainer_state\.json|training_args\.bin|"
    + re.escape(COMPLETE_MARKER)
    + r"|global_step.*|latest|zero_to_fp32\.py)$"
)
WEIGHT_FILES = re.compile(r"^(model|adapter_model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)$|\.index\.json$")
RESUME_HINT = "to train it anew, set output.resume: never (the finished run moves to previous/), or a new output.dir"
RUN_DIR_HINT = "give the output.dir of a `factory train` run (it holds job.yaml, plan.json, metrics.jsonl, final/)"

J = TypeVar("J", bound="JobBase")


@dataclass(frozen=True)
class RunDir:
    """One run directory. Files a reader needs (job, plan, manifest, summary) raise a UsageError naming what is missing
    (and saying so when the folder is no run directory at all); collections (metrics, checkpoints) are empty when
    nothing was written yet."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # ------------------------------------------------------------------------------------------ layout

    @property
    def job_file(self) -> Path:
        return self.path / JOB_FILE

    @property
    def plan_file(self) -> Path:
        return self.path / PLAN_FILE

    @property
    def manifest_file(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def summary_file(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def final_dir(self) -> Path:
        """Where the trained model (or adapter) and its tokenizer are saved."""
        return self.path / FINAL_DIR

    def is_run_dir(self) -> bool:
        """Whether `factory train` prepared this folder (its job.yaml is written first)."""
        return self.job_file.is_file()

    # ------------------------------------------------------------------------------------------ reading

    @overload
    def job(self) -> JobBase: ...

    @overload
    def job(self, kind: type[J]) -> J: ...

    def job(self, kind: type[Any] | None = None) -> Any:
        """The resolved job of job.yaml, validated with checks=False (the model and data need not be reachable);
        `kind` (DeepSpeedJob, MegatronJob, VerlJob) is the backend the caller runs for."""
        from factory_cli.config.load import parse_yaml_text
        from factory_cli.config.validate import validate_loaded

        text = self._read(self.job_file, "the resolved job, written by `factory train` before anything runs")
        job = validate_loaded(parse_yaml_text(text, str(self.job_file)), checks=False).job
        if kind is not None and not isinstance(job, kind):
            raise UsageError(
                f"{self.job_file} is a {job.backend} job, not the {kind.__name__} this step runs",
                "run it with `factory train` on the job's own backend",
            )
        return job

    def plan(self) -> dict[str, Any]:
        """plan.json: what the backend was asked to do (engine config, steps, base_dirs)."""
        return self._read_json(self.plan_file, "the plan, written by `factory train` before the backend starts")

    def base_dirs(self) -> tuple[Path, ...]:
        """Where the run resolved relative paths (the job file's folder, from plan.json), then the run directory."""
        plan = self.plan() if self.plan_file.is_file() else {}
        listed = plan.get("base_dirs") or []
        return (*(Path(p) for p in listed if isinstance(p, str)), self.path)

    def manifest(self) -> dict[str, Any]:
        """data/manifest.json: the prepared data (train / eval paths, model path, chat template, sample prompt)."""
        return self._read_json(self.manifest_file, "the prepared data, written by the data preparation step")

    def summary(self) -> dict[str, Any]:
        """summary.json: how the training ended (written by the last step of a run)."""
        return self._read_json(self.summary_file, "the run's summary, written when training ends")

    def metrics(self, notes: list[str] | None = None) -> list[dict[str, Any]]:
        """Every record of metrics.jsonl ("nan" / "inf" strings back to floats); none before the first log. A line a
        kill cut short (or any other unreadable line) is skipped, and said so in `notes` when given."""
        records, skipped = _parse_metrics(self._metrics_text())
        if skipped and notes is not None:
            notes.append(_skipped_note(self.metrics_file, skipped))
        return records

    def _metrics_text(self) -> str:
        if not self.metrics_file.is_file():
            return ""
        return self.metrics_file.read_text(encoding="utf-8", errors="replace")

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every checkpoint folder, oldest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for child in self.checkpoints_dir.iterdir():
            match = CHECKPOINT_PATTERN.match(child.name)
            if match and child.is_dir():
                found.append((int(match.group(1)), child))
        return sorted(found)

    def last_complete_checkpoint(self) -> Path | None:
        """The newest sealed checkpoint, skipping ones an interruption left half-written."""
        for _, path in reversed(self.checkpoints()):
            if is_complete(path):
                return path
        return None

    def trainer_state(self, checkpoint: Path) -> dict[str, Any]:
        """A checkpoint's trainer_state.json (global_step, max_steps, num_train_epochs, ...); {} when unreadable."""
        with contextlib.suppress(OSError, ValueError):
            state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
            if isinstance(state, dict):
                return state
        return {}

    def final_seal(self) -> dict[str, Any] | None:
        """final/'s marker ({"step", "time"}), None when final/ is missing or was written before it had one."""
        with contextlib.suppress(OSError, ValueError):
            seal = json.loads((self.final_dir / COMPLETE_MARKER).read_text(encoding="utf-8"))
            if isinstance(seal, dict) and isinstance(seal.get("step"), int):
                return seal
        return None

    def resume_checkpoint(self, resume: str) -> Path | None:
        """What `output.resume` means here: auto -> last complete checkpoint, never -> None, else that path."""
        if resume == "never":
            return None
        if resume == "auto":
            return self.last_complete_checkpoint()
        return Path(resume)

    def _read(self, path: Path, what: str) -> str:
        """The text of a file the run must have, else a UsageError saying what is missing and why."""
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if not self.path.is_dir():
                raise UsageError(f"run directory {self.path} does not exist", RUN_DIR_HINT) from None
            if not self.is_run_dir():
                raise UsageError(f"{self.path} is not a run directory: it has no {JOB_FILE}", RUN_DIR_HINT) from None
            raise UsageError(f"{path} is missing ({what})", "run the job again with `factory train`") from None
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc}", "check its permissions") from None

    def _read_json(self, path: Path, what: str) -> dict[str, Any]:
        text = self._read(path, what)
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{path} is not valid JSON ({exc})", "run the job again with `factory train`") from None
        if not isinstance(data, dict):
            raise UsageError(f"{path} is not a JSON object", "run the job again with `factory train`")
        return data

    # ------------------------------------------------------------------------------------------ a finished run

    def finished(self, max_steps: int | None, epochs: float | None) -> Finished | None:
        """Whether training this directory again would only go past its end: the newest of final/ and the last sealed
        checkpoint reached the job's max_steps (or, for a job counted in epochs, the run's own end with the same
        epochs as the job.yaml here). None when it did not, or when there is nothing to continue."""
        checkpoint = self.last_complete_checkpoint()
        state = self.trainer_state(checkpoint) if checkpoint else {}
        seal = self.final_seal()
        checkpoint_time = _seal_time(checkpoint) if checkpoint else None
        if seal is not None and (checkpoint_time is None or float(seal.get("time", 0)) >= checkpoint_time):
            if self._reached(int(seal["step"]), seal.get("max_steps"), max_steps, epochs):
                return Finished(self, int(seal["step"]), None)
            return None
        if checkpoint is None or not isinstance(state.get("global_step"), int):
            return None
        if not any(WEIGHT_FILES.search(p.name) for p in checkpoint.iterdir()):
            return None  # a ZeRO-3 checkpoint without gathered weights: only training can write final/
        if self._reached(state["global_step"], state.get("max_steps"), max_steps, epochs):
            return Finished(self, state["global_step"], checkpoint)
        return None

    def _reached(self, step: int, run_max_steps: Any, max_steps: int | None, epochs: float | None) -> bool:
        if max_steps is not None:
            return step >= max_steps
        if not isinstance(run_max_steps, int) or step < run_max_steps:
            return False
        with contextlib.suppress(UsageError, JobError, ValueError):  # the epochs the steps were counted from
            earlier = self.job().train
            return earlier.max_steps is None and earlier.epochs == epochs
        return False

    def finish_from_checkpoint(self, checkpoint: Path) -> None:
        """final/ from a sealed checkpoint at the end of training (a stop before final/ was written): the model or
        adapter and tokenizer files, copied beside and renamed into place, then sealed with the checkpoint's step."""
        staging = self.path / FINAL_STAGING
        if staging.exists():
            shutil.rmtree(staging)
        shutil.copytree(checkpoint, staging, ignore=lambda _, names: [n for n in names if RESUME_ONLY_FILES.match(n)])
        state = self.trainer_state(checkpoint)
        mark_complete(staging, int(state["global_step"]), max_steps=state.get("max_steps"))
        if self.final_dir.exists():
            shutil.rmtree(self.final_dir)
        os.replace(staging, self.final_dir)

    def recover_summary(self, step: int) -> dict[str, Any]:
        """summary.json of a run stopped after final/ but before its summary: rebuilt from metrics.jsonl."""
        records = self.metrics()
        first, last = first_last(records, "loss")
        speeds = sorted(series(records, "tokens_per_second")[1])
        summary = {
            "global_step": step,
            "first_loss": first,
            "final_loss": last,
            "tokens_per_second": speeds[len(speeds) // 2] if speeds else None,
            "final_dir": str(self.final_dir),
            "recovered": "rebuilt from final/ and metrics.jsonl: the run stopped before writing it",
        }
        write_json_atomic(self.summary_file, summary)
        return summary

    # ------------------------------------------------------------------------------------------ writing

    def prepare(self, job_yaml: str) -> list[str]:
        """Create the directory and write job.yaml; a different earlier job.yaml is kept, never overwritten."""
        notes = []
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints_dir.mkdir(exist_ok=True)
        if self.job_file.is_file() and self.job_file.read_text(encoding="utf-8") != job_yaml:
            kept = self.path / f"job.{time.strftime('%Y%m%d-%H%M%S')}.yaml"
            shutil.copy2(self.job_file, kept)
            notes.append(f"the job changed since the last run here; the previous one is kept as {kept.name}")
        write_text_atomic(self.job_file, job_yaml)
        return notes

    def set_aside_previous_run(self) -> str | None:
        """`output.resume: never` in a used directory: the earlier run's checkpoints, final/, metrics, summary and
        plots move (renamed, never copied or deleted) to previous/<time>/, so nothing of it is lost and no later
        `resume: auto` continues from its checkpoints. The note saying where they went, None when nothing moved."""
        parts = [self.checkpoints_dir, self.final_dir, self.metrics_file, self.summary_file, self.path / PLOTS_DIR]
        present = [p for p in parts if p.exists() and not (p.is_dir() and not any(p.iterdir()))]
        if not present:
            return None
        target = self.path / PREVIOUS_DIR / time.strftime("%Y%m%d-%H%M%S")
        while target.exists():
            target = target.with_name(target.name + "-1")
        target.mkdir(parents=True)
        for part in present:
            os.replace(part, target / part.name)
        names = ", ".join(p.name + ("/" if (target / p.name).is_dir() else "") for p in present)
        return f"output.resume: never: the earlier run's {names} moved to {target.relative_to(self.path)}/"

    def write_plan(self, plan: dict[str, Any]) -> None:
        """plan.json, atomically (a backend rewrites it once it knows the data size)."""
        write_json_atomic(self.plan_file, plan)

    def metrics_writer(self) -> MetricsWriter:
        """An appender of metrics.jsonl records."""
        return MetricsWriter(self.path)

    def trim_metrics(self, after_step: int) -> list[str]:
        """Before a run continues from `after_step` (0: from the start): drop the records of later steps (they are
        logged again) and a line a kill cut short, so the file has each step once and ends with a whole line."""
        text = self._metrics_text()
        if not text:
            return []
        records, skipped = _parse_metrics(text)
        kept = [r for r in records if not isinstance(r.get("step"), int | float) or r["step"] <= after_step]
        if not skipped and len(kept) == len(records) and text.endswith("\n"):
            return []
        write_text_atomic(self.metrics_file, "".join(json.dumps(_json_record(r)) + "\n" for r in kept))
        notes = [_skipped_note(self.metrics_file, skipped)] if skipped else []
        if len(kept) < len(records):
            notes.append(
                f"metrics.jsonl: dropped {len(records) - len(kept)} record(s) after step {after_step}, "
                "where this run continues"
            )
        return notes

    def clean_leftovers(self) -> list[Path]:
        """Remove what a run stopped mid-write left: temp files of atomic writes and a half-saved final/ (only the
        lock holder calls this, so none of them is still being written)."""
        removed = []
        for folder in (self.path, self.manifest_file.parent):
            if not folder.is_dir():
                continue
            for child in folder.iterdir():
                if TEMP_FILE_PATTERN.match(child.name) and child.is_file():
                    child.unlink()
                    removed.append(child)
        staging = self.path / FINAL_STAGING
        if staging.exists():
            shutil.rmtree(staging)
            removed.append(staging)
        return removed

    @contextlib.contextmanager
    def lock(self) -> Iterator[list[str]]:
        """Own the directory while the block runs: a second owner gets a UsageError naming the first (pid, host, start).
        The kernel drops the lock when its process ends however it ends, so the file a killed owner left behind is
        stale by definition; it is taken over with a note (the yielded list)."""
        self.path.mkdir(parents=True, exist_ok=True)
        held = RunLock(self.path / LOCK_FILE)
        notes = held.acquire()
        try:
            yield notes
        finally:
            held.release()

    def disk_full_message(self, exc: BaseException) -> tuple[str, str]:
        """(message, hint) for a write that failed on a full disk: which file, the space left and what a checkpoint
        takes here, and the last sealed checkpoint (which the failure did not touch)."""
        failed = _disk_full_error(exc)
        where = Path(failed.filename) if failed is not None and failed.filename else self._being_written()
        parts = [f"the disk is full: writing {where} failed"]
        with contextlib.suppress(OSError):
            parts.append(f"{_size(shutil.disk_usage(_existing(where)).free)} free there")
        last = self.last_complete_checkpoint()
        if last is not None:
            parts.append(f"a checkpoint here takes about {_size(_folder_size(last))}")
        message = "; ".join(parts) + f". Last good checkpoint: {last if last else 'none yet'}"
        return message, "free some space (or point output.dir elsewhere), then run the same command again to resume"

    def _being_written(self) -> Path:
        """What a failed save was writing: final/'s staging folder, else the newest unsealed checkpoint after the last
        sealed one, else the run directory itself."""
        staging = self.path / FINAL_STAGING
        if staging.exists():
            return staging
        last = self.last_complete_checkpoint()
        newest = self.checkpoints()[-1][1] if self.checkpoints() else None
        return newest if newest is not None and newest != last and not is_complete(newest) else self.path


@dataclass(frozen=True)
class Finished:
    """A run that already reached its end: the step, and the sealed checkpoint final/ must still be made from (None when
    final/ is there)."""

    run: RunDir
    step: int
    from_checkpoint: Path | None


class RunLock:
    """An exclusive flock on <run_dir>/.factory.lock, the file naming its owner (pid, host, start) for whoever is
    refused. Released on every exit path: by `release`, and by the kernel when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> list[str]:
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise UsageError(
                    f"{self.path.parent} is in use by another `factory train` ({_describe_owner(owner)})",
                    "wait for it to finish or stop it, or give this run another output.dir",
                ) from None
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break  # else the owner released (and removed) the file between our open and lock: retry
            os.close(fd)
        previous = _read_owner(fd)
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        self.fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(mine) + "\n").encode(), 0)
        except OSError:  # a full disk: give the lock back before saying so
            self.release()
            raise
        if previous:
            return [f"took over the lock of a run that is gone ({_describe_owner(previous)}); it was stopped uncleanly"]
        return []

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)  # closing drops the flock
        self.fd = None


def _read_owner(fd: int) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        owner = json.loads(os.pread(fd, 4096, 0).decode("utf-8", errors="replace") or "{}")
        if isinstance(owner, dict):
            return owner
    return {}


def _describe_owner(owner: dict[str, Any]) -> str:
    if not owner:
        return "owner unknown"
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started {owner.get('started', '?')}"


def _seal_time(checkpoint: Path) -> float | None:
    """When a checkpoint was sealed; None when its marker says no time (or no readable one)."""
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        return float(json.loads((checkpoint / COMPLETE_MARKER).read_text(encoding="utf-8"))["time"])
    return None


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _disk_full_error(exc: BaseException | None) -> OSError | None:
    """The OSError(ENOSPC / EDQUOT) behind `exc` (itself, its cause or its context), if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


# torch.save on a full disk says neither ENOSPC nor "No space left" (measured on a 200 KB tmpfs: "[enforce fail at
# inline_container.cc:672] . unexpected pos 576 vs 534", context "basic_ios::clear: iostream error").
TORCH_WRITE_FAILED = ("inline_container.cc", "PytorchStreamWriter", "iostream error")
NEARLY_FULL_BYTES = 16 * 1024 * 1024


def is_disk_full(exc: BaseException, where: Path | None = None) -> bool:
    """Whether `exc` comes from a full disk (or an exhausted quota): an OSError saying so, a message saying so
    (safetensors), or torch's writer failing while the disk at `where` is (nearly) full."""
    if _disk_full_error(exc) is not None:
        return True
    texts: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(texts) < 10:
        texts.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    text = " ".join(texts)
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return True
    if where is None or not any(marker in text for marker in TORCH_WRITE_FAILED):
        return False
    try:
        return shutil.disk_usage(_existing(where)).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temp file and rename, so a reader never sees half a file (nor a temp file after a failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON through write_text_atomic."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def prepare_run_dir(run_dir: Path, job_yaml: str) -> list[str]:
    """RunDir.prepare for a bare path."""
    return RunDir(run_dir).prepare(job_yaml)


def checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """RunDir.checkpoints for a bare path."""
    return RunDir(run_dir).checkpoints()


def is_complete(checkpoint: Path) -> bool:
    """A checkpoint counts only once every file was written (our marker comes last)."""
    return (checkpoint / COMPLETE_MARKER).is_file() and (checkpoint / "trainer_state.json").is_file()


def mark_complete(checkpoint: Path, step: int, **facts: Any) -> None:
    """Seal a fully written checkpoint (or final/, with the max_steps it was trained to among `facts`)."""
    write_json_atomic(checkpoint / COMPLETE_MARKER, {"step": step, "time": time.time(), **facts})


def checkpoint_step(checkpoint: Path | None) -> int:
    """The step a checkpoint was saved at (its trainer_state.json, else its name), 0 for none."""
    if checkpoint is None:
        return 0
    step = RunDir(checkpoint.parent).trainer_state(checkpoint).get("global_step")
    if isinstance(step, int):
        return step
    match = CHECKPOINT_PATTERN.match(checkpoint.name)
    return int(match.group(1)) if match else 0


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """RunDir.last_complete_checkpoint for a bare path."""
    return RunDir(run_dir).last_complete_checkpoint()


def resume_checkpoint(run_dir: Path, resume: str) -> Path | None:
    """RunDir.resume_checkpoint for a bare path."""
    return RunDir(run_dir).resume_checkpoint(resume)


class MetricsWriter:
    """Appends one JSON object per logging step to metrics.jsonl, flushed at once."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record, on a line of its own even after a line a kill cut short."""
        line = (json.dumps(_json_record(record)) + "\n").encode("utf-8")
        with open(self.path, "a+b") as handle:
            end = handle.seek(0, os.SEEK_END)
            if end:
                handle.seek(end - 1)
                if handle.read(1) != b"\n":
                    line = b"\n" + line
            handle.write(line)  # append mode: at the end wherever the reads left the position


def _json_record(record: dict[str, Any]) -> dict[str, Any]:
    return {k: _json_number(v) for k, v in record.items()}


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _parse_metrics(text: str) -> tuple[list[dict[str, Any]], list[int]]:
    """The records of metrics.jsonl text and the (1-based) numbers of the lines that are no JSON object."""
    records, skipped = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            skipped.append(number)
            continue
        if not isinstance(record, dict):
            skipped.append(number)
            continue
        records.append({k: float(v) if v in ("nan", "inf", "-inf") else v for k, v in record.items()})
    return records, skipped


def _skipped_note(path: Path, lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:5]) + (" ..." if len(lines) > 5 else "")
    return f"{path}: skipped {len(lines)} unreadable line(s) ({shown}), e.g. cut short when a run was killed"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """RunDir.metrics for a bare path."""
    return RunDir(run_dir).metrics()


def series(records: Iterable[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric."""
    steps, values = [], []
    for record in records:
        if key in record and isinstance(record[key], int | float) and "step" in record:
            steps.append(float(record["step"]))
            values.append(float(record[key]))
    return steps, values


PLOTS: dict[str, tuple[str, ...]] = {
    "loss": ("loss", "eval_loss"),
    "learning_rate": ("learning_rate",),
    "grad_norm": ("grad_norm",),
    "reward": ("reward", "reward_std"),
    "rewards_margin": ("rewards/margins", "rewards/accuracies"),
    "completion_length": ("completions/mean_length",),
    "kl": ("kl",),
    "tokens_per_second": ("tokens_per_second",),
}


def plot_metrics(run_dir: Path) -> list[Path]:
    """PNG curves of the main metrics (those that were logged) into plots/ (unreadable lines skipped)."""
    records = read_metrics(run_dir)
    if not records:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = run_dir / PLOTS_DIR
    out_dir.mkdir(exist_ok=True)
    written = []
    for name, keys in PLOTS.items():
        curves = [(key, *series(records, key)) for key in keys]
        curves = [c for c in curves if c[1]]
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        try:
            for key, steps, values in curves:
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=key)
            ax.set_xlabel("step")
            ax.set_title(name.replace("_", " "))
            ax.grid(alpha=0.3)
            if len(curves) > 1:
                ax.legend()
            fig.tight_layout()
            path = out_dir / f"{name}.png"
            fig.savefig(path)
        finally:  # a plot that fails (a full disk) leaves no figure open in a long-lived process
            plt.close(fig)
        written.append(path)
    return written


def first_last(records: list[dict[str, Any]], key: str) -> tuple[float | None, float | None]:
    """First and last logged value of a metric."""
    _, values = series(records, key)
    return (values[0], values[-1]) if values else (None, None)


def iter_reward_keys(records: list[dict[str, Any]]) -> Iterator[str]:
    """Per-reward mean keys as TRL logs them (rewards/<name>/mean)."""
    seen: set[str] = set()
    for record in records:
        for key in record:
            if key.startswith("rewards/") and key.endswith("/mean") and key not in seen:
                seen.add(key)
                yield key
