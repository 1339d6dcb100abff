"""The engine stack checks (factory_cli/backends/megatron/stack.py) on fake checkouts: each problem is named with
its fix, and a complete stack has none."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory_cli.backends.megatron.checks import check_stack
from factory_cli.backends.megatron.stack import core_version, megatron_lm_problems, mindspeed_problems
from tests.unit.test_megatron_plan import job_of


def checkout(root: Path, version: tuple[int, int, int], scripts: tuple[str, ...]) -> Path:
    info = root / "megatron" / "core" / "package_info.py"
    info.parent.mkdir(parents=True)
    info.write_text(f"MAJOR = {version[0]}\nMINOR = {version[1]}\nPATCH = {version[2]}\nPRE_RELEASE = ''\n")
    (info.parent / "datasets").mkdir()
    (info.parent / "datasets" / "helpers_cpp.cpython-312-x86_64-linux-gnu.so").write_bytes(b"")
    for script in scripts:
        (root / script).write_text("")
    return root


def everything(name: str) -> bool:
    return True


def test_core_version(tmp_path: Path) -> None:
    assert core_version(checkout(tmp_path / "m", (0, 17, 0), ())) == (0, 17, 0)
    assert core_version(tmp_path) is None


def test_a_complete_megatron_lm_stack_has_no_problem(tmp_path: Path) -> None:
    env = {
        "MEGATRON_LM_HOME": str(checkout(tmp_path / "mlm", (0, 17, 1), ("pretrain_gpt.py",))),
        "MEGATRON_BRIDGE_HOME": str(tmp_path),
    }
    kw = {"sft": True, "bridge": True, "local_impl": False, "found": everything}
    assert megatron_lm_problems(env, python=(3, 12), **kw) == []  # type: ignore[arg-type]


def test_megatron_lm_problems_name_their_fix(tmp_path: Path) -> None:
    env = {"MEGATRON_LM_HOME": str(checkout(tmp_path / "mlm", (0, 16, 1), ()))}
    problems = megatron_lm_problems(
        env, sft=True, bridge=True, local_impl=False, found=lambda name: False, python=(3, 11)
    )
    text = [f"{p.what} | {p.fix}" for p in problems]
    assert any("has no pretrain_gpt.py" in t for t in text)
    assert any("is 0.16.1; the plan needs core_v0.17.0" in t and "checkout core_v0.17.0" in t for t in text)
    assert any("Transformer Engine" in t and "--transformer-impl local" in t for t in text)
    assert any("`datasets`" in t for t in text)
    assert any("$MEGATRON_BRIDGE_HOME is not set" in t for t in text)
    assert any("needs Python 3.12; factory runs on 3.11" in t for t in text)
    # A local transformer implementation and pt need neither Transformer Engine nor datasets.
    lean = megatron_lm_problems(env, sft=False, bridge=False, local_impl=True, found=lambda name: False)
    assert not any("Transformer Engine" in p.what or "datasets" in p.what for p in lean)


def test_mindspeed_problems(tmp_path: Path) -> None:
    scripts = ("convert_ckpt_v2.py", "preprocess_data.py", "pretrain_gpt.py", "posttrain_gpt.py")
    good = {"MINDSPEED_LLM_HOME": str(checkout(tmp_path / "ms", (0, 12, 1), scripts))}
    assert mindspeed_problems(good, found=everything) == []
    (tmp_path / "bare").mkdir()
    problems = mindspeed_problems({"MINDSPEED_LLM_HOME": str(tmp_path / "bare")}, found=lambda name: False)
    text = " / ".join(p.what for p in problems)
    assert "has no convert_ckpt_v2.py" in text and "core_v0.12.1's megatron/" in text
    assert "MindSpeed is not installed" in text and "torch_npu" in text
    assert mindspeed_problems({}, found=everything)[0].what.startswith("$MINDSPEED_LLM_HOME is not set")


def test_factory_check_reports_a_configured_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = job_of("megatron_sft.yaml", "cuda", ("device=cuda",))
    assert list(check_stack(job, {})) == []  # not configured here: checked where it runs
    env = {"MEGATRON_LM_HOME": str(checkout(tmp_path / "mlm", (0, 16, 1), ("pretrain_gpt.py",)))}
    issues = list(check_stack(job, env))
    assert issues and all(i.path == "megatron" and i.is_error for i in issues)
    assert any("core_v0.17.0" in i.message and "checkout core_v0.17.0" in (i.hint or "") for i in issues)
