"""`python -m bench [name ...] [--runs N]`: run benchmarks, save JSON under bench/results/, print a table."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json

BENCHMARKS = {
    "sft_overhead": "bench.sft_overhead",
    "train_sft_lora": "bench.train_sft_lora",
    "preprocess": "bench.preprocess",
    "cli_latency": "bench.cli_latency",
    "grpo_step": "bench.grpo_step",
    "gpu_sft": "bench.gpu_sft",
    "preprocess_scale": "bench.preprocess_scale",
}
# Benchmarks that need a CUDA GPU (their `--quick` runs on the CPU) run only when named.
GPU_ONLY = ("gpu_sft",)
# Benchmarks that take an hour and gigabytes of generated data run only when named too.
LONG = ("preprocess_scale",)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    skipped = ", ".join(GPU_ONLY + LONG)
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all but {skipped}): {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per tool (medians are reported)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test settings (results saved as <name>_quick)")
    parser.add_argument("--tools", help="comma-separated tools (train_sft_lora, gpu_sft)")
    parser.add_argument("--examples", type=int, help="train on the first N rows of the data (train_sft_lora)")
    options = parser.parse_args()
    for name in options.names or [name for name in BENCHMARKS if name not in GPU_ONLY + LONG]:
        if name not in BENCHMARKS:
            parser.error(f"unknown benchmark {name}; known: {', '.join(BENCHMARKS)}")
        module = importlib.import_module(BENCHMARKS[name])
        accepted = inspect.signature(module.run).parameters
        extra: dict[str, object] = {}
        if options.quick and "quick" in accepted:
            extra["quick"] = True
        if options.tools and "tools" in accepted:
            extra["tools"] = [t.strip() for t in options.tools.split(",") if t.strip()]
        if options.examples and "examples" in accepted:
            extra["examples"] = options.examples
        result = module.run(runs=options.runs, **extra)
        path = result.save()
        print(f"{name}: {json.dumps(result.metrics, indent=1)}\nratio: {json.dumps(result.ratio)}\n-> {path}")


if __name__ == "__main__":
    main()
