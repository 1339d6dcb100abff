"""`factory export` planning: pure (no torch), every refusal a UsageError, the W4A16 group size from layer widths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from factory_cli.config.errors import UsageError
from factory_cli.export import ExportRequest, plan_export
from factory_cli.export.gguf_converter import CONVERTER, converter_command, find_converter
from factory_cli.export.quantize import (
    MIN_GROUP_SIZE,
    calibration_source,
    choose_group_size,
    linear_in_features_from_config,
)
from factory_cli.export.request import shard_size_bytes

# SmolLM2-135M's shape: 576 wide, 9 heads of 64, MLP 1536.
SMOLLM2_CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 576,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "dtype": "bfloat16",
}


def _model_dir(folder: Path, config: dict[str, Any] | None = None) -> Path:
    """A folder that looks like a full checkpoint to the planner (config.json only: planning loads nothing)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or SMOLLM2_CONFIG))
    return folder


def _adapter_dir(folder: Path, base: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "r": 4}))
    return folder


def _request(model: Path | str, output: Path, **options: Any) -> ExportRequest:
    return ExportRequest(model=str(model), output=output, **options)


# ---------------------------------------------------------------------------------------------- group size


@pytest.mark.parametrize(
    ("requested", "widths", "chosen"),
    [
        (128, [576, 576, 1536], 64),  # SmolLM2-135M: 576 = 64 x 9
        (128, [4096, 11008], 128),  # Llama-2-7B
        (128, [896, 4864], 128),  # Qwen2.5-0.5B
        (128, [64, 128], 64),  # the tiny test Llama
        (64, [576, 1536], 64),
        (32, [576, 1536], 32),
        (96, [576, 1536], 96),  # any requested size that divides every width is kept as is
        (128, [2304, 9216], 128),
        (128, [960, 2560], 64),  # SmolLM2-360M: 960 = 64 x 15
    ],
)
def test_group_size_is_the_requested_one_or_the_largest_power_of_two_that_divides(
    requested: int, widths: list[int], chosen: int
) -> None:
    choice = choose_group_size(requested, widths)
    assert choice.chosen == chosen
    assert choice.requested == requested
    assert all(w % chosen == 0 for w in widths)
    if chosen != requested:
        assert str(requested) in choice.reason and str(chosen) in choice.reason


def test_group_size_falls_back_to_per_channel_when_no_useful_group_divides() -> None:
    choice = choose_group_size(128, [100, 200])  # 2-adic part 4 < MIN_GROUP_SIZE
    assert choice.chosen is None and "per-channel" in choice.reason
    assert MIN_GROUP_SIZE > 4


def test_group_size_must_be_positive() -> None:
    with pytest.raises(UsageError, match="positive"):
        choose_group_size(0, [576])


def test_layer_widths_from_config() -> None:
    assert sorted(set(linear_in_features_from_config(SMOLLM2_CONFIG))) == [576, 1536]
    # o_proj reads heads x head_dim, which need not be the hidden size (Qwen3-style head_dim)
    wide_heads = {**SMOLLM2_CONFIG, "num_attention_heads": 16, "head_dim": 128, "hidden_size": 1024}
    assert 2048 in linear_in_features_from_config(wide_heads)
    assert linear_in_features_from_config({"model_type": "llama"}) == []


# ---------------------------------------------------------------------------------------------- plans


def test_plan_awq_on_smollm2_shaped_model_picks_group_64(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "smol")
    plan = plan_export(_request(model, tmp_path / "out", quant="awq", samples=16, max_length=256))
    assert plan["kind"] == "awq" and plan["quant"] == "awq"
    assert plan["group_size"] == {"requested": 128, "chosen": 64, "reason": plan["group_size"]["reason"]}
    assert "576" in plan["group_size"]["reason"]
    assert plan["calibration"]["datasets"] == ["demo-sft-alpaca"] and plan["calibration"]["origin"] == "default"
    assert (plan["calibration"]["samples"], plan["calibration"]["max_length"]) == (16, 256)
    assert plan["dtype"] == "bf16"  # auto: the checkpoint's own bf16
    assert any("AWQ W4A16" in s and "group size 64" in s for s in plan["steps"])
    assert any("compressed-tensors" in s for s in plan["steps"])
    assert plan["steps"][-1].startswith("verify: reload")
    assert not (tmp_path / "out").exists()  # planning writes nothing


def test_plan_keeps_a_group_size_that_divides(tmp_path: Path) -> None:
    wide = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "head_dim": 64}
    model = _model_dir(tmp_path / "m", {**SMOLLM2_CONFIG, **wide})
    plan = plan_export(_request(model, tmp_path / "out", quant="gptq"))
    assert plan["group_size"]["chosen"] == 128
    assert any("GPTQ W4A16" in s and "group size 128" in s for s in plan["steps"])


