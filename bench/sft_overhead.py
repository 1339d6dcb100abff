"""factory's own overhead on the quickstart SFT-LoRA job vs. the same job driven by TRL directly.

Both train the same converted checkpoint on the same tokenized rows with the same SFTConfig and LoRA,
alternating, `runs` times each; reported: training tokens/s, wall time and peak RSS (process tree).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from bench.harness import REPO, Result, median, run_measured

NAME = "sft_overhead"
JOB = "examples/quickstart_sft.yaml"
WORK = REPO / "bench" / ".work" / NAME


def factory_run(out: Path, steps: int) -> tuple[dict[str, float], str]:
    """One `factory train` of the quickstart job; returns metrics and the run dir."""
    shutil.rmtree(out, ignore_errors=True)
    measured = run_measured(
        [
            sys.executable,
            "-m",
            "factory_cli",
            "train",
            JOB,
            f"train.max_steps={steps}",
            f"output.dir={out}",
            "output.save_steps=100000",
            "logging.sample_after_training=false",
        ]
    )
    if measured.returncode != 0:
        raise RuntimeError(f"factory train failed:\n{measured.stdout_tail}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "tokens_per_second": summary["num_input_tokens_seen"] / summary["train_runtime"],
        "train_seconds": summary["train_runtime"],
        "wall_seconds": measured.wall_seconds,
        "peak_rss_mb": measured.peak_rss_mb,
        "final_loss": summary["final_loss"],
    }, str(out)


def trl_run(like: Path, out: Path) -> dict[str, float]:
    """The same job through TRL directly."""
    shutil.rmtree(out, ignore_errors=True)
    measured = run_measured([sys.executable, str(REPO / "bench" / "trl_direct_sft.py"), str(like), str(out)])
    if measured.returncode != 0:
        raise RuntimeError(f"TRL direct run failed:\n{measured.stdout_tail}")
    line = [row for row in measured.stdout_tail.splitlines() if row.startswith("{")][-1]
    data = json.loads(line)
    return {
        "tokens_per_second": data["tokens_per_second"],
        "train_seconds": data["train_runtime"],
        "wall_seconds": measured.wall_seconds,
        "peak_rss_mb": measured.peak_rss_mb,
        "final_loss": data["final_loss"],
    }


def run(runs: int = 3, steps: int = 12) -> Result:
    """Alternate factory and TRL runs; medians and factory/TRL ratios."""
    WORK.mkdir(parents=True, exist_ok=True)
    factory_runs: list[dict[str, float]] = []
    trl_runs: list[dict[str, float]] = []
    for index in range(runs):
        metrics, run_dir = factory_run(WORK / f"factory-{index}", steps)
        factory_runs.append(metrics)
        trl_runs.append(trl_run(Path(run_dir), WORK / f"trl-{index}"))
    keys = ["tokens_per_second", "train_seconds", "wall_seconds", "peak_rss_mb", "final_loss"]
    medians = {
        "factory": {k: median([r[k] for r in factory_runs]) for k in keys},
        "trl_direct": {k: median([r[k] for r in trl_runs]) for k in keys},
    }
    ratio = {k: medians["factory"][k] / medians["trl_direct"][k] for k in keys if medians["trl_direct"][k]}
    return Result(
        name=NAME,
        description=f"{JOB}, {steps} steps, factory train vs TRL SFTTrainer with identical config and data",
        metrics=medians,
        runs={"factory": factory_runs, "trl_direct": trl_runs},
        ratio=ratio,
        notes=["wall time includes interpreter start, imports, model load and (factory) data preparation from cache"],
    )
