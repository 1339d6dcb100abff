"""`factory export`: merge an adapter, quantize (awq, gptq, int8, nf4, fp8) or write GGUF, then prove the artefact.

`plan_export` is pure (paths and JSON only: `--dry-run` and the unit tests); `run_export` does the work and always
ends by reloading the output from disk and generating from it. The output is written to a temporary folder next
to the destination and renamed into place only after that check passed.
"""

from __future__ import annotations

import gc
import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from factory_cli.config.errors import UsageError
from factory_cli.export.gguf_writer import GGUF_TYPES, gguf_architecture, gguf_file_name
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
from factory_cli.export.verify import CHECK_NEW_TOKENS
from factory_cli.inference.load import ModelDirInfo, describe_model_dir

QUANT_METHODS = ("awq", "gptq", "int8", "nf4", "fp8")
FORMATS = ("safetensors", "gguf")
DTYPES = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "cuda", "npu", "cpu")
EXPORT_FILE = "factory_export.json"
_VERSIONED = (
    "factory-cli",
    "torch",
    "transformers",
    "peft",
    "llmcompressor",
    "compressed-tensors",
    "bitsandbytes",
    "gguf",
)


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


@dataclass
class ExportReport:
    """What an export wrote, from what, how big before and after, how long it took and what the check saw."""

    output: Path
    kind: str
    source: str
    size_before_bytes: int
    size_after_bytes: int
    seconds: float
    group_size: int | None
    calibration: dict[str, Any] | None
    check: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["output"] = str(self.output)
        return data


# ---------------------------------------------------------------------------------------------- planning


def _check_options(request: ExportRequest) -> None:
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


def _check_output(request: ExportRequest, info: ModelDirInfo) -> Path:
    """The resolved output path: free (or --force), and never the source itself or a folder holding it."""
    output = request.output.expanduser().resolve()
    if info.kind != "reference" or Path(info.path).exists():
        source = Path(info.path).resolve()
        if output == source or output in source.parents:
            raise UsageError(f"the output {output} would replace the model being exported", "choose another -o")
    if output.exists() and not request.overwrite:
        raise UsageError(f"the output {output} already exists", "choose another -o, or pass --force to replace it")
    return output


def _check_source(request: ExportRequest, info: ModelDirInfo) -> None:
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


def _calibration_plan(source: CalibrationSource, request: ExportRequest) -> dict[str, Any]:
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
    _check_options(request)
    info = describe_model_dir(request.model, request.base_dirs)
    _check_source(request, info)
    output = _check_output(request, info)
    weights = _weights_ref(request, info)
    config = read_config(weights.local_dir)
    notes: list[str] = []
    if request.format == "gguf" and config is not None:
        gguf_architecture(config)
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
        calibration = _calibration_plan(source, request)
        steps.append(
            f"calibrate on {request.samples} rows of {', '.join(source.names)} ({source.origin}), rendered with the "
            f"chat template, at most {request.max_length} tokens each"
        )
    if request.quant:
        steps.append(_quant_step(request, choice))
    if request.format == "gguf":
        file = output.name if output.suffix == ".gguf" else gguf_file_name("model", request.gguf_type)
        steps.append(
            f"write {request.gguf_type} GGUF {file} (llama.cpp layout: Q/K permuted, tokenizer, chat template)"
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
        "dtype": dtype,
        "group_size": choice.to_dict() if choice else None,
        "calibration": calibration,
        "steps": steps,
        "notes": notes,
    }


# ---------------------------------------------------------------------------------------------- running


