"""One error type for every mistake a user can make in a job: where, what, and how to fix it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Issue:
    """One problem found in a job: its YAML path, source line, message and a hint to fix it."""

    path: str
    message: str
    hint: str | None = None
    line: int | None = None
    source: str | None = None
    severity: Severity = "error"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def located(self, source: str | None, line: int | None) -> Issue:
        """The same issue, placed at a file and line (kept if already known)."""
        return Issue(
            path=self.path,
            message=self.message,
            hint=self.hint,
            line=self.line if self.line is not None else line,
            source=self.source if self.source is not None else source,
            severity=self.severity,
        )

    def format(self) -> str:
        """Human-readable, one or two lines: `file:line  path: message` then `hint: ...`."""
        where = self.source or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        head = f"{where}  " if where else ""
        label = self.path or "(job)"
        text = f"{head}{label}: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


@dataclass
class JobError(Exception):
    """Raised when a job is invalid; carries every issue found, not just the first."""

    issues: list[Issue] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.summary())

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.is_error]

    def summary(self) -> str:
        errs = [i for i in self.issues if i.is_error]
        lines = [f"{len(errs)} problem{'s' if len(errs) != 1 else ''} in the job:"]
        lines += [i.format() for i in errs]
        return "\n".join(lines)


class UsageError(ValueError):
    """A user mistake outside the job file's schema (bad option, missing file, unusable data): printed as one
    message and a hint, never a traceback. Errors of the data, model and reward layers derive from it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(f"{message}\n    hint: {hint}" if hint else message)
        self.message = message
        self.hint = hint


def errors_only(issues: Iterable[Issue]) -> list[Issue]:
    """The issues that block a run."""
    return [i for i in issues if i.is_error]


def raise_if_errors(issues: Sequence[Issue]) -> None:
    """Raise JobError when any issue is an error."""
    if any(i.is_error for i in issues):
        raise JobError(list(issues))