def test_plan_merge_of_an_adapter(tmp_path: Path) -> None:
    base = _model_dir(tmp_path / "base", {**SMOLLM2_CONFIG, "dtype": "float32"})
    adapter = _adapter_dir(tmp_path / "adapter", base)
    plan = plan_export(_request(adapter, tmp_path / "merged", shard_size="500MB"))
    assert plan["kind"] == "merged" and plan["quant"] is None and plan["group_size"] is None
    assert plan["source"]["kind"] == "adapter" and plan["source"]["weights"] == str(base)
    assert plan["dtype"] == "fp32"
    assert any("merge the LoRA adapter" in s for s in plan["steps"])
    assert any("500MB" in s and "tokenizer and chat template" in s for s in plan["steps"])


def test_plan_quantizing_an_adapter_merges_it_first(tmp_path: Path) -> None:
    base = _model_dir(tmp_path / "base")
    adapter = _adapter_dir(tmp_path / "adapter", base)
    plan = plan_export(_request(adapter, tmp_path / "out", quant="gptq"))
    merge = next(i for i, s in enumerate(plan["steps"]) if "merge the LoRA adapter" in s)
    quantize = next(i for i, s in enumerate(plan["steps"]) if s.startswith("quantize:"))
    assert merge < quantize
    assert any("merged into its base" in n for n in plan["notes"])


@pytest.mark.parametrize("options", [{"quant": "gptq"}, {"quant": "nf4"}, {"format": "gguf"}, {}])
def test_no_merge_refuses_an_adapter(tmp_path: Path, options: dict[str, Any]) -> None:
    base = _model_dir(tmp_path / "base")
    adapter = _adapter_dir(tmp_path / "adapter", base)
    with pytest.raises(UsageError) as caught:
        plan_export(_request(adapter, tmp_path / "out", merge=False, **options))
    assert "--no-merge" in caught.value.message
    assert caught.value.hint and "--no-merge" in caught.value.hint


def test_run_directory_calibrates_on_its_training_data(tmp_path: Path) -> None:
    base = _model_dir(tmp_path / "base")
    run = tmp_path / "runs" / "demo"
    _adapter_dir(run / "final", base)
    job = {
        "backend": "deepspeed",
        "stage": "sft",
        "model": {"name_or_path": str(base), "template": "chatml"},
        "data": {"train": ["demo-sft-messages", {"path": "demo-sft-sharegpt", "max_samples": 10}]},
    }
    (run / "job.yaml").write_text(yaml.safe_dump(job))
    plan = plan_export(_request(run, tmp_path / "out", quant="awq"))
    assert plan["source"]["run_dir"] == str(run) and plan["source"]["path"] == str(run / "final")
    assert plan["calibration"]["datasets"] == ["demo-sft-messages", "demo-sft-sharegpt"]
    assert plan["calibration"]["origin"] == "run" and plan["calibration"]["template"] == "chatml"
    source = calibration_source(None, run)
    assert source.stage == "sft" and source.datasets[1]["max_samples"] == 10
    # --calibration wins over the run's data
    plan = plan_export(_request(run, tmp_path / "out", quant="gptq", calibration="demo-pt"))
    assert plan["calibration"]["datasets"] == ["demo-pt"] and plan["calibration"]["origin"] == "request"


