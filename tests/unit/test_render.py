"""`factory config`: every supported backend x stage x method x (model given or not) x (dataset given or not)
renders a fully commented job whose only `***` fields are the expected ones, and which validates once they
are filled in. Unsupported combinations are usage errors that list what is supported."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from factory_cli.config.errors import UsageError
from factory_cli.config.load import PLACEHOLDER, format_path, iter_values
from factory_cli.config.render import (
    BACKEND_METHODS,
    STAGE_DATASETS,
    TemplateChoice,
    render_job,
    resolve_choice,
    yaml_scalar,
)
from factory_cli.config.schema import SUPPORTED_STAGES
from factory_cli.config.validate import load_and_validate

# A registry model small enough for every backend's default parallel sizes (tp = pp = 1).
GIVEN_MODEL = "qwen2.5-0.5b-instruct"
FILLED_MODEL = "smollm2-135m-instruct"
REWARD = "math_answer"
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _SharedBytecode(jinja2.BytecodeCache):
    """Compiled templates kept across renders: render_job builds a fresh Environment per call."""

    def __init__(self) -> None:
        self.store: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        code = self.store.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self.store[bucket.key] = bucket.bytecode_to_string()


@pytest.fixture(scope="module", autouse=True)
def _fast_jinja() -> Iterator[None]:
    # Same templates, same rendering; only the compile step is shared (100+ renders: ~6 s -> ~1 s).
    cache = _SharedBytecode()
    base = jinja2.Environment

    class CachedEnvironment(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("bytecode_cache", cache)
            super().__init__(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jinja2, "Environment", CachedEnvironment)
        yield


def _combinations() -> Iterator[Any]:
    for backend, stages in SUPPORTED_STAGES.items():
        for stage in stages:
            for method in BACKEND_METHODS[backend]:
                for model in (None, GIVEN_MODEL):
                    for dataset in (None, STAGE_DATASETS[stage]):
                        given = f"{'model' if model else 'nomodel'}-{'data' if dataset else 'nodata'}"
                        ident = f"{backend}-{stage}-{method}-{given}"
                        yield pytest.param(backend, stage, method, model, dataset, id=ident)


COMBINATIONS = list(_combinations())
KEY_VALUE = re.compile(r"^\s*(?:-\s+)?[A-Za-z_][\w.]*:\s+\S")
PLACEHOLDER_VALUE = re.compile(r'^(\s*(?:-\s+)?(?:(\w+):\s+)?)"\*\*\*"')


def _render(
    backend: str, stage: str, method: str | None = None, model: str | None = None, dataset: str | None = None
) -> str:
    choice = TemplateChoice(backend=backend, stage=stage, method=method, model=model, dataset=dataset)
    return render_job(resolve_choice(choice))


def _fill_placeholders(text: str, stage: str, run_dir: Path) -> str:
    """Replace each `"***"` value the way a user would."""
    values = {"name_or_path": FILLED_MODEL, "path": STAGE_DATASETS[stage], "dir": str(run_dir), None: REWARD}
    out = []
    for line in text.splitlines():
        match = PLACEHOLDER_VALUE.match(line)
        if match:
            line = match.group(1) + values[match.group(2)] + line[match.end() :]
        out.append(line)
    return "\n".join(out) + "\n"


def _values(text: str) -> dict[str, Any]:
    """The rendered job as plain YAML readers see it (PyYAML's safe loader, no factory-specific resolvers)."""
    data: dict[str, Any] = yaml.load(text, Loader=FAST_LOADER)
    return data


def test_the_matrix_covers_every_supported_combination() -> None:
    assert {(p.values[0], p.values[1]) for p in COMBINATIONS} == {
        (b, s) for b, stages in SUPPORTED_STAGES.items() for s in stages
    }
    assert len(COMBINATIONS) == 4 * sum(len(BACKEND_METHODS[b]) * len(s) for b, s in SUPPORTED_STAGES.items())


@pytest.mark.parametrize(("backend", "stage", "method", "model", "dataset"), COMBINATIONS)
def test_rendered_job(
    backend: str, stage: str, method: str, model: str | None, dataset: str | None, tmp_path: Path
) -> None:
    text = _render(backend, stage, method, model, dataset)

    # Every `key: value` line explains itself.
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if KEY_VALUE.match(line):
            assert " # " in line, f"line {number} has no comment: {line!r}"

    # The *** fields are exactly the ones the user must decide.
    data = _values(text)
    assert data["backend"] == backend
    assert data["stage"] == stage
    assert data["method"]["type"] == method
    expected = {"output.dir"}
    if model is None:
        expected.add("model.name_or_path")
    else:
        assert data["model"]["name_or_path"] == model
    if dataset is None:
        expected.add("data.train[0].path")
    else:
        assert data["data"]["train"][0]["path"] == dataset
    if stage == "grpo":
        expected.add("grpo.rewards[0]")
    assert {format_path(path) for path, value in iter_values(data) if value == PLACEHOLDER} == expected

    # Filled in, the job is valid as is.
    job_file = tmp_path / "job.yaml"
    job_file.write_text(_fill_placeholders(text, stage, tmp_path / "run"), encoding="utf-8")
    validated = load_and_validate(job_file)
    assert validated.job.backend == backend
    assert validated.job.stage == stage
    assert validated.job.method.type == method
    assert validated.job.model.name_or_path == (model or FILLED_MODEL)
    assert validated.job.output.dir == str(tmp_path / "run")
    assert not validated.warnings, validated.warnings


@pytest.mark.parametrize(
    ("backend", "stage", "method", "listed"),
    [
        ("verl", "pt", None, "sft, grpo"),
        ("megatron", "grpo", None, "pt, sft, dpo"),
        ("verl", "dpo", None, "sft, grpo"),
        ("verl", "sft", "qlora", "full, lora"),
        ("megatron", "sft", "qlora", "full, lora"),
        ("megatron", "pt", "freeze", "full, lora"),
    ],
)
def test_unsupported_combination_lists_the_supported_ones(
    backend: str, stage: str, method: str | None, listed: str
) -> None:
    with pytest.raises(UsageError) as info:
        resolve_choice(TemplateChoice(backend=backend, stage=stage, method=method))
    assert listed in (info.value.hint or "")


def test_unsupported_stage_names_the_backends_that_run_it() -> None:
    with pytest.raises(UsageError) as info:
        resolve_choice(TemplateChoice(backend="verl", stage="pt"))
    assert "verl" in info.value.message and "pt" in info.value.message
    assert "deepspeed" in (info.value.hint or "") and "megatron" in (info.value.hint or "")


def test_unknown_backend_and_device_are_usage_errors() -> None:
    with pytest.raises(UsageError) as info:
        resolve_choice(TemplateChoice(backend="deepspeeed"))
    assert "did you mean `deepspeed`?" in (info.value.hint or "")
    with pytest.raises(UsageError) as info:
        resolve_choice(TemplateChoice(backend="deepspeed", device="gpu"))
    assert "cuda" in (info.value.hint or "")


def test_choice_defaults() -> None:
    assert resolve_choice(TemplateChoice()) == TemplateChoice(
        backend="deepspeed", stage="sft", method="lora", device="auto"
    )
    assert resolve_choice(TemplateChoice(backend="verl")).stage == "sft"
    assert resolve_choice(TemplateChoice(backend="megatron", stage="pt")).method == "lora"


@pytest.mark.parametrize(
    ("backend", "stage", "method", "learning_rate"),
    [
        ("deepspeed", "sft", "lora", 1e-4),
        ("deepspeed", "sft", "qlora", 1e-4),
        ("deepspeed", "sft", "full", 1e-5),
        ("deepspeed", "sft", "freeze", 1e-5),
        ("deepspeed", "pt", "full", 1e-4),
        ("deepspeed", "pt", "lora", 2e-4),
        ("deepspeed", "dpo", "full", 1e-6),
        ("deepspeed", "dpo", "lora", 5e-6),
        ("deepspeed", "grpo", "full", 1e-6),
        ("deepspeed", "grpo", "lora", 1e-5),
        ("megatron", "sft", "full", 1e-5),
        ("verl", "grpo", "full", 1e-6),
    ],
)
def test_rendered_learning_rate_is_the_resolved_default(
    backend: str, stage: str, method: str, learning_rate: float
) -> None:
    data = _values(_render(backend, stage, method))
    assert data["train"]["learning_rate"] == pytest.approx(learning_rate)
    assert isinstance(data["train"]["learning_rate"], float)


def test_rendered_values_equal_the_resolved_defaults() -> None:
    sft = _values(_render("deepspeed", "sft", "lora"))
    assert sft["train"]["epochs"] == 3.0
    assert sft["train"]["warmup_ratio"] == pytest.approx(0.03)
    assert sft["train"]["gradient_accumulation_steps"] == 8
    assert sft["data"]["packing"] is False
    assert sft["method"]["lora"]["rank"] == 16
    assert sft["method"]["lora"]["alpha"] == 32
    assert sft["method"]["lora"]["dropout"] == 0.0
    assert sft["train"]["cpu_speedups"] == "auto"

    pt = _values(_render("deepspeed", "pt", "full"))
    assert pt["data"]["packing"] is True
    assert pt["train"]["scheduler"] == "cosine_with_min_lr"
    assert pt["train"]["min_lr_ratio"] == pytest.approx(0.1)

    dpo = _values(_render("deepspeed", "dpo", "lora"))
    assert dpo["dpo"]["beta"] == pytest.approx(0.1)
    assert dpo["dpo"]["loss"] == "sigmoid"
    assert "packing" not in dpo["data"]

    grpo = _values(_render("deepspeed", "grpo", "lora"))
    assert grpo["grpo"]["num_generations"] == 8
    assert grpo["grpo"]["beta"] == pytest.approx(0.04)
    assert grpo["grpo"]["epsilon"] == pytest.approx(0.2)
    assert grpo["grpo"]["epsilon_high"] == pytest.approx(0.2)

    verl = _values(_render("verl", "grpo", "full"))
    assert verl["rollout"]["update_batch_size"] == verl["rollout"]["prompts_per_step"] * 8
    assert "rollout" not in _values(_render("verl", "sft", "full"))

    megatron = _values(_render("megatron", "sft", "full"))
    assert megatron["parallel"]["tp"] == 1
    assert "zero_stage" not in megatron["parallel"]
    assert "tp" not in _values(_render("deepspeed", "sft", "full"))["parallel"]


def test_method_sections_follow_the_method() -> None:
    assert set(_values(_render("deepspeed", "sft", "full"))["method"]) == {"type"}
    assert set(_values(_render("deepspeed", "sft", "lora"))["method"]) == {"type", "lora"}
    assert set(_values(_render("deepspeed", "sft", "qlora"))["method"]) == {"type", "lora", "quant"}
    assert set(_values(_render("deepspeed", "sft", "freeze"))["method"]) == {"type", "freeze"}


def test_given_model_is_described_from_the_registry() -> None:
    text = _render("deepspeed", "sft", model=GIVEN_MODEL)
    line = next(line for line in text.splitlines() if "name_or_path:" in line)
    assert "Qwen/Qwen2.5-0.5B-Instruct" in line


def test_device_option_is_written() -> None:
    assert _values(_render("deepspeed", "sft", "lora"))["device"] == "auto"
    text = render_job(resolve_choice(TemplateChoice(backend="deepspeed", stage="sft", device="cpu")))
    assert _values(text)["device"] == "cpu"


def test_comments_are_aligned() -> None:
    text = _render("deepspeed", "sft", "lora")
    columns = {
        line.index(" # ")
        for line in text.splitlines()
        if KEY_VALUE.match(line) and len(line.split(" # ")[0].rstrip()) < 43
    }
    assert columns == {43}


@pytest.mark.parametrize(
    "value",
    [1e-5, 2e-5, 5e-7, 1e-6, 3e-4, 4e-4, 1e-4, 2.5e-7, 1e6, 1.5e20, 123456789.0, 0.0, 1.0, 0.001, 0.28, -1e-5, 2.0],
)
def test_yaml_scalar_floats_read_back_as_floats(value: float) -> None:
    text = yaml_scalar(value)
    parsed = yaml.safe_load(text)  # plain PyYAML (YAML 1.1) needs a dot and a signed exponent
    assert isinstance(parsed, float), text
    assert parsed == pytest.approx(value)


@pytest.mark.parametrize(("value", "text"), [(1e-5, "1.0e-05"), (5e-7, "5.0e-07"), (2.5e-7, "2.5e-07"), (0.1, "0.1")])
def test_yaml_scalar_float_style(value: float, text: str) -> None:
    assert yaml_scalar(value) == text


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_yaml_scalar_infinity_reads_back(value: float) -> None:
    assert yaml.safe_load(yaml_scalar(value)) == value


def test_yaml_scalar_other_values() -> None:
    assert yaml_scalar(True) == "true"
    assert yaml_scalar(None) == "null"
    assert yaml_scalar(16) == "16"
    assert yaml_scalar(["all"]) == "[all]"
    assert yaml_scalar("***") == '"***"'
    for tricky in ("yes", "no", "on", "1e-5", "null", "a: b", "#x", "12"):
        assert yaml.safe_load(yaml_scalar(tricky)) == tricky


def test_interactive_config_asks_for_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal, `factory config` without options asks (rich prompts) and renders what was chosen."""
    from rich.prompt import Prompt

    from factory_cli.config.render import TemplateChoice, render_job, resolve_choice

    answers = {"backend": "verl", "stage": "grpo", "method": "full"}
    asked: list[str] = []

    def fake_ask(label: str, choices: list[str] | None = None, default: str = "", **_: object) -> str:
        asked.append(label)
        if label in answers:
            assert choices is not None and answers[label] in choices
            return answers[label]
        return "qwen2.5-7b-instruct" if label.startswith("model") else ""

    monkeypatch.setattr(Prompt, "ask", staticmethod(fake_ask))
    choice = resolve_choice(TemplateChoice(), interactive=True)
    assert asked[:3] == ["backend", "stage", "method"]
    assert (choice.backend, choice.stage, choice.method, choice.model, choice.dataset) == (
        "verl",
        "grpo",
        "full",
        "qwen2.5-7b-instruct",
        None,
    )
    text = render_job(choice)
    assert "backend: verl" in text and "name_or_path: qwen2.5-7b-instruct" in text
