"""bench/mutation.py without running mutmut: the module -> tests map, the per-module mutmut settings, reading mutmut's
results and diffs, the equivalent-mutant list and the result file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import tomllib

from bench.mutation import (
    MODULES,
    REPO,
    Mutant,
    change_of,
    changed_since,
    existing_tests,
    function_of,
    load_equivalent,
    module_pattern,
    module_summary,
    mutant_function,
    overall,
    parse_results,
    pyproject_for,
    split_shows,
    write_result,
)


def test_every_mapped_module_and_test_file_exists() -> None:
    for module, tests in MODULES.items():
        assert (REPO / module).exists(), module
        assert tests and all(t.startswith("tests/unit/test_") for t in tests), module
        assert existing_tests(tests) == list(tests), f"{module}: a mapped test file is missing"


def test_module_pattern() -> None:
    assert module_pattern("factory_cli/runs.py") == "factory_cli/runs.py"
    assert module_pattern("factory_cli/rewards") == "factory_cli/rewards/*.py"
    assert module_pattern("factory_cli/rewards/") == "factory_cli/rewards/*.py"


def test_existing_tests_keeps_only_files(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("")
    assert existing_tests(["tests/test_a.py", "tests/test_b.py"], tmp_path) == ["tests/test_a.py"]


def test_the_module_pyproject_replaces_only_the_mutmut_table() -> None:
    text = """\
[project]
name = "x"

[tool.mutmut]
source_paths = ["elsewhere"]
also_copy = ["templates"]

[tool.pytest.ini_options]
addopts = "-ra"
"""
    generated = tomllib.loads(pyproject_for("factory_cli/rewards", ["tests/unit/test_a.py"], text))
    assert generated["project"] == {"name": "x"}
    assert generated["tool"]["pytest"]["ini_options"] == {"addopts": "-ra"}
    assert generated["tool"]["mutmut"] == {
        "source_paths": ["factory_cli"],
        "also_copy": ["templates"],
        "only_mutate": ["factory_cli/rewards/*.py"],
        "pytest_add_cli_args_test_selection": ["tests/unit/test_a.py"],
    }


def test_the_repository_pyproject_gives_a_valid_module_table() -> None:
    text = (REPO / "pyproject.toml").read_text()
    generated = tomllib.loads(pyproject_for("factory_cli/runs.py", list(MODULES["factory_cli/runs.py"]), text))
    assert generated["tool"]["mutmut"]["only_mutate"] == ["factory_cli/runs.py"]
    assert generated["tool"]["pytest"]["ini_options"] == tomllib.loads(text)["tool"]["pytest"]["ini_options"]


def test_parse_results() -> None:
    text = """\
Some banner
    factory_cli.runs.x_series__mutmut_1: killed
    factory_cli.runs.xǁRunDirǁcheckpoints__mutmut_12: survived
    factory_cli.runs.x_first_last__mutmut_3: no tests
not a result: line
"""
    assert parse_results(text) == {
        "factory_cli.runs.x_series__mutmut_1": "killed",
        "factory_cli.runs.xǁRunDirǁcheckpoints__mutmut_12": "survived",
        "factory_cli.runs.x_first_last__mutmut_3": "no tests",
    }


def test_function_of() -> None:
    assert function_of("factory_cli.runs.x_series__mutmut_1", "factory_cli.runs") == "series"
    assert function_of("factory_cli.runs.xǁRunDirǁcheckpoints__mutmut_12", "factory_cli.runs") == "RunDir.checkpoints"
    assert function_of("factory_cli.runs.x__size__mutmut_2", "factory_cli.runs") == "_size"


def test_mutant_function_names_the_file_in_a_package() -> None:
    assert mutant_function("factory_cli.runs.xǁRunDirǁjob__mutmut_2", "factory_cli/runs.py") == "RunDir.job"
    name = "factory_cli.rewards.loader.xǁLoadedRewardǁscore__mutmut_7"
    assert mutant_function(name, "factory_cli/rewards") == "loader.LoadedReward.score"
    assert mutant_function("factory_cli.rewards.builtin.x_math_answer__mutmut_1", "factory_cli/rewards") == (
        "builtin.math_answer"
    )


def test_change_of_a_mutmut_diff() -> None:
    diff = """\
