"""A dataset weight that no code would read is refused at its YAML line, with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory_cli.config.errors import Issue, JobError
from factory_cli.config.validate import load_and_validate

JOB = """\
backend: deepspeed
stage: sft
device: cpu
model:
  name_or_path: smollm2-135m-instruct
data:
  train:
    - path: demo-sft-alpaca
      weight: 3
    - demo-sft-sharegpt
"""


def issues_of(text: str, tmp_path: Path) -> list[Issue]:
    (tmp_path / "job.yaml").write_text(text, encoding="utf-8")
    try:
        checked = load_and_validate(tmp_path / "job.yaml", ())
    except JobError as exc:
        return [i for i in exc.errors if ".weight" in i.path]
    return [i for i in checked.warnings if ".weight" in i.path]


def test_a_weight_with_concat_is_refused(tmp_path: Path) -> None:
    (issue,) = issues_of(JOB, tmp_path)
    assert issue.path == "data.train[0].weight" and issue.line == 9 and issue.severity == "error"
    assert "only when data.mix.strategy is interleave (it is concat" in issue.message
    assert issue.hint is not None and "data.mix.strategy: interleave" in issue.hint


def test_a_weight_with_interleave_is_read(tmp_path: Path) -> None:
    assert issues_of(JOB + "  mix:\n    strategy: interleave\n", tmp_path) == []


@pytest.mark.parametrize(
    ("text", "severity", "words"),
    [
        (JOB.replace("    - demo-sft-sharegpt\n", "") + "  mix: {strategy: interleave}\n", "warning", "one train"),
        (
            JOB.replace("      weight: 3\n", "") + "  eval:\n    - path: demo-sft-sharegpt\n      weight: 2\n",
            "error",
            "eval datasets are not mixed",
        ),
    ],
)
def test_a_weight_nothing_weighs_is_reported(tmp_path: Path, text: str, severity: str, words: str) -> None:
    (issue,) = issues_of(text, tmp_path)
    assert issue.severity == severity and words in issue.message
