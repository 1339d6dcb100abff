"""The gpu_sft benchmark's pure parts: the peak table, MFU, step metrics, the job it writes, its wheel list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench import gpu_sft
from bench.gpu_sft import FULL, QUICK, TOOLS, GpuSftSettings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989.4e12),
        ("NVIDIA H200 NVL", 835e12),
        ("NVIDIA GH200 480GB", 989.4e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA GeForce RTX 4090", None),
        ("", None),
        (None, None),
    ],
)
def test_peak_bf16_flops_by_card_name(name: str | None, peak: float | None) -> None:
    assert gpu_sft.peak_bf16_flops(name) == peak


def test_mfu_is_six_n_tokens_over_the_peak() -> None:
    assert gpu_sft.mfu(1_000_000_000, 10_000, 6e13) == pytest.approx(1.0)
    # Qwen2.5-1.5B (1,543,714,304 parameters, tied embedding once) at 42,730 tokens/s on an H100 SXM: 40%.
    assert gpu_sft.mfu(1_543_714_304, 42_730, 989.4e12) == pytest.approx(0.40, abs=1e-3)


def test_architecture_is_the_registry_entry_and_quick_shrinks_it() -> None:
    full = gpu_sft.architecture_kwargs(FULL)
    assert full == {
        "model_type": "qwen2",
        "num_hidden_layers": 28,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-06,
    }
    quick = gpu_sft.architecture_kwargs(QUICK)
    assert quick["model_type"] == "qwen2" and quick["hidden_size"] == 64 and quick["num_hidden_layers"] == 2
    assert quick["vocab_size"] == 49152  # the SmolLM2 tokenizer's ids all fit


def _record(step: int, tokens_per_second: float, step_time: float, **extra: float) -> dict[str, float]:
    return {"step": step, "loss": 10.0 + step, "tokens_per_second": tokens_per_second, "step_time": step_time, **extra}


def test_steady_metrics_leave_out_the_warm_up_steps() -> None:
    records = [
        _record(1, 100.0, 10.0, peak_memory_allocated_mb=900.0, peak_memory_reserved_mb=1000.0),
        _record(2, 500.0, 2.0),
        _record(3, 900.0, 1.1),
        _record(4, 1000.0, 1.0, peak_memory_allocated_mb=1200.0, peak_memory_reserved_mb=1500.0),
        _record(5, 1100.0, 0.9),
        _record(6, 1050.0, 1.0, peak_memory_allocated_mb=1100.0),
        {"step": 6, "train_runtime": 16.0, "train_loss": 12.0},  # the Trainer's closing record
    ]
    metrics = gpu_sft.steady_metrics(records, warmup_steps=3)
    assert metrics["tokens_per_second"] == 1050.0
    assert metrics["step_seconds"] == 1.0
    assert metrics["tokens_per_step"] == pytest.approx(1000.0)
    assert metrics["peak_memory_allocated_mb"] == 1200.0 and metrics["peak_memory_reserved_mb"] == 1500.0
    assert metrics["final_loss"] == 16.0 and metrics["steps"] == 6.0
    # Fewer steps than the warm-up: all of them; no memory logged (CPU): no memory keys.
    short = gpu_sft.steady_metrics([_record(1, 10.0, 1.0), _record(2, 30.0, 1.0)], warmup_steps=3)
    assert short["tokens_per_second"] == 20.0 and "peak_memory_allocated_mb" not in short
    with pytest.raises(ValueError, match="no step"):
        gpu_sft.steady_metrics([{"step": 1, "train_runtime": 1.0}], warmup_steps=3)


def test_peak_device_memory_is_logged_only_where_a_device_is_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the metrics callback adds to each step's record (and steady_metrics reads back)."""
    import torch

    from factory_cli.devices import peak_memory_mb

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert peak_memory_mb() == {}
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 3 * 2**20)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda: 4 * 2**20)
    assert peak_memory_mb() == {"peak_memory_allocated_mb": 3.0, "peak_memory_reserved_mb": 4.0}


def _model_dir(tmp_path: Path, settings: GpuSftSettings) -> Path:
    """A model directory as `factory check` reads it: config.json only."""
    folder = tmp_path / f"model-{settings.label}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(gpu_sft.architecture_kwargs(settings)))
    return folder


def test_the_full_job_is_full_sft_in_bf16_on_packed_2048_token_rows(tmp_path: Path) -> None:
    job = gpu_sft.factory_job(FULL, tmp_path / "model", gpu_sft.DATA, tmp_path / "run", tmp_path / "cache")
    assert (job["backend"], job["stage"], job["device"]) == ("deepspeed", "sft", "cuda")
    assert job["method"] == {"type": "full"} and job["model"]["dtype"] == "bf16"
    assert job["data"]["packing"] is True and job["data"]["max_length"] == 2048
    train = job["train"]
    assert train["precision"] == "bf16" and train["gradient_checkpointing"] is True
    assert train["fused_kernels"] == "auto" and train["max_steps"] == FULL.steps
    assert train["micro_batch_size"] * train["gradient_accumulation_steps"] == FULL.rows_per_step == 8
    assert job["logging"]["steps"] == 1
    # Enough packed rows for every step: ~45k tokens per copy of the bench data.
    assert FULL.copies * 45_000 >= 1.1 * FULL.steps * FULL.rows_per_step * FULL.max_length


