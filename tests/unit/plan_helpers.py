"""Shared by the plan tests: golden files and a Progress that records what it is told.

Regenerate the golden plans after an intended change:
    FACTORY_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_*_plan.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("FACTORY_UPDATE_GOLDEN") == "1"


class Recorder:
    """A Progress that keeps what it is told."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warn(self, message: str) -> None:
        self.lines.append(message)


def check_golden(name: str, data: dict[str, Any]) -> None:
    """Compare with tests/unit/golden/<name>.json (FACTORY_UPDATE_GOLDEN=1 rewrites it)."""
    path = GOLDEN / f"{name}.json"
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"missing golden file {path}; create it with FACTORY_UPDATE_GOLDEN=1"
    assert json.loads(text) == json.loads(path.read_text(encoding="utf-8")), f"plan differs from {path.name}"
