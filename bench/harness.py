"""Run commands, measure wall time and peak memory of the whole process tree, record the machine and versions."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"


@dataclass
class Measured:
    """One run of one command."""

    wall_seconds: float
    peak_rss_mb: float
    returncode: int
    stdout_tail: str = ""


def run_measured(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO,
    timeout: float = 3600,
    log: Path | None = None,
) -> Measured:
    """Run argv; the peak RSS is the largest sum over the process and all its children, sampled every 50 ms.
    `log`: a file that receives the whole output (stdout and stderr), written as it comes."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    started = time.perf_counter()
    process = subprocess.Popen(
        list(argv), cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    root = psutil.Process(process.pid)
    peak = 0
    output: list[str] = []
    import threading

    def drain() -> None:
        assert process.stdout is not None
        with open(log, "w", encoding="utf-8") if log is not None else contextlib.nullcontext() as sink:
            for line in process.stdout:
                output.append(line)
                if sink is not None:
                    sink.write(line)
                    sink.flush()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        if time.perf_counter() - started > timeout:
            process.kill()
        time.sleep(0.05)
    reader.join(timeout=5)
    wall = time.perf_counter() - started
    return Measured(wall, peak / 2**20, process.returncode, "".join(output)[-3000:])


def machine() -> dict[str, Any]:
    """What the numbers were measured on (the vector and matrix extensions decide which kernels run)."""
    from factory_cli.devices import cpu_bf16_matmul_flag, cpu_flags, cpu_name

    flags = cpu_flags()
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "vector_isa": next((isa for isa in ("avx512f", "avx2", "asimd") if isa in flags), None),
        "bf16_matmul": cpu_bf16_matmul_flag(flags),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def versions() -> dict[str, str | None]:
    """Versions of what the benchmarks exercise."""
    from factory_cli.environment import library_versions

    return {k: v for k, v in library_versions().items() if v}


def git_sha() -> str | None:
    """The commit measured, abbreviated (None outside a git checkout, or where git is not installed)."""
    from factory_cli.environment import git_sha as checkout_sha

    sha = checkout_sha(REPO)
    return sha[:7] if sha else None


def median(values: Sequence[float]) -> float:
    """Median of the runs."""
    return statistics.median(values) if values else float("nan")


@dataclass
class Result:
    """One benchmark's outcome: per-tool medians, the raw runs, and their ratio."""

    name: str
    description: str
    metrics: dict[str, dict[str, float]]
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ratio: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def save(self) -> Path:
        """bench/results/<name>.json with machine, versions and git sha."""
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        record = {
            **asdict(self),
            "machine": machine(),
            "versions": versions(),
            "git_sha": git_sha(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path
