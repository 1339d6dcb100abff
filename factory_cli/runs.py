"""The run directory (DESIGN §7): resolved job, plan, environment, metrics, plots, checkpoints, resume."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
COMPLETE_MARKER = "factory_complete.json"
METRICS_FILE = "metrics.jsonl"


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
    """Create the run directory and write job.yaml; a different earlier job.yaml is kept, never overwritten."""
    notes = []
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
    current = run_dir / "job.yaml"
    if current.is_file() and current.read_text(encoding="utf-8") != job_yaml:
        kept = run_dir / f"job.{time.strftime('%Y%m%d-%H%M%S')}.yaml"
        shutil.copy2(current, kept)
        notes.append(f"the job changed since the last run here; the previous one is kept as {kept.name}")
    write_text_atomic(current, job_yaml)
    return notes


def checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint folder, oldest first."""
    root = run_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = CHECKPOINT_PATTERN.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def is_complete(checkpoint: Path) -> bool:
    """A checkpoint counts only once every file was written (our marker comes last)."""
    return (checkpoint / COMPLETE_MARKER).is_file() and (checkpoint / "trainer_state.json").is_file()


def mark_complete(checkpoint: Path, step: int) -> None:
    """Seal a fully written checkpoint."""
    write_json_atomic(checkpoint / COMPLETE_MARKER, {"step": step, "time": time.time()})


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest sealed checkpoint, skipping ones an interruption left half-written."""
    for _, path in reversed(checkpoint_dirs(run_dir)):
        if is_complete(path):
            return path
    return None


def resume_checkpoint(run_dir: Path, resume: str) -> Path | None:
    """What `output.resume` means here: auto -> last complete checkpoint, never -> None, else that path."""
    if resume == "never":
        return None
    if resume == "auto":
        return last_complete_checkpoint(run_dir)
    return Path(resume)


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
    """Every record of metrics.jsonl ("nan" / "inf" strings back to floats)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            records.append({k: float(v) if v in ("nan", "inf", "-inf") else v for k, v in record.items()})
    return records


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
