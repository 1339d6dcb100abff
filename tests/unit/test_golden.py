"""The golden plan files change only by the explicit command (tests/unit/plan_helpers.py), never by the environment."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from tests.unit import plan_helpers


def test_no_environment_variable_rewrites_a_golden_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORY_UPDATE_GOLDEN", "1")  # the switch this suite once had
    helpers = importlib.reload(plan_helpers)  # as imported under that environment
    monkeypatch.setattr(helpers, "GOLDEN", tmp_path)
    golden = tmp_path / "plan.json"
    golden.write_text('{"a": 1}\n', encoding="utf-8")
    with pytest.raises(AssertionError, match=r"plan differs from plan\.json"):
        helpers.check_golden("plan", {"a": 2})
    assert golden.read_text(encoding="utf-8") == '{"a": 1}\n'

    helpers.check_golden("plan", {"a": 2}, update=True)  # what --update-golden does
    assert json.loads(golden.read_text(encoding="utf-8")) == {"a": 2}
    helpers.check_golden("plan", {"a": 2})


def test_the_update_command_needs_its_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert plan_helpers.main([]) == 2
    assert "--update-golden" in capsys.readouterr().err
