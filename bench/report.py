"""Render bench/results/*.json as markdown tables into bench/README.md, between the results markers.

python -m bench.report                  # rewrite the block in bench/README.md
python -m bench.report --print          # print the block instead
python -m bench.report --include-quick  # also show *_quick results (smoke settings, not comparable)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from bench.harness import BENCH_DIR, RESULTS

README = BENCH_DIR / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
ORDER = ["train_sft_lora", "preprocess", "preprocess_scale", "cli_latency", "grpo_step", "sft_overhead"]
VERSION_KEYS = ["torch", "transformers", "trl", "peft", "datasets", "accelerate"]


def load_results(results_dir: Path = RESULTS, include_quick: bool = False) -> list[dict[str, Any]]:
    """Every result record, in the benchmarks' documented order (then by name); *_quick only when asked."""
    records = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except ValueError:
            continue
        if "name" not in record:
            continue  # not a benchmark record (bench/results/chain.json: the chain's own table is in README.md)
        name = str(record["name"])
        if name.endswith("_quick") and not include_quick:
            continue
        records.append(record)

    def rank(record: dict[str, Any]) -> tuple[int, str]:
        base = str(record.get("name", "")).removesuffix("_quick")
        return (ORDER.index(base) if base in ORDER else len(ORDER), str(record.get("name", "")))

    return sorted(records, key=rank)


def fmt(value: Any) -> str:
    """A number for a table cell: thousands separators from 1000, else 4 significant digits; '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if math.isnan(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def _machine_line(record: dict[str, Any]) -> str:
    machine = record.get("machine", {})
    versions = record.get("versions", {})
    libs = ", ".join(f"{k} {versions[k]}" for k in VERSION_KEYS if versions.get(k))
    parts = [
        f"measured {record.get('time', '?')}",
        f"git {record.get('git_sha') or '?'}",
        f"{machine.get('cpu', '?')} ({machine.get('cores', '?')} cores, {machine.get('memory_gb', '?')} GB"
        + (f", {machine['vector_isa']}" if machine.get("vector_isa") else "")
        + (f", bf16 matmul: {machine['bf16_matmul']}" if machine.get("bf16_matmul") else "")
        + ")",
    ]
    if libs:
        parts.append(libs)
    return "; ".join(parts)


def render_result(record: dict[str, Any]) -> str:
    """One benchmark: heading, description, machine line, a tool x metric table of medians, ratios, notes."""
    metrics: dict[str, dict[str, Any]] = record.get("metrics", {})
    columns: list[str] = []
    for row in metrics.values():
        columns += [key for key in row if key not in columns]
    lines = [f"### {record.get('name', '?')}", "", str(record.get("description", "")), "", f"_{_machine_line(record)}_"]
    if metrics:
        lines += ["", "| tool | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        for tool, row in metrics.items():
            lines.append(f"| {tool} | " + " | ".join(fmt(row.get(key)) for key in columns) + " |")
    ratio = record.get("ratio", {})
    if ratio:
        lines += ["", "| ratio | value |", "|---|---:|"]
        lines += [f"| {key} | {fmt(value)} |" for key, value in ratio.items()]
    notes = record.get("notes", [])
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines)


def render(records: list[dict[str, Any]]) -> str:
    """The whole results block (without the markers)."""
    header = "_Rendered by `python -m bench.report` from bench/results/*.json; medians of the runs._"
    if not records:
        return header + "\n\nNo results yet: run `python -m bench`."
    return "\n\n".join([header, *(render_result(r) for r in records)])


def replace_block(text: str, block: str) -> str:
    """`text` with everything between the results markers replaced by `block`."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the results markers {START} / {END} are missing")
    return text[: start + len(START)] + "\n" + block.strip() + "\n" + text[end:]


def update_readme(block: str, readme: Path = README) -> bool:
    """Write the block into the README; True when the file changed."""
    old = readme.read_text(encoding="utf-8")
    new = replace_block(old, block)
    if new != old:
        readme.write_text(new, encoding="utf-8")
    return new != old


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the block instead of writing the README")
    parser.add_argument("--include-quick", action="store_true", help="also render *_quick (smoke) results")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of result JSON files")
    options = parser.parse_args()
    block = render(load_results(options.results, options.include_quick))
    if options.print:
        print(block)
        return 0
    changed = update_readme(block)
    print(f"{README}: {'updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