def _versions() -> dict[str, str]:
    """Installed versions of the libraries an export goes through."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in _VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _calibration_ids(
    request: ExportRequest, info: ModelDirInfo, tokenizer: Any
) -> tuple[list[list[int]], dict[str, Any]]:
    """Calibration token ids (rows rendered with the chat template, truncated) and their description."""
    from factory_cli.data.masking import resolve_chat_template
    from factory_cli.export.quantize import calibration_rows, calibration_token_ids

    source = calibration_source(request.calibration, info.run_dir, request.base_dirs)
    rows, skipped = calibration_rows(source, request.samples)
    try:
        template = resolve_chat_template(source.template, tokenizer, None, source.base_dirs)
    except ValueError as exc:
        raise UsageError(f"calibration chat template: {exc}", "give the model a chat template") from None
    ids = calibration_token_ids(rows, tokenizer, template, request.max_length)
    described = _calibration_plan(source, request)
    described.update(
        {
            "rows": len(ids),
            "skipped_rows": skipped,
            "tokens": sum(len(i) for i in ids),
            "chat_template": template is not None,
        }
    )
    return ids, described


def _device(requested: str) -> Any:
    """The device the export runs on (UsageError when the requested one is missing)."""
    from factory_cli.devices import detect_device

    try:
        return detect_device(requested)
    except RuntimeError as exc:
        raise UsageError(str(exc), "use --device auto or cpu") from None


def _place(staging: Path, output: Path, gguf_name: str | None, overwrite: bool) -> Path:
    """Move the checked artefact from its staging folder to the destination (replacing it with --force)."""
    if output.exists() or output.is_symlink():
        if not overwrite:
            raise UsageError(f"the output {output} appeared while exporting", "choose another -o, or --force")
        if output.is_dir() and not output.is_symlink():
            shutil.rmtree(output)
        else:
            output.unlink()
    if gguf_name is not None and output.suffix == ".gguf":
        (staging / gguf_name).rename(output)
        shutil.rmtree(staging)
        return output
    staging.rename(output)
    return output


def run_export(request: ExportRequest, progress: Callable[[str], None] | None = None) -> ExportReport:
    """Export as `plan_export` describes, reload the result from disk, generate from it, and report."""
    from factory_cli.export.merge import LoadedSource, load_source, save_checkpoint, source_gguf, weights_size
    from factory_cli.export.verify import check_artifact, logits_for, prompt_ids

    say = progress or (lambda _message: None)
    started = time.perf_counter()
    plan = plan_export(request)
    info = describe_model_dir(request.model, request.base_dirs)
    output = Path(plan["output"])
    device = _device(request.device)
    notes: list[str] = []  # the plan's notes are for --dry-run; loading says what it did
    say(f"loading {plan['source']['weights']}")
    source: LoadedSource = load_source(info, request.dtype, request.base_dirs)
    notes += source.notes
    original = source_gguf(source.weights_dir)
    if original is not None:
        notes.append(
            f"size before is the dequantized checkpoint; the GGUF it came from is {_size(weights_size(original))}"
        )
    reference_ids = prompt_ids(source.tokenizer)
    reference_logits = logits_for(source.model, reference_ids)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the export is for servers and other users to read
    gguf_name: str | None = None
    group_size: int | None = None
    calibration: dict[str, Any] | None = None
    try:
        if request.format == "gguf":
            from factory_cli.export.gguf_writer import write_gguf

            gguf_name = output.name if output.suffix == ".gguf" else gguf_file_name(output.name, request.gguf_type)
            say(f"writing {request.gguf_type} GGUF {gguf_name}")
            name = Path(str(getattr(source.model.config, "_name_or_path", "") or output.stem)).name or output.stem
            notes += write_gguf(
                source.model, source.tokenizer, staging / gguf_name, request.gguf_type, name=name, source_gguf=original
            )
        elif request.quant is None:
            say(f"saving {plan['kind']} checkpoint")
            save_checkpoint(source, staging, shard_size_bytes(request.shard_size))
        elif request.quant in LLMCOMPRESSOR_METHODS:
            from factory_cli.export.quantize import linear_in_features, quantize_llmcompressor

            ids: list[list[int]] = []
            if request.quant in W4A16_METHODS:
                choice = choose_group_size(request.group_size, linear_in_features(source.model))
                group_size = choice.chosen
                notes.append(f"group size {choice.chosen or 'per-channel'}: {choice.reason}")
                say("preparing calibration data")
                ids, calibration = _calibration_ids(request, info, source.tokenizer)
                if calibration["rows"] < request.samples:
                    notes.append(f"calibrated on {calibration['rows']} rows (fewer than the {request.samples} asked)")
            say(f"quantizing with {request.quant} (llm-compressor)")
            quantize_llmcompressor(
                source.model,
                source.tokenizer,
                request.quant,
                group_size,
                ids,
                request.max_length,
                staging,
                shard_size_bytes(request.shard_size),
            )
        else:
            from factory_cli.export.quantize import quantize_bitsandbytes

            weights_dir = source.weights_dir
            merged_dir = None
            if source.merged_adapter:
                merged_dir = Path(tempfile.mkdtemp(prefix=f".{output.name}.merged-", dir=output.parent))
                save_checkpoint(source, merged_dir, shard_size_bytes(request.shard_size))
                weights_dir = merged_dir
            source.model = None
            gc.collect()
            say(f"quantizing with bitsandbytes ({request.quant})")
            try:
                notes += quantize_bitsandbytes(
                    weights_dir,
                    source.tokenizer,
                    request.quant,
                    source.dtype,
                    device,
                    staging,
                    shard_size_bytes(request.shard_size),
                )
            finally:
                if merged_dir is not None:
                    shutil.rmtree(merged_dir, ignore_errors=True)
        source.model = None
        gc.collect()
        say("checking the output: reload from disk and generate")
        check = check_artifact(
            staging, device, gguf_file=gguf_name, reference_ids=reference_ids, reference_logits=reference_logits
        )
        size_after = weights_size(staging)
        seconds = time.perf_counter() - started
        report = ExportReport(
            output=output,
            kind=str(plan["kind"]),
            source=info.path if info.kind != "adapter" else f"{info.path} (base {info.base})",
            size_before_bytes=source.size_bytes,
            size_after_bytes=size_after,
            seconds=round(seconds, 2),
            group_size=group_size,
            calibration=calibration,
            check=check,
            notes=notes,
        )
        if gguf_name is None or output.suffix != ".gguf":
            _write_provenance(staging / EXPORT_FILE, request, info, source, report)
        _place(staging, output, gguf_name, request.overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _write_provenance(
    path: Path, request: ExportRequest, info: ModelDirInfo, source: Any, report: ExportReport
) -> None:
    """factory_export.json: what was exported, from where, when, how, with which library versions."""
    data = {
        "kind": report.kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "reference": info.reference,
            "kind": info.kind,
            "path": info.path,
            "base": info.base,
            "run_dir": str(info.run_dir) if info.run_dir else None,
            "weights_dir": str(source.weights_dir),
        },
        "format": request.format,
        "quant": request.quant,
        "gguf_type": request.gguf_type if request.format == "gguf" else None,
        "dtype": source.dtype,
        "group_size": report.group_size,
        "calibration": report.calibration,
        "size_before_bytes": report.size_before_bytes,
        "size_after_bytes": report.size_after_bytes,
        "check": report.check,
        "notes": report.notes,
        "versions": _versions(),
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- printing


def _size(num_bytes: int) -> str:
    """Bytes in human units (MB / GB, powers of 1024)."""
    value = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def print_export_plan(plan: dict[str, Any]) -> None:
    """What `factory export --dry-run` shows: the numbered steps, then the plan as JSON."""
    from factory_cli.ui import console

    console.rule(f"export plan: {plan['kind']}")
    for number, step in enumerate(plan["steps"], 1):
        console.print(f"{number}. {step}", markup=False, soft_wrap=True)
    for note in plan["notes"]:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    console.rule("plan")
    console.print(json.dumps(plan, indent=2, default=str), markup=False, soft_wrap=True)


def print_export_report(report: ExportReport) -> None:
    """Sizes before/after, time, group size, calibration, the check's logits and generation, notes."""
    from rich.markup import escape
    from rich.table import Table

    from factory_cli.ui import console

    table = Table(title=f"export: {report.kind}", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    before, after = report.size_before_bytes, report.size_after_bytes
    if after and before >= after:
        change = f"{before / after:.1f}x smaller"
    else:
        change = f"{after / before:.1f}x larger" if before else "no source size"
    rows: list[tuple[str, str]] = [
        ("output", str(report.output)),
        ("source", report.source),
        ("weights on disk", f"{_size(before)} -> {_size(after)} ({change})"),
        ("time", f"{report.seconds:.1f} s"),
    ]
    if report.group_size is not None or report.kind in W4A16_METHODS:
        rows.append(("group size", str(report.group_size or "per-channel")))
    if report.calibration:
        cal = report.calibration
        used = f"{cal.get('rows')} rows / {cal.get('tokens')} tokens"
        rows.append(("calibration", f"{used} of {', '.join(cal['datasets'])} ({cal['origin']})"))
    check = report.check
    if "max_abs_logit_diff" in check:
        rows.append(
            (
                "logits vs source",
                f"max |diff| {check['max_abs_logit_diff']:.4g}, top-1 agreement {check['top1_agreement']:.0%}",
            )
        )
    rows.append(("reload", f"{check.get('reloaded_as')} in {check.get('load_seconds')} s"))
    rows.append((f"check: {check.get('prompt')}", repr(check.get("generated", ""))))
    for name, value in rows:
        table.add_row(escape(name), escape(value))
    console.print(table)
    for note in report.notes:
        console.print(f"  [dim]note:[/dim] {escape(note)}")
