"""Seconds per GRPO step on the embedded model: `factory train` vs TRL's GRPOTrainer called directly.

The job: SmolLM2-135M (embedded GGUF, converted once), LoRA r16 / alpha 32 on every linear layer, demo math
prompts, one prompt x a group of 8 completions of up to 64 tokens per step, the math_answer reward, fp32 CPU.
factory's step time comes from its metrics.jsonl (`step_time`, logging every step); the TRL run reuses that run's
plan.json, job.yaml and prepared data (bench/trl_direct_grpo.py), so both train the same rows with the same
GRPOConfig. The first step (warm-up: lazy inits, allocator growth) is excluded; the median of the rest is reported,
and factory's overhead = factory / TRL - 1 (target: at most 5%).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from bench.harness import BENCH_DIR, REPO, Measured, Result, median, run_measured
from bench.train_sft_lora import MODEL, RUN_ENV

NAME = "grpo_step"
WORK = BENCH_DIR / ".work" / NAME
STEPS, QUICK_STEPS = 6, 2
GROUP, COMPLETION = 8, 64


def grpo_job(out_dir: Path, steps: int) -> dict[str, Any]:
    """The factory GRPO job file (as a dict)."""
    return {
        "backend": "deepspeed",
        "stage": "grpo",
        "device": "auto",
        "model": {"name_or_path": MODEL},
        "method": {"type": "lora", "lora": {"rank": 16, "alpha": 32, "dropout": 0.05, "target": ["all"]}},
        "data": {"train": ["demo-grpo-math"], "max_length": 512},
        "train": {
            "max_steps": steps,
            "learning_rate": 1e-5,
            "micro_batch_size": GROUP,  # one prompt's whole group per step
            "gradient_accumulation_steps": 1,
            "precision": "fp32",
            "seed": 42,
        },
        "grpo": {
            "num_generations": GROUP,
            "max_prompt_length": 256,
            "max_completion_length": COMPLETION,
            "rewards": ["math_answer"],
        },
        "output": {"dir": str(out_dir), "save_steps": 1_000_000, "resume": "never"},
        "logging": {"steps": 1, "sample_after_training": False},
    }


def steady(step_times: list[float]) -> float:
    """Median step time without the first step."""
    return median(step_times[1:] if len(step_times) > 1 else step_times)


def step_metrics(times: list[float], train_seconds: float, measured: Measured) -> dict[str, float]:
    """One run's numbers: steady step time, first step, Trainer runtime, wall time, peak RSS, steps."""
    return {
        "step_seconds": steady(times),
        "first_step_seconds": times[0] if times else float("nan"),
        "train_seconds": train_seconds,
        "wall_seconds": measured.wall_seconds,
        "peak_rss_mb": measured.peak_rss_mb,
        "steps": float(len(times)),
    }


def factory_run(index: int, steps: int) -> tuple[dict[str, float], Path]:
    """One `factory train` of the GRPO job; step times from metrics.jsonl."""
    run_dir = WORK / f"factory-{index}"
    shutil.rmtree(run_dir, ignore_errors=True)
    job_file = WORK / "job.yaml"
    job_file.write_text(yaml.safe_dump(grpo_job(run_dir, steps), sort_keys=False))
    measured = run_measured([sys.executable, "-m", "factory_cli", "train", str(job_file)], env=RUN_ENV, cwd=REPO)
    if measured.returncode != 0:
        raise RuntimeError(f"factory train (grpo) failed:\n{measured.stdout_tail}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    times = [float(r["step_time"]) for r in records if "step_time" in r]
    summary = json.loads((run_dir / "summary.json").read_text())
    return step_metrics(times, float(summary["train_runtime"]), measured), run_dir


def trl_run(like: Path, index: int) -> dict[str, float]:
    """The same job through TRL's GRPOTrainer directly."""
    out = WORK / f"trl-{index}"
    shutil.rmtree(out, ignore_errors=True)
    measured = run_measured(
        [sys.executable, str(BENCH_DIR / "trl_direct_grpo.py"), str(like), str(out)], env=RUN_ENV, cwd=REPO
    )
    if measured.returncode != 0:
        raise RuntimeError(f"TRL direct GRPO failed:\n{measured.stdout_tail}")
    data = json.loads([row for row in measured.stdout_tail.splitlines() if row.startswith("{")][-1])
    return step_metrics([float(t) for t in data["step_times"]], float(data["train_runtime"]), measured)


def run(runs: int = 3, quick: bool = False) -> Result:
    """Alternate factory and TRL-direct GRPO runs; median step times and factory's overhead."""
    steps = QUICK_STEPS if quick else STEPS
    WORK.mkdir(parents=True, exist_ok=True)
    per_tool: dict[str, list[dict[str, float]]] = {"factory": [], "trl_direct": []}
    for index in range(runs):
        metrics, run_dir = factory_run(index, steps)
        per_tool["factory"].append(metrics)
        print(f"{NAME} run {index + 1}/{runs} factory: {json.dumps(metrics)}", flush=True)
        per_tool["trl_direct"].append(trl_run(run_dir, index))
        print(f"{NAME} run {index + 1}/{runs} trl_direct: {json.dumps(per_tool['trl_direct'][-1])}", flush=True)
    keys = list(per_tool["factory"][0])
    medians = {tool: {k: median([r[k] for r in rows]) for k in keys} for tool, rows in per_tool.items()}
    ours, theirs = medians["factory"], medians["trl_direct"]
    return Result(
        name=NAME + ("_quick" if quick else ""),
        description=(
            f"GRPO-LoRA on {MODEL}, group {GROUP}, {COMPLETION}-token completions, 1 prompt per step, {steps} steps, "
            "fp32 CPU: factory train vs TRL GRPOTrainer with identical config and data; median step time excluding "
            "the first step"
        ),
        metrics=medians,
        runs=per_tool,
        ratio={
            "step_time_ratio": ours["step_seconds"] / theirs["step_seconds"],
            "overhead_percent": 100 * (ours["step_seconds"] / theirs["step_seconds"] - 1),
            "peak_rss_ratio": ours["peak_rss_mb"] / theirs["peak_rss_mb"],
        },
        notes=[
            "generation dominates a CPU GRPO step; completion lengths follow sampling, so the same seed keeps "
            "the two runs' generations comparable",
            "wall time includes interpreter start, imports, model load and (factory) data preparation",
        ],
    )


if __name__ == "__main__":
    print(json.dumps(run(runs=1, quick="--quick" in sys.argv).metrics, indent=1))
