"""The YAML loader: line numbers, overrides, placeholders, duplicate keys, float parsing."""

from __future__ import annotations

import pytest

from factory_cli.config.errors import JobError, UsageError
from factory_cli.config.load import (
    apply_overrides,
    find_placeholders,
    format_path,
    load_job_file,
    parse_override,
    parse_yaml_text,
)

TEXT = """\
backend: deepspeed
stage: sft
model:
  name_or_path: smollm2-135m-instruct   # the model
data:
  train:
    - path: demo-sft-alpaca
    - path: "***"                         # *** your dataset file
train:
  learning_rate: 2e-5
"""


def test_lines_and_comments_are_kept() -> None:
    loaded = parse_yaml_text(TEXT, "job.yaml")
    assert loaded.lines[("model", "name_or_path")] == 4
    assert loaded.lines[("data", "train", 1)] == 8
    assert loaded.lines[("data", "train", 1, "path")] == 8
    assert loaded.comments[("model", "name_or_path")] == "the model"
    assert loaded.line_of(("train", "learning_rate", "missing")) == 10


def test_exponent_without_dot_is_a_float() -> None:
    loaded = parse_yaml_text(TEXT, "job.yaml")
    assert loaded.data["train"]["learning_rate"] == pytest.approx(2e-5)
    assert isinstance(loaded.data["train"]["learning_rate"], float)


def test_placeholders_name_the_field_and_quote_the_comment() -> None:
    issues = find_placeholders(parse_yaml_text(TEXT, "job.yaml"))
    assert len(issues) == 1
    assert issues[0].path == "data.train[1].path"
    assert issues[0].line == 8
    assert issues[0].hint == "your dataset file"


def test_duplicate_keys_are_errors() -> None:
    with pytest.raises(JobError) as info:
        parse_yaml_text("train:\n  epochs: 1\n  epochs: 2\n", "job.yaml")
    assert info.value.issues[0].path == "train.epochs"
    assert info.value.issues[0].line == 3


def test_syntax_error_has_line() -> None:
    with pytest.raises(JobError) as info:
        parse_yaml_text("train:\n  epochs: [1, 2\nmodel: x\n", "job.yaml")
    issue = info.value.issues[0]
    assert "not valid YAML" in issue.message
    assert issue.line is not None


def test_top_level_must_be_mapping() -> None:
    with pytest.raises(JobError, match="mapping"):
        parse_yaml_text("- a\n- b\n", "job.yaml")


def test_missing_file_is_usage_error(tmp_path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_job_file(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("train.learning_rate=2e-5", ("train", "learning_rate"), 2e-5),
        ("train.epochs=1", ("train", "epochs"), 1),
        ("method.lora.target=[q_proj,v_proj]", ("method", "lora", "target"), ["q_proj", "v_proj"]),
        ("data.packing=true", ("data", "packing"), True),
        ("output.dir=runs/x", ("output", "dir"), "runs/x"),
        ("data.train.0.path=foo.jsonl", ("data", "train", 0, "path"), "foo.jsonl"),
        ("model.revision=null", ("model", "revision"), None),
    ],
)
def test_parse_override(text: str, path: tuple, value: object) -> None:
    assert parse_override(text) == (path, value)


def test_override_without_equals_is_usage_error() -> None:
    with pytest.raises(UsageError, match=r"key\.path=value"):
        parse_override("train.learning_rate")


def test_overrides_apply_and_are_marked() -> None:
    loaded = apply_overrides(
        parse_yaml_text(TEXT, "job.yaml"), ["train.learning_rate=1e-4", "parallel.nproc_per_node=2"]
    )
    assert loaded.data["train"]["learning_rate"] == pytest.approx(1e-4)
    assert loaded.data["parallel"] == {"nproc_per_node": 2}
    assert loaded.source_of(("train", "learning_rate")) == "command line"
    assert loaded.line_of(("train", "learning_rate")) is None
    assert loaded.source_of(("model", "name_or_path")) == "job.yaml"


def test_override_index_out_of_range() -> None:
    with pytest.raises(UsageError, match="past the end"):
        apply_overrides(parse_yaml_text(TEXT, "job.yaml"), ["data.train.5.path=x"])


def test_format_path() -> None:
    assert format_path(("data", "train", 0, "path")) == "data.train[0].path"
    assert format_path(()) == ""
