"""Schema, defaults and checks, in-process: stage/method defaults, device defaults, batch derivation,
range warnings, every error reported at once, overrides validated like the file, the backend registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from factory_cli.backends import backend_names, check_with_backend, get_backend
from factory_cli.config.checks import CheckContext, check_batch, check_ranges, divides, run_checks
from factory_cli.config.defaults import (
    STAGE_DEFAULTS,
    DeviceFacts,
    data_parallel_size,
    model_short_name,
    resolve_defaults,
    resolve_device_defaults,
    usual_lr,
)
from factory_cli.config.errors import Issue, JobError, UsageError
from factory_cli.config.load import LoadedJob, parse_yaml_text
from factory_cli.config.schema import (
    JOB_MODELS,
    SUPPORTED_STAGES,
    DeepSpeedJob,
    JobBase,
    LoraConfig,
    MegatronJob,
    RewardSpec,
    TrainSection,
    VerlJob,
)
from factory_cli.config.validate import gate_sections, load_and_validate, validate_loaded
from tests.unit.plan_helpers import EXAMPLES

STAGE_DATA = {"pt": "demo-pt", "sft": "demo-sft-alpaca", "dpo": "demo-dpo", "grpo": "demo-grpo-math"}


def make_job(backend: str = "deepspeed", stage: str = "sft", **sections: Any) -> JobBase:
    """A schema-valid job with the given sections (defaults not yet resolved)."""
    raw: dict[str, Any] = {
        "backend": backend,
        "stage": stage,
        "device": "cpu" if backend == "deepspeed" else "cuda",
        "model": {"name_or_path": "smollm2-135m-instruct" if backend == "deepspeed" else "qwen2.5-7b-instruct"},
        "data": {"train": [STAGE_DATA[stage]]},
    }
    if stage == "grpo":
        raw["grpo"] = {"rewards": ["math_answer"]}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return JOB_MODELS[backend].model_validate(raw)


def resolved(backend: str = "deepspeed", stage: str = "sft", **sections: Any) -> JobBase:
    return resolve_defaults(make_job(backend, stage, **sections))


def validate_text(text: str, tmp_path: Path, overrides: tuple[str, ...] = ()) -> Any:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(text, encoding="utf-8")
    return load_and_validate(job_file, overrides)


def errors_of(text: str, tmp_path: Path, overrides: tuple[str, ...] = ()) -> list[Issue]:
    with pytest.raises(JobError) as info:
        validate_text(text, tmp_path, overrides)
    return info.value.errors


BASE = """\
backend: deepspeed
stage: sft
device: cpu
model:
  name_or_path: smollm2-135m-instruct
data:
  train: [demo-sft-alpaca]
