"""`python -m bench [name ...] [--runs N]`: run benchmarks, save JSON under bench/results/, print a table."""

from __future__ import annotations

import argparse
import importlib
import json

BENCHMARKS = {
    "sft_overhead": "bench.sft_overhead",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool (medians are reported)")
    options = parser.parse_args()
    for name in options.names or list(BENCHMARKS):
        if name not in BENCHMARKS:
            parser.error(f"unknown benchmark {name}; known: {', '.join(BENCHMARKS)}")
        module = importlib.import_module(BENCHMARKS[name])
        result = module.run(runs=options.runs)
        path = result.save()
        print(f"{name}: {json.dumps(result.metrics, indent=1)}\nratio: {json.dumps(result.ratio)}\n-> {path}")


if __name__ == "__main__":
    main()
