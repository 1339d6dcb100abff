"""Command-line latency: process wall time of `factory --help` / `factory check <job>` vs `llamafactory-cli help` /
`llamafactory-cli version`, each run 10 times (alternating), medians.

Each command runs once untimed first, so bytecode caches exist as in any installed environment (the bench runs
with PYTHONDONTWRITEBYTECODE unset for both tools); the OS file cache is then warm for every command alike.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.harness import REPO, Result, median, run_measured
from bench.train_sft_lora import RUN_ENV

NAME = "cli_latency"
JOB = "examples/quickstart_sft.yaml"
SAMPLES = 10


def factory_command() -> list[str]:
    """The installed `factory` entry point next to this interpreter (else `python -m factory_cli`)."""
    script = Path(sys.executable).parent / "factory"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "factory_cli"]


def commands() -> dict[str, list[str]]:
    """Label -> argv of every measured command."""
    from bench import llamafactory_env

    factory = factory_command()
    lf = str(llamafactory_env.cli())
    return {
        "factory_help": [*factory, "--help"],
        "factory_check": [*factory, "check", JOB],
        "llamafactory_help": [lf, "help"],
        "llamafactory_version": [lf, "version"],
    }


def run(runs: int = SAMPLES, quick: bool = False) -> Result:
    """Warm each command once, then `max(runs, 10)` alternating rounds (2 with quick); medians and ratios."""
    from bench import llamafactory_env

    llamafactory_env.ensure()
    count = 2 if quick else max(runs, SAMPLES)
    argvs = commands()
    samples: dict[str, list[dict[str, float]]] = {label: [] for label in argvs}
    for label, argv in argvs.items():
        warm = run_measured(argv, env=RUN_ENV, cwd=REPO)
        if warm.returncode != 0:
            raise RuntimeError(f"{label} failed ({warm.returncode}):\n{warm.stdout_tail}")
    for _ in range(count):
        for label, argv in argvs.items():
            measured = run_measured(argv, env=RUN_ENV, cwd=REPO)
            if measured.returncode != 0:
                raise RuntimeError(f"{label} failed ({measured.returncode}):\n{measured.stdout_tail}")
            samples[label].append({"wall_seconds": measured.wall_seconds, "peak_rss_mb": measured.peak_rss_mb})
    medians = {
        label: {k: median([s[k] for s in rows]) for k in ("wall_seconds", "peak_rss_mb")}
        for label, rows in samples.items()
    }
    wall = {label: m["wall_seconds"] for label, m in medians.items()}
    return Result(
        name=NAME + ("_quick" if quick else ""),
        description=f"process wall time of CLI commands, {count} alternating runs each after one warm-up; medians",
        metrics=medians,
        runs=samples,
        ratio={
            "help_speedup": wall["llamafactory_help"] / wall["factory_help"],
            "check_vs_llamafactory_version_speedup": wall["llamafactory_version"] / wall["factory_check"],
        },
        notes=[
            "argv: "
            + "; ".join(
                f"{k}: {' '.join(Path(a).name if i == 0 else a for i, a in enumerate(v))}" for k, v in argvs.items()
            ),
            "factory check validates the whole job (schema, registry, files, first data rows) without torch",
        ],
    )


if __name__ == "__main__":
    print(run(runs=SAMPLES, quick="--quick" in sys.argv).metrics)
