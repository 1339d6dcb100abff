"""What an export did (`ExportReport`) and how `factory export` prints a plan and a report.

Pure Python (rich only).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from factory_cli.export.quantize import W4A16_METHODS


@dataclass
class ExportReport:
    """What an export wrote, from what, how big before and after, how long it took and what the check saw."""

    output: Path
    kind: str
    source: str
    size_before_bytes: int
    size_after_bytes: int
    seconds: float
    group_size: int | None
    calibration: dict[str, Any] | None
    check: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["output"] = str(self.output)
        return data


def human_size(num_bytes: int) -> str:
    """Bytes in human units (MB / GB, powers of 1024)."""
    value = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def print_export_plan(plan: dict[str, Any]) -> None:
    """What `factory export --dry-run` shows: the numbered steps, then the plan as JSON."""
    from factory_cli.ui import console

    console.rule(f"export plan: {plan['kind']}")
    for number, step in enumerate(plan["steps"], 1):
        console.print(f"{number}. {step}", markup=False, soft_wrap=True)
    for note in plan["notes"]:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    console.rule("plan")
    console.print(json.dumps(plan, indent=2, default=str), markup=False, soft_wrap=True)


def print_export_report(report: ExportReport) -> None:
    """Sizes before/after, time, group size, calibration, the check's logits and generation, notes."""
    from rich.markup import escape
    from rich.table import Table

    from factory_cli.ui import console

    table = Table(title=f"export: {report.kind}", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    before, after = report.size_before_bytes, report.size_after_bytes
    if after and before >= after:
        change = f"{before / after:.1f}x smaller"
    else:
        change = f"{after / before:.1f}x larger" if before else "no source size"
    rows: list[tuple[str, str]] = [
        ("output", str(report.output)),
        ("source", report.source),
        ("weights on disk", f"{human_size(before)} -> {human_size(after)} ({change})"),
        ("time", f"{report.seconds:.1f} s"),
    ]
    if report.group_size is not None or report.kind in W4A16_METHODS:
        rows.append(("group size", str(report.group_size or "per-channel")))
    if report.calibration:
        cal = report.calibration
        used = f"{cal.get('rows')} rows / {cal.get('tokens')} tokens"
        rows.append(("calibration", f"{used} of {', '.join(cal['datasets'])} ({cal['origin']})"))
    check = report.check
    if "max_abs_logit_diff" in check:
        rows.append(
            (
                "logits vs source",
                f"max |diff| {check['max_abs_logit_diff']:.4g}, top-1 agreement {check['top1_agreement']:.0%}",
            )
        )
    rows.append(("reload", f"{check.get('reloaded_as')} in {check.get('load_seconds')} s"))
    rows.append((f"check: {check.get('prompt')}", repr(check.get("generated", ""))))
    for name, value in rows:
        table.add_row(escape(name), escape(value))
    console.print(table)
    for note in report.notes:
        console.print(f"  [dim]note:[/dim] {escape(note)}")
