"""The Backend contract: check (no torch), plan (pure), run (impure). Backends register in backends/__init__.py."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from factory_cli.config.checks import CheckContext
from factory_cli.config.errors import Issue
from factory_cli.config.schema import JobBase


@dataclass
class Step:
    """One process launch: the exact argv (a list, never a split string), its environment and files to write."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


@dataclass
class Plan:
    """What the engine natively understands, plus how to launch it. Pure data; printed by --dry-run."""

    backend: str
    stage: str
    run_dir: str
    device: str
    steps: list[Step]
    engine_config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    base_dirs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (plan.json)."""
        return asdict(self)


@dataclass
class RunResult:
    """How a run ended and where its outputs are."""

    run_dir: Path
    ok: bool
    summary: dict[str, Any] = field(default_factory=dict)


class Progress(Protocol):
    """Where a running backend reports what it is doing."""

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...


class Backend(Protocol):
    """An engine adapter."""

    name: str
    stages: frozenset[str]
    install_extra: str

    def check(self, job: JobBase, ctx: CheckContext) -> Iterable[Issue]:
        """Backend-specific validation; must not import torch or the engine."""
        ...

    def plan(self, job: JobBase, device: str) -> Plan:
        """Turn the job (defaults resolved for `device`) into engine configuration and launch steps; pure."""
        ...

    def run(self, plan: Plan, ui: Progress) -> RunResult:
        """Execute the plan (the resolved job is the run directory's job.yaml) and fill the run directory."""
        ...
