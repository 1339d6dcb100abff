"""Write small jobs and run `factory train` on them (in-process or as the real CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
STAGE_DATA = {"pt": "demo-pt", "sft": "demo-sft-alpaca", "dpo": "demo-dpo", "grpo": "demo-grpo-math"}


def deep_update(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Nested dict merge (extra wins)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_update(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_job(
    folder: Path, model: str | Path, stage: str, method: str = "lora", extra: dict[str, Any] | None = None
) -> Path:
    """A short job on a demo dataset: a few steps, logging every step, checkpoints every 2 steps."""
    job: dict[str, Any] = {
        "backend": "deepspeed",
        "stage": stage,
        "device": "cpu",
        "model": {"name_or_path": str(model)},
        "method": {"type": method},
        "data": {
            "train": [{"path": STAGE_DATA[stage], "max_samples": 24}],
            "max_length": 128,
            "cache_dir": str(folder / "cache"),
        },
        "train": {"max_steps": 3, "micro_batch_size": 2, "gradient_accumulation_steps": 1},
        "output": {"dir": str(folder / "run"), "save_steps": 2},
        "logging": {"steps": 1, "sample_after_training": False},
    }
    if method in ("lora", "qlora"):
        job["method"]["lora"] = {"rank": 4}
    if stage == "grpo":
        job["grpo"] = {
            "num_generations": 2,
            "max_prompt_length": 128,
            "max_completion_length": 8,
            "rewards": ["math_answer"],
        }
    job = deep_update(job, extra or {})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def train_in_process(job_file: Path, *overrides: str) -> int:
    """`factory train` without a new interpreter (one plain process only)."""
    from factory_cli.train import train_job

    return train_job(job_file, list(overrides))


def train_cli(
    job_file: Path, *overrides: str, env: dict[str, str] | None = None, timeout: int = 900
) -> subprocess.CompletedProcess[str]:
    """The real command line, in a child process."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "factory_cli", "train", str(job_file), *overrides],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl records."""
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def losses(run_dir: Path) -> dict[int, float]:
    """step -> training loss."""
    return {r["step"]: float(r["loss"]) for r in metrics(run_dir) if "loss" in r}