"""


# ------------------------------------------------------------------------------------------------ schema


def test_supported_stages_match_the_backends() -> None:
    assert set(backend_names()) == set(SUPPORTED_STAGES) == set(JOB_MODELS)
    for name in backend_names():
        backend = get_backend(name)
        assert backend.name == name
        assert backend.stages == frozenset(SUPPORTED_STAGES[name])
        assert backend.install_extra


def test_sections_are_frozen_and_closed() -> None:
    job = make_job()
    with pytest.raises(ValidationError):
        job.train.epochs = 2  # type: ignore[misc]
    with pytest.raises(ValidationError):
        TrainSection.model_validate({"lerning_rate": 1e-4})


def test_job_models_per_backend() -> None:
    assert isinstance(make_job("deepspeed"), DeepSpeedJob)
    assert isinstance(make_job("megatron", method={"type": "full"}), MegatronJob)
    assert isinstance(make_job("verl", "grpo"), VerlJob)
    with pytest.raises(ValidationError):
        make_job("deepspeed", parallel={"tp": 2})


def test_short_forms() -> None:
    assert RewardSpec.model_validate("math_answer").name == "math_answer"
    assert RewardSpec.model_validate("rewards/mine.py:score").function == "rewards/mine.py:score"
    assert RewardSpec.model_validate("rewards/mine.py").function == "rewards/mine.py"
    assert RewardSpec.model_validate("rewards/mine.py:score").label == "score"
    assert LoraConfig.model_validate({"target": "q_proj, v_proj"}).target == ["q_proj", "v_proj"]
    job = make_job(data={"train": "demo-sft-alpaca"})
    assert [spec.path for spec in job.data.train] == ["demo-sft-alpaca"]


def test_env_values_become_text() -> None:
    job = make_job(env={"A": 1, "B": True, "C": None, "D": "x"})
    assert job.env == {"A": "1", "B": "true", "C": "", "D": "x"}


def test_world_size() -> None:
    job = make_job("megatron", method={"type": "full"}, parallel={"nnodes": 2, "nproc_per_node": 8, "tp": 4, "pp": 2})
    assert job.parallel.world_size == 16  # type: ignore[attr-defined]
    assert data_parallel_size(job) == 2
    assert data_parallel_size(make_job(parallel={"nnodes": 2, "nproc_per_node": 4})) == 8


# ------------------------------------------------------------------------------------------------ defaults


@pytest.mark.parametrize(
    ("stage", "method", "learning_rate"),
    [
        ("pt", "full", 1e-4),
        ("pt", "lora", 2e-4),
        ("sft", "full", 1e-5),
        ("sft", "freeze", 1e-5),
        ("sft", "lora", 1e-4),
        ("sft", "qlora", 1e-4),
        ("dpo", "full", 1e-6),
        ("dpo", "lora", 5e-6),
        ("grpo", "full", 1e-6),
        ("grpo", "lora", 1e-5),
    ],
)
def test_learning_rate_table(stage: str, method: str, learning_rate: float) -> None:
    job = resolved(stage=stage, method={"type": method})
    assert job.train.learning_rate == pytest.approx(learning_rate)
    default, low, high = usual_lr(job)
    assert default == pytest.approx(learning_rate)
    assert low <= default <= high


@pytest.mark.parametrize(
    ("stage", "epochs", "warmup", "packing", "scheduler", "beta2"),
    [
        ("pt", 1.0, 0.01, True, "cosine_with_min_lr", 0.95),
        ("sft", 3.0, 0.03, False, "cosine", 0.999),
        ("dpo", 1.0, 0.1, False, "cosine", 0.999),
        ("grpo", 1.0, 0.0, False, "cosine", 0.999),
    ],
)
def test_stage_defaults(stage: str, epochs: float, warmup: float, packing: bool, scheduler: str, beta2: float) -> None:
    job = resolved(stage=stage)
    assert job.train.epochs == epochs
    assert job.train.warmup_ratio == pytest.approx(warmup)
    assert job.data.packing is packing
    assert job.train.scheduler == scheduler
    assert job.train.adam_beta2 == pytest.approx(beta2)
    assert job.train.weight_decay == pytest.approx(STAGE_DEFAULTS[stage].weight_decay)


def test_explicit_values_win_over_defaults() -> None:
    job = resolved(
        stage="pt", train={"learning_rate": 3e-5, "warmup_ratio": 0.2, "scheduler": "linear"}, data={"packing": False}
    )
    assert job.train.learning_rate == pytest.approx(3e-5)
    assert job.train.warmup_ratio == pytest.approx(0.2)
    assert job.train.scheduler == "linear"
    assert job.data.packing is False


def test_max_steps_leaves_epochs_unset() -> None:
    job = resolved(train={"max_steps": 100})
    assert job.train.max_steps == 100
    assert job.train.epochs is None


def test_lora_alpha_is_twice_the_rank() -> None:
    assert resolved(method={"type": "lora", "lora": {"rank": 8}}).method.lora.alpha == 16
    assert resolved(method={"type": "qlora", "lora": {"rank": 64}}).method.lora.alpha == 128
    assert resolved(method={"type": "lora", "lora": {"rank": 8, "alpha": 8}}).method.lora.alpha == 8


def test_dpo_section_is_filled_for_stage_dpo() -> None:
    job = resolved(stage="dpo")
    assert job.dpo is not None
    assert job.dpo.beta == pytest.approx(0.1)
    assert job.dpo.loss == "sigmoid"
    assert resolved(stage="sft").dpo is None


def test_dpo_max_prompt_length_is_refused_with_the_reason(tmp_path: Path) -> None:
    """No DPO engine limits the prompt alone (TRL 1.16's DPOConfig has max_length only): refused, never ignored."""
    text = BASE.replace("stage: sft", "stage: dpo").replace("demo-sft-alpaca", "demo-dpo")
    text += "dpo:\n  beta: 0.2\n  max_prompt_length: 256\n"
    (issue,) = errors_of(text, tmp_path)
    assert (issue.path, issue.line) == ("dpo", 8)
    assert issue.message.startswith("dpo.max_prompt_length is not supported")
    assert "data.max_length" in issue.message and "remove it" in issue.message
    with pytest.raises(ValidationError, match=r"dpo\.max_prompt_length is not supported"):
        make_job("megatron", "dpo", dpo={"max_prompt_length": 256})
    assert "max_prompt_length" not in resolved(stage="dpo").model_dump()["dpo"]


def test_output_dir_default_names_stage_and_model() -> None:
    assert resolved().output.dir == "runs/sft-smollm2-135m-instruct"
    assert model_short_name("Qwen/Qwen2.5-7B-Instruct") == "qwen2.5-7b-instruct"
    assert model_short_name("/models/x/model.gguf") == "model"


def _grpo(loss: str, **grpo: Any) -> Any:
    job = resolved(stage="grpo", grpo={"loss": loss, "rewards": ["math_answer"], **grpo})
    assert job.grpo is not None
    return job.grpo


def test_grpo_defaults() -> None:
    grpo = _grpo("grpo")
    assert grpo.num_generations == 8
    assert grpo.beta == pytest.approx(0.04)
    assert grpo.epsilon == pytest.approx(0.2)
    assert grpo.epsilon_high == pytest.approx(0.2)
    assert grpo.dynamic_sampling is False
    assert grpo.mask_truncated_completions is False


def test_dapo_defaults() -> None:
    grpo = _grpo("dapo", max_completion_length=1024)
    assert grpo.epsilon == pytest.approx(0.2)
    assert grpo.epsilon_high == pytest.approx(0.28)
    assert grpo.dynamic_sampling is True
    assert grpo.mask_truncated_completions is True
    assert grpo.beta == 0.0
    assert grpo.overlong.buffer_length == 256


def test_gspo_defaults() -> None:
    grpo = _grpo("gspo")
    assert grpo.epsilon == pytest.approx(3e-4)
    assert grpo.epsilon_high == pytest.approx(4e-4)
    assert grpo.beta == 0.0
    explicit = _grpo("gspo", epsilon=1e-3)
    assert explicit.epsilon == pytest.approx(1e-3)
    assert explicit.epsilon_high == pytest.approx(1e-3)


def test_dr_grpo_defaults() -> None:
    grpo = _grpo("dr_grpo")
    assert grpo.beta == 0.0
    assert grpo.epsilon_high == pytest.approx(grpo.epsilon)
    assert grpo.dynamic_sampling is False


def test_explicit_grpo_values_are_kept() -> None:
    grpo = _grpo("dapo", beta=0.01, epsilon_high=0.3, dynamic_sampling=False, overlong={"buffer_length": 0})
    assert grpo.beta == pytest.approx(0.01)
    assert grpo.epsilon_high == pytest.approx(0.3)
    assert grpo.dynamic_sampling is False
    assert grpo.overlong.buffer_length == 0


def test_verl_update_batch_defaults_to_one_step() -> None:
    job = resolved(
        "verl", "grpo", rollout={"prompts_per_step": 16}, grpo={"num_generations": 4, "rewards": ["math_answer"]}
    )
    assert job.rollout.update_batch_size == 64  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------ device defaults


def test_cpu_device_defaults() -> None:
    job = resolve_device_defaults(resolved(), DeviceFacts("cpu", bf16=True, flash_attn=True, liger=True))
    assert job.device == "cpu"
    assert job.train.precision == "fp32"
    assert job.model.dtype == "fp32"
    assert job.train.gradient_checkpointing is False
    assert job.model.attn_implementation == "sdpa"
    assert job.train.fused_kernels is False


@pytest.mark.parametrize(
    ("facts", "sections", "expected"),
    [
        (DeviceFacts("cpu", cpu_bf16_matmul=True), {}, "bf16"),
        (DeviceFacts("cpu", cpu_bf16_matmul=False), {}, "fp32"),
        (DeviceFacts("cuda", bf16=True, cpu_bf16_matmul=True), {}, "fp32"),
        (DeviceFacts("cpu", cpu_bf16_matmul=True), {"parallel": {"nproc_per_node": 2}}, "fp32"),
        (DeviceFacts("cpu", cpu_bf16_matmul=True), {"parallel": {"zero_stage": 2}}, "fp32"),
        (DeviceFacts("cpu", cpu_bf16_matmul=True), {"train": {"precision": "bf16"}}, "fp32"),
        (DeviceFacts("cpu", cpu_bf16_matmul=True), {"method": {"type": "lora", "lora": {"use_dora": True}}}, "fp32"),
        (DeviceFacts("cpu", cpu_bf16_matmul=True), {"method": {"type": "qlora"}}, "fp32"),
        (DeviceFacts("cpu"), {"method": {"type": "lora", "lora": {"base_precision": "bf16"}}}, "bf16"),
    ],
)
def test_lora_base_precision_is_bf16_only_on_a_single_cpu_process_with_bf16_matmul(
    facts: DeviceFacts, sections: dict[str, Any], expected: str
) -> None:
    sections = {"method": {"type": "lora"}, **sections}
    job = resolve_device_defaults(resolved(**sections), facts)
    assert job.method.lora.base_precision == expected


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16", "amx_bf16"),  # Xeon Sapphire Rapids
        ("fpu sse avx2 avx512f avx512_bf16 avx512_vnni", "avx512_bf16"),  # AMD Zen 4 / 5, Xeon Cooper Lake
        ("fpu sse avx2 avx512f avx512_vnni", None),  # Ice Lake: no bf16 dot products
        ("fpu sse avx2 fma", None),
        ("", None),  # /proc/cpuinfo not readable
    ],
)
def test_bf16_matmul_flag_of_a_cpu(flags: str, expected: str | None) -> None:
    from factory_cli.devices import cpu_bf16_matmul_flag

    assert cpu_bf16_matmul_flag(frozenset(flags.split())) == expected


