"""The run directory (output.dir): one `RunDir` reads and writes what a run leaves there.

Layout: job.yaml (the resolved job, reproducible as is), plan.json, env.json, data/manifest.json (the deepspeed
backend's prepared data), metrics.jsonl, checkpoints/checkpoint-<step>/ (sealed by factory_complete.json), final/,
summary.json and plots/. The module-level helpers below are the same operations for callers holding a bare path.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from factory_cli.config.errors import UsageError

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

    def metrics(self) -> list[dict[str, Any]]:
        """Every record of metrics.jsonl ("nan" / "inf" strings back to floats); none before the first log."""
        if not self.metrics_file.is_file():
            return []
        records = []
        for line in self.metrics_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                records.append({k: float(v) if v in ("nan", "inf", "-inf") else v for k, v in record.items()})
        return records

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

    def write_plan(self, plan: dict[str, Any]) -> None:
        """plan.json, atomically (a backend rewrites it once it knows the data size)."""
        write_json_atomic(self.plan_file, plan)

    def metrics_writer(self) -> MetricsWriter:
        """An appender of metrics.jsonl records."""
        return MetricsWriter(self.path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temp file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


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


def mark_complete(checkpoint: Path, step: int) -> None:
    """Seal a fully written checkpoint."""
    write_json_atomic(checkpoint / COMPLETE_MARKER, {"step": step, "time": time.time()})


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
        """Append one record."""
        clean = {k: _json_number(v) for k, v in record.items()}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(clean) + "\n")


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


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
    """PNG curves of the main metrics (those that were logged) into plots/."""
    records = read_metrics(run_dir)
    if not records:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    for name, keys in PLOTS.items():
        curves = [(key, *series(records, key)) for key in keys]
        curves = [c for c in curves if c[1]]
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
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
