"""launching.run_child: the one way an engine process starts — the step's env on top of ours, its exit code back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from factory_cli.launching import run_child


def test_the_steps_env_reaches_the_child_on_top_of_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORY_PROBE_KEPT", "ours")
    monkeypatch.setenv("FACTORY_PROBE_REPLACED", "ours")
    seen = tmp_path / "env.json"
    probe = f"import json, os; json.dump(dict(os.environ), open({str(seen)!r}, 'w'))"
    step_env = {"FACTORY_PROBE_REPLACED": "the step's", "FACTORY_PROBE_NEW": "a b=c"}
    assert run_child([sys.executable, "-c", probe], step_env) == 0
    env = json.loads(seen.read_text())
    assert env["FACTORY_PROBE_KEPT"] == "ours"
    assert env["FACTORY_PROBE_REPLACED"] == "the step's" and env["FACTORY_PROBE_NEW"] == "a b=c"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_the_childs_exit_code_comes_back(tmp_path: Path) -> None:
    assert run_child([sys.executable, "-c", "raise SystemExit(3)"], {}) == 3
    where = tmp_path / "cwd.txt"
    probe = f"import os; open({str(where)!r}, 'w').write(os.getcwd())"
    assert run_child([sys.executable, "-c", probe], {}, cwd=str(tmp_path)) == 0
    assert Path(where.read_text()).resolve() == tmp_path.resolve()