def test_cuda_bf16_device_defaults() -> None:
    job = resolve_device_defaults(resolved(), DeviceFacts("cuda", bf16=True, flash_attn=False))
    assert job.train.precision == "bf16"
    assert job.model.dtype == "bf16"
    assert job.train.gradient_checkpointing is True
    assert job.model.attn_implementation == "sdpa"
    with_kernels = resolve_device_defaults(resolved(), DeviceFacts("cuda", bf16=True, flash_attn=True, liger=True))
    assert with_kernels.model.attn_implementation == "flash_attention_2"
    assert with_kernels.train.fused_kernels is True


def test_cuda_without_bf16_uses_fp16() -> None:
    job = resolve_device_defaults(resolved(), DeviceFacts("cuda", bf16=False, flash_attn=True))
    assert job.train.precision == "fp16"
    assert job.model.attn_implementation == "flash_attention_2"


def test_npu_device_defaults() -> None:
    job = resolve_device_defaults(resolved(), DeviceFacts("npu", bf16=True, flash_attn=True, liger=True))
    assert job.train.precision == "bf16"
    assert job.model.attn_implementation == "sdpa"
    assert job.train.gradient_checkpointing is True
    assert job.train.fused_kernels is False


def test_explicit_device_settings_are_kept() -> None:
    job = resolved(
        train={"precision": "fp32", "gradient_checkpointing": True},
        model={"dtype": "bf16", "attn_implementation": "eager"},
    )
    job = resolve_device_defaults(job, DeviceFacts("cuda", bf16=True, flash_attn=True))
    assert job.train.precision == "fp32"
    assert job.train.gradient_checkpointing is True
    assert job.model.dtype == "bf16"
    assert job.model.attn_implementation == "eager"


def test_qlora_compute_dtype_follows_the_device() -> None:
    job = resolved(method={"type": "qlora"})
    assert resolve_device_defaults(job, DeviceFacts("cpu")).method.quant.compute_dtype == "fp32"
    assert resolve_device_defaults(job, DeviceFacts("cuda", bf16=True)).method.quant.compute_dtype == "bf16"


# ------------------------------------------------------------------------------------------------ batch


def test_accumulation_derived_from_global_batch() -> None:
    job = resolved(train={"micro_batch_size": 2, "global_batch_size": 32})
    assert job.train.gradient_accumulation_steps == 16
    job = resolved(train={"micro_batch_size": 2, "global_batch_size": 32}, parallel={"nproc_per_node": 4})
    assert job.train.gradient_accumulation_steps == 4


def test_global_batch_derived_from_accumulation() -> None:
    job = resolved(train={"micro_batch_size": 4}, parallel={"nproc_per_node": 2})
    assert job.train.gradient_accumulation_steps == 8
    assert job.train.global_batch_size == 64
    job = resolved(train={"micro_batch_size": 2, "gradient_accumulation_steps": 3})
    assert job.train.global_batch_size == 6


def test_megatron_global_batch_counts_only_data_parallel_ranks() -> None:
    job = resolved(
        "megatron",
        "pt",
        method={"type": "full"},
        train={"global_batch_size": 64},
        parallel={"nnodes": 2, "nproc_per_node": 8, "tp": 4, "pp": 2},
    )
    assert job.train.gradient_accumulation_steps == 32


def test_batch_checks() -> None:
    ctx = CheckContext()
    assert list(check_batch(resolved(train={"global_batch_size": 16, "micro_batch_size": 2}), ctx)) == []
    bad = resolved(train={"global_batch_size": 10, "micro_batch_size": 4})
    (issue,) = check_batch(bad, ctx)
    assert issue.path == "train.global_batch_size" and issue.hint == "use 8 or 12"
    inconsistent = resolved(train={"global_batch_size": 10, "gradient_accumulation_steps": 4})
    (issue,) = check_batch(inconsistent, ctx)
    assert "10 != micro 1 x data-parallel 1 x accumulation 4 = 4" in issue.message


def test_divides_lists_the_valid_sizes() -> None:
    assert list(divides("parallel.tp", "tp", 4, 28, "attention heads")) == []
    assert list(divides("parallel.tp", "tp", 1, 7, "attention heads")) == []
    (issue,) = divides("parallel.tp", "tp", 3, 28, "attention heads")
    assert issue.hint == "valid sizes: [1, 2, 4, 7, 14, 28]"


# ------------------------------------------------------------------------------------------------ warnings


@pytest.mark.parametrize(
    ("method", "learning_rate"),
    [("lora", 1e-2), ("lora", 1e-6), ("full", 1e-3), ("full", 1e-8)],
)
def test_learning_rate_far_outside_the_range_is_a_warning(method: str, learning_rate: float, tmp_path: Path) -> None:
    text = BASE + f"method:\n  type: {method}\ntrain:\n  learning_rate: {learning_rate}\n"
    validated = validate_text(text, tmp_path)  # not an error
    (warning,) = [w for w in validated.warnings if w.path == "train.learning_rate"]
    assert warning.severity == "warning"
    assert "far outside the usual range" in warning.message
    assert warning.line == 11


@pytest.mark.parametrize("learning_rate", [1e-4, 2e-4, 3e-5, 1.5e-3])
def test_learning_rate_inside_ten_times_the_range_is_quiet(learning_rate: float) -> None:
    job = resolved(train={"learning_rate": learning_rate})
    assert [i for i in check_ranges(job, CheckContext()) if i.path == "train.learning_rate"] == []


def test_other_range_warnings() -> None:
    job = resolved(stage="dpo", train={"warmup_ratio": 0.5, "max_grad_norm": 0}, dpo={"beta": 5.0})
    paths = {i.path for i in check_ranges(job, CheckContext())}
    assert {"train.warmup_ratio", "train.max_grad_norm", "dpo.beta"} <= paths
    assert all(i.severity == "warning" for i in check_ranges(job, CheckContext()))


def test_valid_job_has_no_issues() -> None:
    issues = run_checks(resolved(), CheckContext(base_dirs=(Path.cwd(),), backend_check=check_with_backend))
    assert issues == []


def test_backend_checks_come_by_injection_and_config_never_imports_backends() -> None:
    """backends/ sits above config/: the backend registry's checks reach run_checks through the CheckContext."""
    import subprocess
    import sys

    seen: list[str] = []
    job = resolved(train={"micro_batch_size": 3})
    run_checks(job, CheckContext(backend_check=lambda job, ctx: seen.append(job.backend) or []))
    assert seen == ["deepspeed"]
    with pytest.raises(ValueError, match="backend_check"):
        run_checks(job, CheckContext())
    code = (
        "import sys, factory_cli.config.checks, factory_cli.config.defaults\n"
        "assert not [m for m in sys.modules if m.startswith('factory_cli.backends')], sorted(sys.modules)"
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------------------------ all at once


def test_five_schema_errors_are_reported_together(tmp_path: Path) -> None:
    text = BASE.replace("device: cpu", "device: gpu") + (
        "method:\n  type: full\n  lora:\n    rank: 8\ntrain:\n  lerning_rate: 1e-4\n  epochs: -1\nparallel:\n  tp: 2\n"
    )
    errors = errors_of(text, tmp_path)
    assert sorted(i.path for i in errors) == sorted(
        ["device", "method.lora", "train.lerning_rate", "train.epochs", "parallel.tp"]
    )
    assert [i.line for i in errors] == sorted(i.line for i in errors if i.line is not None)  # in file order


def test_five_check_errors_are_reported_together(tmp_path: Path) -> None:
    text = BASE.replace("[demo-sft-alpaca]", "[no_such_data.jsonl]").replace(
        "  name_or_path: smollm2-135m-instruct\n", "  name_or_path: smollm2-135m-instruct\n  template: chatmlx\n"
    ) + ("train:\n  precision: fp16\n  micro_batch_size: 4\n  global_batch_size: 30\noutput:\n  resume: runs/nowhere\n")
    errors = errors_of(text, tmp_path)
    assert sorted(i.path for i in errors) == sorted(
        ["model.template", "data.train[0].path", "train.precision", "train.global_batch_size", "output.resume"]
    )
    assert all(i.line is not None and i.source == str(tmp_path / "job.yaml") for i in errors)


def test_gate_reports_backend_and_stage_problems_together() -> None:
    issues = gate_sections({"backend": "verl", "stage": "pt", "dpo": {}, "method": {"type": "full", "lora": {}}})
    assert [i.path for i in issues] == ["stage", "dpo", "method.lora"]


def test_validation_without_checks_skips_files(tmp_path: Path) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(BASE.replace("[demo-sft-alpaca]", "[no_such_data.jsonl]"))
    assert load_and_validate(job_file, checks=False).job.data.train[0].path == "no_such_data.jsonl"
    with pytest.raises(JobError):
        load_and_validate(job_file)


def test_missing_job_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        load_and_validate(tmp_path / "missing.yaml")
    assert "job file not found" in info.value.message


# ------------------------------------------------------------------------------------------------ overrides


def test_override_changes_the_value(tmp_path: Path) -> None:
    validated = validate_text(BASE, tmp_path, ("train.learning_rate=2e-5", "data.max_length=1024", "method.type=full"))
    assert validated.job.train.learning_rate == pytest.approx(2e-5)
    assert validated.job.data.max_length == 1024
    assert validated.job.method.type == "full"


def test_override_with_a_bad_type_names_the_command_line(tmp_path: Path) -> None:
    (issue,) = errors_of(BASE, tmp_path, ("train.epochs=abc",))
    assert issue.path == "train.epochs"
    assert issue.source == "command line"
    assert issue.line is None
    assert "valid number" in issue.message


def test_override_typo_gets_did_you_mean(tmp_path: Path) -> None:
    (issue,) = errors_of(BASE, tmp_path, ("train.lerning_rate=1e-4",))
    assert issue.path == "train.lerning_rate"
    assert issue.hint == "did you mean `learning_rate`?"
    assert issue.source == "command line"


def test_override_goes_through_the_same_checks(tmp_path: Path) -> None:
    (issue,) = errors_of(BASE, tmp_path, ("train.precision=fp16",))
    assert issue.path == "train.precision" and issue.source == "command line"
    (issue,) = errors_of(BASE, tmp_path, ("parallel.tp=2",))
    assert "megatron" in issue.message
    (issue,) = errors_of(BASE, tmp_path, ("train.epochs=-1",))
    assert issue.path == "train.epochs" and "greater than 0" in issue.message


def test_override_can_fix_the_file(tmp_path: Path) -> None:
    text = BASE + 'train:\n  epochs: -1\noutput:\n  dir: "***"\n'
    assert {i.path for i in errors_of(text, tmp_path)} == {"train.epochs", "output.dir"}
    validated = validate_text(text, tmp_path, ("train.epochs=1", f"output.dir={tmp_path / 'run'}"))
    assert validated.job.train.epochs == 1


def test_override_placeholder_is_an_error(tmp_path: Path) -> None:
    (issue,) = errors_of(BASE, tmp_path, ("output.dir=***",))
    assert issue.path == "output.dir" and "placeholder" in issue.message and issue.source == "command line"


def test_override_into_a_list(tmp_path: Path) -> None:
    # Replace item 0, append item 1 (the index just past the end).
    validated = validate_text(BASE, tmp_path, ("data.train.0=demo-sft-sharegpt", "data.train.1=demo-sft-messages"))
    assert [d.path for d in validated.job.data.train] == ["demo-sft-sharegpt", "demo-sft-messages"]
    with pytest.raises(UsageError):
        validate_text(BASE, tmp_path, ("data.train.5=demo-sft-messages",))


def test_override_deeper_than_the_bad_value_names_the_command_line(tmp_path: Path) -> None:
    # `train.epochs.x=1` turns train.epochs into a mapping: the error is about train.epochs, and it came from
    # the command line, not from the file (which has no train section at all).
    (issue,) = errors_of(BASE, tmp_path, ("train.epochs.x=1",))
    assert issue.path == "train.epochs"
    assert issue.source == "command line"


def test_validate_loaded_from_text() -> None:
    loaded: LoadedJob = parse_yaml_text(BASE, "inline.yaml")
    validated = validate_loaded(loaded, checks=False)
    assert validated.job.stage == "sft"


EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def test_the_examples_are_found_from_the_repository_not_the_working_directory() -> None:
    backends = {load_and_validate(p, checks=False).job.backend for p in EXAMPLE_FILES}
    assert len(EXAMPLE_FILES) >= 10 and backends == set(SUPPORTED_STAGES)


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_resolved_job_dumps_and_loads_back_unchanged(
    example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """job.yaml in a run directory is the resolved job, and it must validate as is (reproducible)."""
    from factory_cli.config.dump import job_to_yaml

    monkeypatch.chdir(tmp_path)  # nothing here may depend on where pytest was started
    job = load_and_validate(example).job
    if job.backend == "deepspeed":
        job = resolve_device_defaults(job, DeviceFacts("cpu"))
    text = job_to_yaml(job)
    again = validate_loaded(parse_yaml_text(text, "job.yaml"), checks=False).job
    assert again == job


def test_more_processes_on_a_resolved_job_name_the_settings_that_agree(tmp_path: Path) -> None:
    """A run's job.yaml holds both global_batch_size and gradient_accumulation_steps; overriding the process count
    there is refused with the two settings that would agree, not with advice to remove a field the user never set."""
    from factory_cli.config.dump import job_to_yaml

    job = load_and_validate(EXAMPLES / "sft_lora.yaml", ["train.micro_batch_size=2"]).job
    resolved = tmp_path / "job.yaml"
    resolved.write_text(job_to_yaml(job), encoding="utf-8")
    accumulation, global_batch = job.train.gradient_accumulation_steps, job.train.global_batch_size
    assert accumulation is not None and global_batch == 2 * accumulation
    with pytest.raises(JobError) as refused:
        load_and_validate(resolved, ["parallel.nproc_per_node=2"])
    (issue,) = refused.value.issues
    assert issue.path == "train.global_batch_size" and issue.hint is not None
    assert f"train.global_batch_size={4 * accumulation}" in issue.hint
    if accumulation % 2 == 0:
        assert f"train.gradient_accumulation_steps={accumulation // 2}" in issue.hint
