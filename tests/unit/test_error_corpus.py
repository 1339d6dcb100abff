"""The broken-job corpus: every file in broken_jobs/ holds one mistake (or a deliberate few) and says what
`factory check` must answer, in its leading comment block:

    # expect: <yaml path> | <substring of the message> | <substring of the hint, or ->
    # line: <line of the first expected issue>          (optional)

Every file is validated in-process (fast); a representative subset also runs the real CLI in a subprocess
(exit code 2, the messages on stderr, no traceback).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from factory_cli.config.errors import Issue, JobError
from factory_cli.config.validate import load_and_validate
from tests.hub_stand_in import cached_registry_models

REPO_ROOT = Path(__file__).resolve().parents[2]
BROKEN_DIR = Path(__file__).resolve().parent / "broken_jobs"
JOB_FILES = sorted(BROKEN_DIR.glob("*.yaml"))
JOB_IDS = [f.stem for f in JOB_FILES]

CORPUS_MODELS = ("smollm2-135m-instruct", "qwen2.5-7b-instruct", "llama-3.1-8b-instruct")
# Run through the real CLI in a subprocess (~0.7 s each): one per kind of failure.
SUBPROCESS_SUBSET = [
    "yaml_unclosed_bracket",  # parser error
    "top_level_list",  # not a mapping
    "backend_list",  # a value of the wrong shape where the gate expects a name
    "typo_train",  # schema: unknown key with did-you-mean
    "placeholder_several",  # *** in several places
    "megatron_tp_heads",  # backend check: parallel arithmetic against the registry model
    "reward_bad_signature",  # user reward file
    "data_alpaca_for_dpo",  # dataset rows in the wrong format for the stage
    "data_info_bad_json",  # a malformed dataset_info.json (was exit 1 with a ValueError traceback)
    "data_deeply_nested_row",  # was a RecursionError traceback
    "yaml_alias_bomb",  # was minutes and gigabytes
    "reward_exits_on_import",  # was exit 3 with no output
    "reward_raises",  # the reward is called on the first rows
]

ROOT_LABEL = "(job)"  # how an issue about the whole file is printed


@dataclass(frozen=True)
class Expected:
    """One `# expect:` line."""

    path: str
    message: str
    hint: str | None


def read_expectations(file: Path) -> tuple[list[Expected], int | None]:
    """The `# expect:` lines and the optional `# line:` of the leading comment block."""
    expected: list[Expected] = []
    line: int | None = None
    for text in file.read_text(encoding="utf-8").splitlines():
        if not text.startswith("#"):
            break
        body = text[1:].strip()
        if body.startswith("expect:"):
            path, message, hint = (part.strip() for part in body.removeprefix("expect:").split(" | ", 2))
            expected.append(Expected(path, message, None if hint == "-" else hint))
        elif body.startswith("line:"):
            line = int(body.removeprefix("line:"))
    return expected, line


def _label(path: str) -> str:
    return path or ROOT_LABEL


def _matches(issue: Issue, want: Expected) -> bool:
    return (
        _label(issue.path) == want.path
        and want.message in issue.message
        and (want.hint is None or want.hint in (issue.hint or ""))
    )


def _describe(issues: list[Issue]) -> str:
    return "\n".join(f"  {_label(i.path)} (line {i.line}): {i.message} | hint: {i.hint}" for i in issues)


def test_corpus_is_large_enough() -> None:
    assert len(JOB_FILES) >= 150


@pytest.mark.parametrize("job_file", JOB_FILES, ids=JOB_IDS)
def test_every_file_states_its_expectation(job_file: Path) -> None:
    expected, _ = read_expectations(job_file)
    assert expected, f"{job_file.name} has no `# expect:` line"


@pytest.mark.parametrize("job_file", JOB_FILES, ids=JOB_IDS)
def test_broken_job_in_process(job_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    expected, line = read_expectations(job_file)
    with pytest.raises(JobError) as info:
        load_and_validate(job_file)
    errors = info.value.errors
    shown = _describe(info.value.issues)
    for want in expected:
        assert any(_matches(issue, want) for issue in errors), f"expected {want} among:\n{shown}"
    assert len(errors) == len(expected), f"one error per expectation, got:\n{shown}"
    if line is not None:
        first = next(issue for issue in errors if _matches(issue, expected[0]))
        assert first.line == line, f"{_label(first.path)} reported at line {first.line}, expected {line}"
    for issue in errors:
        # Messages are one line; the hint travels separately (printed on its own line as `hint: ...`).
        assert "\n" not in issue.message and "hint:" not in issue.message, f"hint inside the message: {issue}"
        assert issue.source == str(job_file), issue


def _issue_blocks(stderr: str) -> list[str]:
    """Each printed issue (`error ...` plus its wrapped and `hint:` lines), whitespace collapsed."""
    blocks: list[list[str]] = []
    for text in stderr.splitlines():
        if re.match(r"^(error|warning)\b", text):
            blocks.append([text])
        elif blocks and text.strip() and not re.match(r"^\d+ problems? ", text):
            blocks[-1].append(text)
    return [" ".join(" ".join(block).split()) for block in blocks]


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """`python -m factory_cli check <file>` for the whole subset, started together (they are import-bound), with
    the registry models the corpus names in a Hugging Face cache (tests/hub_stand_in.py)."""
    cache = cached_registry_models(tmp_path_factory.mktemp("hf-cache"), CORPUS_MODELS)
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", **cache}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "factory_cli", "check", str(BROKEN_DIR / f"{name}.yaml")],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in SUBPROCESS_SUBSET
    }
    runs = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        runs[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return runs


@pytest.mark.parametrize("name", SUBPROCESS_SUBSET)
def test_broken_job_through_the_cli(name: str, cli_runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    job_file = BROKEN_DIR / f"{name}.yaml"
    expected, line = read_expectations(job_file)
    proc = cli_runs[name]
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode == 2, output
    blocks = _issue_blocks(proc.stderr)
    for index, want in enumerate(expected):
        needles = [f"{want.path}: ", _flat(want.message)] + ([_flat(want.hint)] if want.hint else [])
        found = [b for b in blocks if all(n in b for n in needles)]
        assert found, f"expected {want} in stderr:\n{proc.stderr}"
        if index == 0 and line is not None:
            assert any(f"{job_file}:{line} {want.path}: " in b for b in found), proc.stderr
    assert re.search(rf"{len(expected)} problems? — nothing was started", proc.stderr), proc.stderr