# factory_cli.runs.x__size__mutmut_2: survived
--- factory_cli/runs.py
+++ factory_cli/runs.py
@@ -1,4 +1,4 @@
 def _size(count: float) -> str:
-    for unit in ("B", "KB", "MB", "GB"):
+    for unit in ("XXBXX", "KB", "MB", "GB"):
         if count < 1024:
"""
    assert change_of(diff) == '- for unit in ("B", "KB", "MB", "GB"): | + for unit in ("XXBXX", "KB", "MB", "GB"):'


def test_split_shows() -> None:
    text = """\
# m.x_a__mutmut_1: survived
--- m.py
+++ m.py
-    return 1
+    return 2
# m.x_b__mutmut_2: no tests
-    x = a
+    x = None
"""
    shows = split_shows(text)
    assert list(shows) == ["m.x_a__mutmut_1", "m.x_b__mutmut_2"]
    assert change_of(shows["m.x_a__mutmut_1"]) == "- return 1 | + return 2"
    assert change_of(shows["m.x_b__mutmut_2"]) == "- x = a | + x = None"


EQUIVALENT = [
    {"module": "factory_cli/runs.py", "function": "_size", "change": "- a | + b", "reason": "same output"},
    {"module": "factory_cli/other.py", "function": "_size", "change": "- a | + b", "reason": "another module"},
]


def test_module_summary_counts_and_sets_equivalent_ones_apart() -> None:
    mutants = [
        Mutant("m.x_a__mutmut_1", "killed"),
        Mutant("m.x_a__mutmut_2", "killed"),
        Mutant("m.x_a__mutmut_3", "timeout"),
        Mutant("m.x__size__mutmut_4", "survived", "_size", "- a | + b"),
        Mutant("m.x__size__mutmut_5", "survived", "_size", "- a | + c"),
        Mutant("m.x_b__mutmut_6", "no tests", "b", "- x | + y"),
    ]
    summary = module_summary(mutants, EQUIVALENT, "factory_cli/runs.py")
    assert {k: summary[k] for k in ("killed", "survived", "timeout", "no_tests", "total", "score", "equivalent")} == {
        "killed": 2,
        "survived": 2,
        "timeout": 1,
        "no_tests": 1,
        "total": 6,
        "score": 0.3333,
        "equivalent": 1,
    }
    assert summary["score_without_equivalent"] == 0.4
    assert summary["equivalent_mutants"] == [
        {"mutant": "m.x__size__mutmut_4", "function": "_size", "change": "- a | + b", "reason": "same output"}
    ]
    assert [m["mutant"] for m in summary["not_killed"]] == ["m.x__size__mutmut_5", "m.x_b__mutmut_6"]
    assert module_summary([], EQUIVALENT, "factory_cli/runs.py")["score"] is None
    stopped = module_summary([Mutant("a", "killed"), Mutant("b", "not checked")], [], "factory_cli/runs.py")
    assert (stopped["total"], stopped["not_checked"], stopped["score"], stopped["not_killed"]) == (1, 1, 1.0, [])


def test_overall_is_killed_over_total_of_every_module() -> None:
    runs = module_summary(
        [Mutant("a", "killed"), Mutant("b", "survived", "_size", "- a | + b")], EQUIVALENT, "factory_cli/runs.py"
    )
    other = module_summary([Mutant("c", "killed"), Mutant("d", "killed"), Mutant("e", "timeout")], [], "x.py")
    result = overall({"factory_cli/runs.py": runs, "x.py": other})
    assert (result["score"], result["killed"], result["total"]) == (0.6, 3, 5)
    assert result["score_without_equivalent"] == 0.75
    assert result["equivalent"] == [
        {
            "module": "factory_cli/runs.py",
            "mutant": "b",
            "function": "_size",
            "change": "- a | + b",
            "reason": "same output",
        }
    ]


def test_write_result_keeps_every_modules_latest_result(tmp_path: Path) -> None:
    path = tmp_path / "mutation.json"
    first = module_summary([Mutant("a", "killed"), Mutant("b", "survived")], [], "factory_cli/runs.py")
    write_result({"factory_cli/runs.py": {**first, "git_sha": "abc", "seconds": 12.5}}, path)
    second = module_summary([Mutant("c", "killed")], [], "factory_cli/data/masking.py")
    result = write_result({"factory_cli/data/masking.py": {**second, "git_sha": "abc", "seconds": 3.0}}, path)
    assert json.loads(path.read_text()) == result
    assert result["modules_run"] == ["factory_cli/data/masking.py", "factory_cli/runs.py"]
    assert (result["score"], result["killed"], result["total"]) == (0.6667, 2, 3)
    assert result["git_sha"] == "abc" and result["tool"].startswith("mutmut 3.")
    assert [m["seconds"] for m in result["modules"].values()] == [3.0, 12.5]
    assert "factory_cli/config/checks.py" in result["modules_not_run"]
    assert result["tests"]["factory_cli/runs.py"] == list(MODULES["factory_cli/runs.py"])
    assert result["metrics"]["all"] == {"killed": 2, "total": 3, "score": 0.6667, "score_without_equivalent": 0.6667}
    assert result["metrics"]["factory_cli/runs.py"]["score"] == 0.5

    # another commit: the module run now is replaced, the other keeps its result and its own commit
    again = module_summary([Mutant("c", "killed"), Mutant("d", "killed")], [], "factory_cli/data/masking.py")
    result = write_result({"factory_cli/data/masking.py": {**again, "git_sha": "def", "seconds": 4.0}}, path)
    assert result["modules_run"] == ["factory_cli/data/masking.py", "factory_cli/runs.py"]
    assert result["git_sha"] == "def"
    assert {m: r["git_sha"] for m, r in result["modules"].items()} == {
        "factory_cli/data/masking.py": "def",
        "factory_cli/runs.py": "abc",
    }
    assert (result["killed"], result["total"]) == (3, 4)
    # commits git does not know: whether the source changed since cannot be told, so both are listed
    assert result["changed_since_run"] == ["factory_cli/data/masking.py", "factory_cli/runs.py"]


def test_write_result_drops_a_module_no_longer_mapped(tmp_path: Path) -> None:
    path = tmp_path / "mutation.json"
    gone = module_summary([Mutant("a", "killed")], [], "factory_cli/gone.py")
    path.write_text(json.dumps({"modules": {"factory_cli/gone.py": {**gone, "git_sha": "abc", "seconds": 1.0}}}))
    kept = module_summary([Mutant("b", "survived")], [], "factory_cli/runs.py")
    result = write_result({"factory_cli/runs.py": {**kept, "git_sha": "abc", "seconds": 2.0}}, path)
    assert result["modules_run"] == ["factory_cli/runs.py"] and result["score"] == 0.0


def test_changed_since_compares_the_module_with_its_commit(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    sha = git("rev-parse", "HEAD")
    (tmp_path / "a.py").write_text("x = 2\n")
    assert changed_since("a.py", sha, tmp_path) is True
    assert changed_since("b.py", sha, tmp_path) is False
    assert changed_since("b.py", sha + "-dirty", tmp_path) is False
    assert changed_since("b.py", "0" * 40, tmp_path) is None


def test_load_equivalent(tmp_path: Path) -> None:
    path = tmp_path / "equivalent.yaml"
    assert load_equivalent(path) == []
    path.write_text("- {module: m.py, function: f, change: '- a | + b', reason: r}\n")
    assert load_equivalent(path) == [{"module": "m.py", "function": "f", "change": "- a | + b", "reason": "r"}]
    path.write_text("- {module: m.py, function: f, change: '- a | + b'}\n")
    with pytest.raises(ValueError, match="lacks \\['reason'\\]"):
        load_equivalent(path)
    assert all(e["module"] in MODULES for e in load_equivalent())
