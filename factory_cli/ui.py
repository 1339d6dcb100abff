"""Terminal output: issues, job summaries, tables. Rich only; no torch."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from factory_cli.config.errors import Issue

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_issues(issues: Iterable[Issue], *, to_stderr: bool = True) -> None:
    """Errors in red, warnings in yellow, each with its location and hint."""
    out = err_console if to_stderr else console
    for issue in issues:
        color = "red" if issue.is_error else "yellow"
        label = "error" if issue.is_error else "warning"
        where = issue.source or ""
        if issue.line is not None:
            where = f"{where}:{issue.line}" if where else f"line {issue.line}"
        prefix = f"[dim]{escape(where)}[/dim]  " if where else ""
        out.print(
            f"[{color}]{label}[/{color}] {prefix}[bold]{escape(issue.path or '(job)')}[/bold]: {escape(issue.message)}"
        )
        if issue.hint:
            out.print(f"    [cyan]hint:[/cyan] {escape(issue.hint)}")


def print_error(message: str, hint: str | None = None) -> None:
    """One user-facing error with an optional hint."""
    err_console.print(f"[red]error[/red]: {escape(message)}")
    if hint:
        err_console.print(f"    [cyan]hint:[/cyan] {escape(hint)}")


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A simple rich table."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(escape(str(cell)) for cell in row))
    console.print(table)


def quiet_engine_progress() -> None:
    """Our progress bar is the one the user watches: the engines' per-file tqdm bars are switched off."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass
