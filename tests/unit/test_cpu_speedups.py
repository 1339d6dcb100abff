"""`train.cpu_speedups`: the one switch of factory's CPU speed-ups (factory_cli/accel/cpu) — validated, rendered into
the job templates, resolved with the bf16 base layers, and never imported by a GPU / NPU plan or worker; and the
attention `auto` picks on Ascend for packed rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from factory_cli.backends import check_with_backend
from factory_cli.config.checks import CheckContext, run_checks
from factory_cli.config.defaults import DeviceFacts, resolve_defaults, resolve_device_defaults
from factory_cli.config.errors import JobError
from factory_cli.config.render import TemplateChoice, render_job, resolve_choice
from factory_cli.config.schema import JOB_MODELS, JobBase
from factory_cli.config.validate import load_and_validate
from tests.unit.plan_helpers import EXAMPLES, REPO_ROOT

JOB = """\
backend: deepspeed
stage: sft
device: cpu
model: {name_or_path: smollm2-135m-instruct}
data: {train: [demo-sft-alpaca]}
"""


def _validate(tmp_path: Path, text: str) -> Any:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(text, encoding="utf-8")
    return load_and_validate(job_file, [])


def _job(device: str = "cpu", **sections: Any) -> JobBase:
    raw: dict[str, Any] = {
        "backend": "deepspeed",
        "stage": "sft",
        "device": device,
        "model": {"name_or_path": "smollm2-135m-instruct"},
        "data": {"train": ["demo-sft-alpaca"]},
        "method": {"type": "lora"},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return resolve_defaults(JOB_MODELS["deepspeed"].model_validate(raw))


def test_the_switch_defaults_to_auto_and_takes_a_bare_yaml_off(tmp_path: Path) -> None:
    assert _validate(tmp_path, JOB).job.train.cpu_speedups == "auto"
    assert _validate(tmp_path, JOB + "train: {cpu_speedups: off}\n").job.train.cpu_speedups == "off"
    assert _validate(tmp_path, JOB + "train: {cpu_speedups: 'off'}\n").job.train.cpu_speedups == "off"
    for value in ("on", "true", "fast"):
        with pytest.raises(JobError) as info:
            _validate(tmp_path, JOB + f"train: {{cpu_speedups: {value}}}\n")
        assert [issue.path for issue in info.value.issues] == ["train.cpu_speedups"]


def test_the_switch_is_rendered_with_its_description_for_the_deepspeed_backend() -> None:
    lines = render_job(resolve_choice(TemplateChoice(backend="deepspeed", stage="sft", method="lora"))).splitlines()
    [line] = [line for line in lines if line.strip().startswith("cpu_speedups:")]
    assert line.split("#")[0].split() == ["cpu_speedups:", "auto"]
    assert "factory_cli/accel/cpu" in line and "GPU/NPU runs never load them" in line
    megatron = render_job(resolve_choice(TemplateChoice(backend="megatron", stage="sft", method="full")))
    assert "cpu_speedups" not in megatron


@pytest.mark.parametrize(
    ("facts", "sections", "expected"),
    [
        (DeviceFacts("cpu", cpu_bf16_matmul=True), {}, "bf16"),
        (DeviceFacts("cpu", cpu_bf16_matmul=True), {"train": {"cpu_speedups": "off"}}, "fp32"),
        (DeviceFacts("cuda", bf16=True), {"train": {"precision": "fp32"}}, "fp32"),
    ],
)
def test_bf16_base_layers_are_a_cpu_speedup(facts: DeviceFacts, sections: dict[str, Any], expected: str) -> None:
    job = resolve_device_defaults(_job(facts.kind, **sections), facts)
    assert job.method.lora.base_precision == expected


@pytest.mark.parametrize(
    ("device", "sections", "message"),
    [
        ("cpu", {"train": {"cpu_speedups": "off"}}, "train.cpu_speedups is off"),
        ("cuda", {"train": {"precision": "fp32"}}, "on cuda set train.precision: bf16"),
        ("npu", {}, "on npu set train.precision: bf16"),
    ],
)
def test_explicit_bf16_base_layers_are_refused_where_the_speedups_do_not_run(
    device: str, sections: dict[str, Any], message: str
) -> None:
    job = _job(device, method={"type": "lora", "lora": {"base_precision": "bf16"}}, **sections)
    errors = [i for i in run_checks(job, CheckContext(backend_check=check_with_backend)) if i.severity == "error"]
    assert [(i.path, message in i.message) for i in errors] == [("method.lora.base_precision", True)]


def test_bf16_base_layers_with_device_auto_are_refused_once_the_device_turns_out_a_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from factory_cli import train

    job = _job("auto", method={"type": "lora", "lora": {"base_precision": "bf16"}})
    monkeypatch.setattr(train, "device_facts", lambda requested: DeviceFacts("cuda", bf16=True))
    with pytest.raises(JobError) as refused:
        train.resolved_plan(job, REPO_ROOT)
    assert [i.path for i in refused.value.errors] == ["method.lora.base_precision"]
    assert "on cuda set train.precision: bf16" in refused.value.errors[0].message
    monkeypatch.setattr(train, "device_facts", lambda requested: DeviceFacts("cpu", cpu_bf16_matmul=True))
    resolved, _ = train.resolved_plan(job, REPO_ROOT)
    assert resolved.method.lora.base_precision == "bf16"


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"data": {"packing": True}}, "flash_attention_2"),  # torch_npu's fused varlen attention
        ({"data": {"packing": False}}, "sdpa"),
        ({"data": {"packing": True}, "train": {"precision": "fp32"}}, "sdpa"),  # the fused kernel is 16-bit
    ],
)
def test_attention_auto_on_ascend_runs_packed_rows_through_flash_attention_2(
    sections: dict[str, Any], expected: str
) -> None:
    job = resolve_device_defaults(_job("npu", **sections), DeviceFacts("npu", bf16=True))
    assert job.model.attn_implementation == expected
    cuda = resolve_device_defaults(_job("cuda", **sections), DeviceFacts("cuda", bf16=True, flash_attn=False))
    assert cuda.model.attn_implementation == "sdpa"  # packed rows without flash-attn: transformers' own sdpa path


def test_flash_attention_2_is_accepted_on_ascend_and_flash_attention_3_is_not() -> None:
    def attention_errors(attn: str) -> list[str]:
        job = _job("npu", model={"attn_implementation": attn})
        return [
            i.message
            for i in run_checks(job, CheckContext(backend_check=check_with_backend))
            if i.path == "model.attn_implementation"
        ]

    assert attention_errors("flash_attention_2") == []
    assert attention_errors("flash_attention_3") == ["flash_attention_3 is CUDA-only (Ascend runs flash_attention_2)"]


IMPORT_PROBE = """
import sys
from pathlib import Path

from factory_cli.backends import get_backend
from factory_cli.backends.deepspeed.worker import cpu_speedups
from factory_cli.config.defaults import DeviceFacts, resolve_device_defaults
from factory_cli.config.validate import load_and_validate

for example, kind, *overrides in [line.split() for line in sys.argv[1:]]:
    job = load_and_validate(Path(example), overrides).job
    job = resolve_device_defaults(job, DeviceFacts(kind, bf16=kind != "cpu"))
    plan = get_backend("deepspeed").plan(job, job.device)
    with cpu_speedups(job, plan.engine_config["trainer"]) as speedups:
        print(kind, speedups is not None, "factory_cli.accel" in sys.modules, flush=True)
"""


def test_gpu_and_npu_plans_and_workers_never_import_the_cpu_speedups() -> None:
    sft_lora, pt_full = EXAMPLES / "sft_lora.yaml", EXAMPLES / "pt_full.yaml"
    cases = [
        f"{sft_lora} cuda",
        f"{sft_lora} npu",
        f"{pt_full} npu",
        f"{sft_lora} cpu train.cpu_speedups=off",
        f"{pt_full} cpu",  # the plain Trainer: the hook imports the package, TRL stays untouched
    ]
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, *cases], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        "cuda False False",
        "npu False False",
        "npu False False",
        "cpu False False",
        "cpu True True",
    ]
