"""What `factory export` is asked to do (`ExportRequest`) and the checks that refuse a request that cannot work.

Pure: option values, the shard size, the output path and the source's kind (from `describe_model_dir`, no loading).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from factory_cli.config.errors import UsageError
from factory_cli.export.gguf_writer import GGUF_TYPES
from factory_cli.inference.load import ModelDirInfo

QUANT_METHODS = ("awq", "gptq", "int8", "nf4", "fp8")
FORMATS = ("safetensors", "gguf")
DTYPES = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "cuda", "npu", "cpu")


@dataclass(frozen=True)
class ExportRequest:
    """What to export, where, and how (the options of `factory export`)."""

    model: str
    output: Path
    quant: str | None = None
    format: str = "safetensors"  # or "gguf"
    gguf_type: str = "f16"  # f16 | q8_0
    group_size: int = 128
    calibration: str | None = None  # dataset; default: the run's training data, else demo-sft-alpaca
    samples: int = 128
    max_length: int = 512
    dtype: str = "auto"
    shard_size: str = "5GB"
    device: str = "auto"
    merge: bool = True  # quantizing an adapter merges it first (if False: refuse)
    overwrite: bool = False
    base_dirs: tuple[Path, ...] = ()


def check_options(request: ExportRequest) -> None:
    """Option values that can be judged without looking at the model."""
    if request.quant is not None and request.quant not in QUANT_METHODS:
        raise UsageError(f"unknown quantization `{request.quant}`", f"use one of {', '.join(QUANT_METHODS)}")
    if request.format not in FORMATS:
        raise UsageError(f"unknown export format `{request.format}`", f"use one of {', '.join(FORMATS)}")
    if request.gguf_type not in GGUF_TYPES:
        raise UsageError(f"unknown GGUF type `{request.gguf_type}`", f"use one of {', '.join(GGUF_TYPES)}")
    if request.dtype not in DTYPES:
        raise UsageError(f"unknown dtype `{request.dtype}`", f"use one of {', '.join(DTYPES)}")
    if request.device not in DEVICES:
        raise UsageError(f"unknown device `{request.device}`", f"use one of {', '.join(DEVICES)}")
    if request.format == "gguf" and request.quant is not None:
        raise UsageError(
            f"--quant {request.quant} and --format gguf do not combine",
            "GGUF quantizes by itself: --format gguf --gguf-type q8_0 (or export --quant to safetensors)",
        )
    if request.group_size < 1:
        raise UsageError(f"group size must be a positive integer, got {request.group_size}", "the usual value is 128")
    shard_size_bytes(request.shard_size)
    if request.samples < 1 or request.max_length < 8:
        raise UsageError(
            f"calibration needs at least 1 sample of at least 8 tokens (got {request.samples} x {request.max_length})",
            "the usual values are 128-512 samples of 512-2048 tokens",
        )


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def shard_size_bytes(text: str) -> int:
    """`--shard-size` in bytes: an integer with an optional unit (B, KB, MB, GB; KiB, MiB, GiB), e.g. 5GB, 500MB.

    Parsed here rather than by transformers, which reads a lowercase `b` as bits (5Gb -> 625 MB)."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _SIZE_UNITS or int(match.group(1)) * _SIZE_UNITS[unit] < 1:
        raise UsageError(f"bad shard size `{text}`", "a whole number with a unit: 5GB, 500MB, 2GiB (or plain bytes)")
    return int(match.group(1)) * _SIZE_UNITS[unit]


def check_output(request: ExportRequest, info: ModelDirInfo) -> Path:
    """The resolved output path: free (or --force), and never the source itself or a folder holding it."""
    output = request.output.expanduser().resolve()
    if info.kind != "reference" or Path(info.path).exists():
        source = Path(info.path).resolve()
        if output == source or output in source.parents:
            raise UsageError(f"the output {output} would replace the model being exported", "choose another -o")
    if output.exists() and not request.overwrite:
        raise UsageError(f"the output {output} already exists", "choose another -o, or pass --force to replace it")
    return output


def check_source(request: ExportRequest, info: ModelDirInfo) -> None:
    """Refuse what cannot be exported: a quantized model, an adapter left unmerged."""
    if info.kind == "quantized":
        raise UsageError(
            f"{info.path} is already quantized ({info.quantization})",
            "export from the full-precision model (or the run's adapter) instead",
        )
    if info.kind == "adapter" and not request.merge:
        what = f"--quant {request.quant}" if request.quant else "--format gguf" if request.format == "gguf" else None
        if what:
            raise UsageError(
                f"{what} needs the LoRA adapter merged into its base first, and --no-merge was given",
                "drop --no-merge (the adapter is merged with merge_and_unload before quantizing)",
            )
        raise UsageError(
            f"{info.path} is a LoRA adapter and --no-merge leaves nothing to export",
            "drop --no-merge to write base + adapter as one model, or use the adapter folder as it is",
        )
