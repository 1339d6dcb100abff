"""Shared by the plan tests: golden files and a Progress that records what it is told.

Regenerate the golden plans after an intended change, then review the diff:
    python -m tests.unit.plan_helpers --update-golden
(pytest's `--update-golden` option on the plan tests does the same; the `golden` fixture in tests/unit/conftest.py
hands the tests a checker bound to it).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
GOLDEN = Path(__file__).parent / "golden"
PLAN_TESTS = ("test_deepspeed_plan.py", "test_megatron_plan.py", "test_verl_plan.py")
# What the `golden` fixture hands a test: check_golden(name, data) bound to --update-golden.
GoldenCheck = Callable[[str, dict[str, Any]], None]


class Recorder:
    """A Progress that keeps what it is told."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warn(self, message: str) -> None:
        self.lines.append(message)


def all_installed(python: Any, modules: Any) -> Any:
    """A probe_engine stand-in (backends/common/engine_env.py): the engine's interpreter holds every module asked."""
    from factory_cli.backends.common.engine_env import EngineProbe

    return EngineProbe(python, "3.11.7", {module: "1.0" for module, _ in modules})


def check_golden(name: str, data: dict[str, Any], update: bool = False) -> None:
    """Compare with tests/unit/golden/<name>.json; `update` (pytest --update-golden) rewrites it instead."""
    path = GOLDEN / f"{name}.json"
    # Plans with absolute run paths (verl's) hold the working directory: stored as <cwd>, whoever runs the tests.
    text = json.dumps(data, indent=2, sort_keys=True).replace(json.dumps(str(Path.cwd()))[1:-1], "<cwd>") + "\n"
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), (
        f"missing golden file {path}; create it with python -m tests.unit.plan_helpers --update-golden"
    )
    assert json.loads(text) == json.loads(path.read_text(encoding="utf-8")), (
        f"plan differs from {path.name}; if the change is meant, python -m tests.unit.plan_helpers --update-golden"
    )


def main(argv: list[str]) -> int:
    """`python -m tests.unit.plan_helpers --update-golden`: run the plan tests, rewriting their golden files."""
    if argv != ["--update-golden"]:
        print("usage: python -m tests.unit.plan_helpers --update-golden", file=sys.stderr)
        return 2
    import pytest

    tests = [str(Path(__file__).with_name(name)) for name in PLAN_TESTS]
    return int(pytest.main(["-q", "-p", "no:cacheprovider", *tests, "--update-golden"]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