CHECK_SCRIPT = """
import sys
from factory_cli.config.validate import load_and_validate
for path in sys.argv[1:]:
    validated = load_and_validate(path)  # raises on any error
    print(path, validated.job.device, validated.job.train.fused_kernels, len(validated.warnings))
assert "torch" not in sys.modules, "validating a job imported torch"
"""


def test_every_generated_job_validates_without_torch(tmp_path: Path) -> None:
    """factory's own loader, schema and checks accept each tool's job (full and quick), and import no torch."""
    files = []
    for settings in (FULL, QUICK):
        model = _model_dir(tmp_path, settings)
        for tool, change in TOOLS.items():
            if settings.device == "cpu" and tool in gpu_sft.CUDA_ONLY_TOOLS:
                continue
            job = gpu_sft.factory_job(settings, model, gpu_sft.DATA, tmp_path / "run", tmp_path / "cache", **change)
            path = tmp_path / f"{settings.label}-{tool}.yaml"
            path.write_text(yaml.safe_dump(job, sort_keys=False))
            files.append(str(path))
    out = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT, *files], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(files)
    assert all(line.split()[1:] == ["cuda", "auto", "0"] for line in lines if "full-factory.yaml" in line)
    assert any("full-factory_no_liger.yaml cuda False 0" in line for line in lines)
    assert any("full-factory_flex.yaml cuda auto 0" in line for line in lines)
    assert all(" cpu " in line for line in lines if "quick-" in line)


# ----------------------------------------------------------------------------------------------- wheels


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / ".ci" / "constraints.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_wheel_list_is_pinned_and_matches_the_constraints() -> None:
    wanted = gpu_sft.wheel_requirements(gpu_sft.WHEELS_FILE.read_text())
    names = [name.lower().replace("_", "-") for name, _, _ in wanted]
    assert len(names) == len(set(names))
    assert all(version for _, version, _ in wanted)
    pins = _constraints()
    for name, version, _ in wanted:
        key = name.lower().replace("_", "-")
        if key in pins:
            assert version == pins[key], f"{name}: {version} here, {pins[key]} in .ci/constraints.txt"
    # What the CUDA machine lacks, and never torch itself (its CUDA build is the machine's).
    for needed in ("pydantic", "trl", "datasets", "dill", "multiprocess", "xxhash", "transformers", "liger-kernel"):
        assert needed in names
    assert "torch" not in names and "triton" not in names
    assert {name for name, _, only_if_missing in wanted if only_if_missing} == {"pandas", "python-dateutil", "six"}


def test_wheel_files_are_found_by_normalized_name(tmp_path: Path) -> None:
    for filename in (
        "pydantic_core-2.50.4-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "charset_normalizer-3.5.2-cp312-cp312-manylinux_2_28_x86_64.whl",
        "pygments-2.21.0-py3-none-any.whl",
        "pygments-2.20.0-py3-none-any.whl",
    ):
        (tmp_path / filename).write_bytes(b"")
    assert gpu_sft.wheel_file(tmp_path, "pydantic_core", "2.50.4") is not None
    assert gpu_sft.wheel_file(tmp_path, "charset-normalizer", "3.5.2") is not None
    found = gpu_sft.wheel_file(tmp_path, "Pygments", "2.21.0")
    assert found is not None and found.name.startswith("pygments-2.21.0-")
    assert gpu_sft.wheel_file(tmp_path, "pandas", "3.1.1") is None


def test_if_missing_wheels_are_skipped_where_the_package_is_installed(tmp_path: Path) -> None:
    spec = tmp_path / "wheels.txt"
    spec.write_text("# comment\nPyYAML==6.0.3  # if-missing\nnot-a-package-here==1.0  # if-missing\nrich==15.0.0\n")
    for filename in ("pyyaml-6.0.3-cp312-cp312-manylinux_2_28_x86_64.whl", "rich-15.0.0-py3-none-any.whl"):
        (tmp_path / filename).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"not-a-package-here==1\.0"):
        gpu_sft.wheels_to_install(tmp_path, spec)
    (tmp_path / "not_a_package_here-1.0-py3-none-any.whl").write_bytes(b"")
    chosen = [path.name for path in gpu_sft.wheels_to_install(tmp_path, spec)]
    assert chosen == ["not_a_package_here-1.0-py3-none-any.whl", "rich-15.0.0-py3-none-any.whl"]


def test_a_quick_run_refuses_cuda_only_tools() -> None:
    """FlexAttention has no backward on the CPU: `--quick` says so before building anything."""
    with pytest.raises(ValueError, match="CUDA only"):
        gpu_sft.run(runs=1, quick=True, tools=["factory", "factory_flex"])
