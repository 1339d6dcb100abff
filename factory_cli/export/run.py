"""`run_export`: merge an adapter, quantize (awq, gptq, int8, nf4, fp8) or write GGUF, then prove the artefact.

It does what `plan_export` (factory_cli/export/plan.py) describes and always ends by reloading the output from disk
and generating from it. The output is written to a temporary folder next to the destination and renamed into place
only after that check passed.
"""

from __future__ import annotations

import gc
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from factory_cli.config.errors import UsageError
from factory_cli.export.gguf_writer import gguf_file_name
from factory_cli.export.plan import calibration_plan, plan_export
from factory_cli.export.quantize import LLMCOMPRESSOR_METHODS, W4A16_METHODS, calibration_source, choose_group_size
from factory_cli.export.report import ExportReport, human_size
from factory_cli.export.request import ExportRequest, shard_size_bytes
from factory_cli.inference.load import ModelDirInfo, describe_model_dir

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


def _versions() -> dict[str, str]:
    """Installed versions of the libraries an export goes through (absent ones left out)."""
    from factory_cli.environment import installed_version

    return {name: found for name in _VERSIONED if (found := installed_version(name)) is not None}


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
    described = calibration_plan(source, request)
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
            f"size before is the dequantized checkpoint; the GGUF it came from is {human_size(weights_size(original))}"
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
            from factory_cli.export.gguf_converter import write_gguf_file

            gguf_name = output.name if output.suffix == ".gguf" else gguf_file_name(output.name, request.gguf_type)
            converter = Path(plan["gguf_converter"]) if plan["gguf_converter"] else None
            say(f"writing {request.gguf_type} GGUF {gguf_name}" + (f" with {converter}" if converter else ""))
            name = Path(str(getattr(source.model.config, "_name_or_path", "") or output.stem)).name or output.stem
            notes += write_gguf_file(
                source,
                staging / gguf_name,
                request.gguf_type,
                name=name,
                source_gguf=original,
                shard_size=shard_size_bytes(request.shard_size),
                converter=converter,
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