def test_calibration_data_that_does_not_resolve_is_refused_when_planning(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    with pytest.raises(UsageError) as caught:
        plan_export(_request(model, tmp_path / "out", quant="awq", calibration="demo-sft-alpacca"))
    assert caught.value.message.startswith("calibration data:") and "demo-sft-alpaca" in str(caught.value.hint)
    # int8 / nf4 / fp8 need no calibration data
    plan = plan_export(_request(model, tmp_path / "out", quant="fp8", calibration="nowhere.jsonl"))
    assert plan["calibration"] is None


def test_gguf_plan_names_the_file(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    plan = plan_export(_request(model, tmp_path / "out", format="gguf", gguf_type="q8_0"))
    assert plan["kind"] == "gguf-q8_0" and plan["gguf_type"] == "q8_0"
    assert any("out-q8_0.gguf" in s or "model-q8_0.gguf" in s for s in plan["steps"])
    plan = plan_export(_request(model, tmp_path / "smol.gguf", format="gguf"))
    assert any("smol.gguf" in s for s in plan["steps"])


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"quant": "int4"}, "unknown quantization `int4`"),
        ({"format": "onnx"}, "unknown export format `onnx`"),
        ({"format": "gguf", "gguf_type": "q4_k"}, "unknown GGUF type `q4_k`"),
        ({"dtype": "fp8"}, "unknown dtype `fp8`"),
        ({"device": "tpu"}, "unknown device `tpu`"),
        ({"quant": "awq", "format": "gguf"}, "do not combine"),
        ({"quant": "gptq", "group_size": 0}, "group size must be a positive integer"),
        ({"quant": "gptq", "samples": 0}, "calibration needs at least 1 sample"),
        ({"quant": "awq", "max_length": 4}, "calibration needs at least 1 sample of at least 8 tokens"),
        ({"shard_size": "5 potatoes"}, "bad shard size"),
        ({"shard_size": "0MB"}, "bad shard size"),
        ({"shard_size": "-1GB"}, "bad shard size"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    model = _model_dir(tmp_path / "m")
    with pytest.raises(UsageError) as caught:
        plan_export(_request(model, tmp_path / "out", **options))
    assert message in caught.value.message
    assert caught.value.hint


@pytest.mark.parametrize(
    ("text", "size"),
    [("5GB", 5 * 10**9), ("500MB", 500 * 10**6), ("2GiB", 2 * 2**30), ("10mb", 10**7), ("4096", 4096), ("1 kb", 1000)],
)
def test_shard_sizes(text: str, size: int) -> None:
    assert shard_size_bytes(text) == size


def test_existing_output_needs_force(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    (tmp_path / "out").mkdir()
    with pytest.raises(UsageError) as caught:
        plan_export(_request(model, tmp_path / "out"))
    assert "already exists" in caught.value.message and "--force" in str(caught.value.hint)
    plan = plan_export(_request(model, tmp_path / "out", overwrite=True))
    assert plan["overwrite"] is True


@pytest.mark.parametrize("where", ["itself", "parent"])
def test_output_never_replaces_the_source(tmp_path: Path, where: str) -> None:
    model = _model_dir(tmp_path / "models" / "m")
    output = model if where == "itself" else model.parent
    with pytest.raises(UsageError, match="would replace the model"):
        plan_export(_request(model, output, overwrite=True))


def test_an_already_quantized_model_is_refused(tmp_path: Path) -> None:
    config = {**SMOLLM2_CONFIG, "quantization_config": {"quant_method": "compressed-tensors"}}
    model = _model_dir(tmp_path / "q", config)
    with pytest.raises(UsageError, match="already quantized"):
        plan_export(_request(model, tmp_path / "out", quant="gptq"))


def _converter_on_path(monkeypatch: pytest.MonkeyPatch, folder: Path, first_line: str | None) -> Path | None:
    """PATH = `folder` (+ /bin, /usr/bin): with a `convert_hf_to_gguf.py` there unless first_line is None."""
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("PATH", os.pathsep.join([str(folder), "/usr/bin", "/bin"]))
    if first_line is None:
        return None
    script = folder / CONVERTER
    script.write_text(f"{first_line}\nexit 0\n")
    script.chmod(0o755)
    return script


def test_gguf_refuses_an_architecture_it_cannot_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _converter_on_path(monkeypatch, tmp_path / "bin", None)
    model = _model_dir(tmp_path / "m", {**SMOLLM2_CONFIG, "model_type": "gpt2"})
    with pytest.raises(UsageError, match="GGUF export supports") as caught:
        plan_export(_request(model, tmp_path / "out", format="gguf"))
    assert "convert_hf_to_gguf.py" in str(caught.value.hint)


def test_gguf_plan_uses_llama_cpps_converter_when_it_is_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model_dir(tmp_path / "m", {**SMOLLM2_CONFIG, "model_type": "gpt2"})  # beyond the built-in writer
    script = _converter_on_path(monkeypatch, tmp_path / "bin", "#!/usr/bin/env python3")
    assert find_converter() == script
    plan = plan_export(_request(model, tmp_path / "out.gguf", format="gguf"))
    assert plan["gguf_converter"] == str(script)
    assert any(f"llama.cpp's {script}" in step and "out.gguf" in step for step in plan["steps"])

    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path / "nothing"), "/usr/bin", "/bin"]))
    model = _model_dir(tmp_path / "llama")
    plan = plan_export(_request(model, tmp_path / "out.gguf", format="gguf"))
    assert plan["gguf_converter"] is None and find_converter() is None
    assert any("built-in GGUF writer" in step and "not on PATH" in step for step in plan["steps"])
    assert plan_export(_request(model, tmp_path / "out"))["gguf_converter"] is None  # safetensors: never looked up


@pytest.mark.parametrize(
    ("first_line", "runs_under_this_python"),
    [
        ("#!/usr/bin/env python3", True),
        ("#!/opt/llama/venv/bin/python3.12", True),
        ("# no shebang", True),
        ("#!/bin/sh", False),
    ],
)
def test_converter_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_line: str, runs_under_this_python: bool
) -> None:
    script = _converter_on_path(monkeypatch, tmp_path / "bin", first_line)
    assert script is not None
    argv = converter_command(script, tmp_path / "ckpt", tmp_path / "x.gguf", "q8_0", "tiny")
    run = [sys.executable, str(script)] if runs_under_this_python else [str(script)]
    assert argv == [
        *run,
        str(tmp_path / "ckpt"),
        "--outfile",
        str(tmp_path / "x.gguf"),
        "--outtype",
        "q8_0",
        "--model-name",
        "tiny",
    ]


def test_missing_model_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        plan_export(_request(tmp_path / "nowhere" / "model", tmp_path / "out"))


def test_planning_imports_no_torch(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from factory_cli.export import ExportRequest, plan_export\n"
        f"request = ExportRequest(model={str(model)!r}, output=Path({str(tmp_path / 'out')!r}), quant='awq')\n"
        "plan = plan_export(request)\n"
        "assert plan['group_size']['chosen'] == 64, plan\n"
        "heavy = [m for m in ('torch', 'transformers', 'llmcompressor', 'bitsandbytes') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
