"""`plan_export`: what `factory export` will do, without loading anything (`--dry-run` and the unit tests).

Pure: paths and JSON only; the plan's steps are what `run_export` (factory_cli/export/run.py) then does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factory_cli.export.gguf_converter import BUILTIN, CONVERTER, find_converter
from factory_cli.export.gguf_writer import gguf_architecture, gguf_file_name
from factory_cli.export.merge import BaseRef, auto_dtype, read_config, resolve_base
from factory_cli.export.quantize import (
    BNB_METHODS,
    IGNORED_LAYERS,
    LLMCOMPRESSOR_METHODS,
    W4A16_METHODS,
    CalibrationSource,
    GroupSizeChoice,
    calibration_source,
    choose_group_size,
    linear_in_features_from_config,
    resolve_calibration,
)
from factory_cli.export.request import ExportRequest, check_options, check_output, check_source
from factory_cli.export.verify import CHECK_NEW_TOKENS
from factory_cli.inference.load import ModelDirInfo, describe_model_dir


def _weights_ref(request: ExportRequest, info: ModelDirInfo) -> BaseRef:
    """Where the full weights live: the model dir, or the adapter's base / the reference (resolved, not loaded)."""
    if info.kind == "full":
        return BaseRef(info.path, Path(info.path), "local")
    reference = info.base if info.kind == "adapter" else info.path
    assert reference is not None
    return resolve_base(reference, request.base_dirs)


def _export_kind(request: ExportRequest, info: ModelDirInfo) -> str:
    """merged | resaved | awq | gptq | int8 | nf4 | fp8 | gguf-f16 | gguf-q8_0."""
    if request.format == "gguf":
        return f"gguf-{request.gguf_type}"
    if request.quant:
        return request.quant
    return "merged" if info.kind == "adapter" else "resaved"


def calibration_plan(source: CalibrationSource, request: ExportRequest) -> dict[str, Any]:
    """The calibration part of a plan or report."""
    return {
        "datasets": source.names,
        "origin": source.origin,
        "samples": request.samples,
        "max_length": request.max_length,
        "template": source.template,
    }


def _group_choice(request: ExportRequest, config: dict[str, Any] | None) -> GroupSizeChoice:
    """The group size as the config's layer widths allow (re-checked on the loaded model's Linear layers)."""
    widths = linear_in_features_from_config(config) if config else []
    if not widths:
        return GroupSizeChoice(request.group_size, None, "decided when the model is loaded")
    return choose_group_size(request.group_size, widths)


def _quant_step(request: ExportRequest, choice: GroupSizeChoice | None) -> str:
    """One line saying how the weights are quantized."""
    keep = f"{', '.join(IGNORED_LAYERS)}, embeddings and norms kept in full precision"
    if request.quant in W4A16_METHODS:
        assert choice is not None
        layout = f"group size {choice.chosen}" if choice.chosen else "per-channel scales"
        if choice.chosen is None and choice.reason == "decided when the model is loaded":
            layout = f"group size {request.group_size} or the largest power of two below it dividing every width"
        return f"quantize: {request.quant.upper()} W4A16 symmetric, {layout}; {keep}"
    if request.quant == "fp8":
        return f"quantize: FP8 dynamic (fp8 e4m3 weights, per-token dynamic activations); {keep}"
    if request.quant == "int8":
        return "quantize: bitsandbytes LLM.int8 (8-bit weights)"
    return "quantize: bitsandbytes nf4 with double quantization"


def plan_export(request: ExportRequest) -> dict[str, Any]:
    """What `run_export` will do, without loading anything: steps, group size, calibration, output. Raises
    UsageError for an export that cannot work (unknown option, existing output, adapter without merge, ...)."""
    check_options(request)
    info = describe_model_dir(request.model, request.base_dirs)
    check_source(request, info)
    output = check_output(request, info)
    weights = _weights_ref(request, info)
    config = read_config(weights.local_dir)
    notes: list[str] = []
    converter = find_converter() if request.format == "gguf" else None
    if request.format == "gguf" and config is not None and converter is None:
        gguf_architecture(config)  # the built-in writer's architectures; llama.cpp's converter knows its own
    steps: list[str] = []
    if weights.kind == "gguf" and weights.local_dir is None:
        steps.append(f"convert the GGUF {weights.reference} to a safetensors checkpoint (once, cached)")
    elif weights.kind in ("hub", "registry"):
        steps.append(f"fetch {weights.reference} from the Hugging Face Hub")
    dtype = request.dtype if request.dtype != "auto" else auto_dtype(config) if config else "auto (the base's dtype)"
    load = weights.local_dir or weights.reference
    steps.append(f"load {load} in {dtype}")
    if info.kind == "adapter":
        steps.append(f"merge the LoRA adapter {info.path} into it (merge_and_unload)")
        if request.quant or request.format == "gguf":
            notes.append("the adapter is merged into its base before export")
    choice = _group_choice(request, config) if request.quant in W4A16_METHODS else None
    calibration = None
    if request.quant in W4A16_METHODS:
        source = calibration_source(request.calibration, info.run_dir, request.base_dirs)
        resolve_calibration(source)
        calibration = calibration_plan(source, request)
        steps.append(
            f"calibrate on {request.samples} rows of {', '.join(source.names)} ({source.origin}), rendered with the "
            f"chat template, at most {request.max_length} tokens each"
        )
    if request.quant:
        steps.append(_quant_step(request, choice))
    if request.format == "gguf":
        file = output.name if output.suffix == ".gguf" else gguf_file_name("model", request.gguf_type)
        if converter is not None:
            steps.append(
                f"save the checkpoint and convert it to {request.gguf_type} GGUF {file} with llama.cpp's {converter}"
                f" ({BUILTIN} if it fails)"
            )
        else:
            steps.append(
                f"write {request.gguf_type} GGUF {file} with {BUILTIN} (llama.cpp layout: Q/K permuted, tokenizer,"
                f" chat template; llama.cpp's {CONVERTER} is not on PATH)"
            )
    elif request.quant in LLMCOMPRESSOR_METHODS:
        steps.append("save in compressed-tensors format (vLLM and transformers load it)")
    elif request.quant in BNB_METHODS:
        steps.append("save with bitsandbytes serialization")
    else:
        steps.append(f"save safetensors shards of at most {request.shard_size} with the tokenizer and chat template")
    steps.append(f"verify: reload {output} from disk, compare logits with the source, greedy {CHECK_NEW_TOKENS} tokens")
    return {
        "model": request.model,
        "kind": _export_kind(request, info),
        "source": {
            "kind": info.kind,
            "path": info.path,
            "base": info.base,
            "run_dir": str(info.run_dir) if info.run_dir else None,
            "weights": str(weights.local_dir) if weights.local_dir else weights.reference,
        },
        "output": str(output),
        "overwrite": request.overwrite and output.exists(),
        "format": request.format,
        "quant": request.quant,
        "gguf_type": request.gguf_type if request.format == "gguf" else None,
        "gguf_converter": str(converter) if converter is not None else None,
        "dtype": dtype,
        "group_size": choice.to_dict() if choice else None,
        "calibration": calibration,
        "steps": steps,
        "notes": notes,
    }
