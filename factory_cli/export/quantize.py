"""Post-training quantization: W4A16 (AWQ / GPTQ) and FP8 through llm-compressor, int8 / nf4 through bitsandbytes.

The top of this module is pure: the group-size choice (from Linear widths), the calibration source and its rows.
The quantizers import torch, llm-compressor or bitsandbytes inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory_cli.config.errors import UsageError

DEFAULT_CALIBRATION = "demo-sft-alpaca"
W4A16_METHODS = ("awq", "gptq")
LLMCOMPRESSOR_METHODS = ("awq", "gptq", "fp8")
BNB_METHODS = ("int8", "nf4")
# Below this a "group" is a handful of weights: per-channel scales are the better W4A16 layout then.
MIN_GROUP_SIZE = 16
# The final projection and the embeddings stay in full precision (docs/domain.md: keep embeddings, final norm and
# lm_head unquantized); only nn.Linear layers are targeted, so embeddings and norms are never touched.
IGNORED_LAYERS = ("lm_head",)
_CALIBRATION_STAGES = ("sft", "pt", "dpo", "grpo")


# ---------------------------------------------------------------------------------------------- group size


@dataclass(frozen=True)
class GroupSizeChoice:
    """The W4A16 group size used (None: per-channel scales) and why."""

    requested: int
    chosen: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for plans and reports."""
        return {"requested": self.requested, "chosen": self.chosen, "reason": self.reason}


def choose_group_size(requested: int, in_features: Sequence[int]) -> GroupSizeChoice:
    """`requested` when it divides every quantized Linear's in_features, else the largest power of two below it
    that divides all of them (SmolLM2's 576 / 1536 -> 64); per-channel when that would be under MIN_GROUP_SIZE."""
    if requested < 1:
        raise UsageError(f"group size must be a positive integer, got {requested}", "the usual value is 128")
    widths = sorted({int(w) for w in in_features if int(w) > 0})
    if not widths:
        return GroupSizeChoice(requested, requested, "no layer widths known; using the requested group size")
    if all(w % requested == 0 for w in widths):
        return GroupSizeChoice(requested, requested, f"{requested} divides every layer width")
    common = math.gcd(*widths)
    two_adic = common & -common  # the largest power of two dividing every width
    below = 1 << ((requested - 1).bit_length() - 1) if requested > 1 else 1  # largest power of two < requested
    chosen = min(two_adic, below)
    odd = next(w for w in widths if w % requested)
    if chosen < MIN_GROUP_SIZE:
        return GroupSizeChoice(
            requested,
            None,
            f"{requested} does not divide layer width {odd} and no power of two >= {MIN_GROUP_SIZE} divides "
            f"all widths ({', '.join(map(str, widths))}); using per-channel scales",
        )
    return GroupSizeChoice(
        requested, chosen, f"{requested} does not divide layer width {odd}; {chosen} divides all of them"
    )


def linear_in_features_from_config(config: dict[str, Any]) -> list[int]:
    """The in_features of a decoder's Linear layers as its config.json describes them (no weights needed)."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    assert isinstance(text, dict)
    hidden = text.get("hidden_size")
    heads = text.get("num_attention_heads")
    if not isinstance(hidden, int) or not isinstance(heads, int) or heads <= 0:
        return []
    head_dim = text.get("head_dim") or hidden // heads
    widths = [hidden, heads * int(head_dim)]  # q/k/v/gate/up read the hidden state; o_proj reads the heads
    for key in ("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size"):
        value = text.get(key)
        if isinstance(value, int) and value > 0:
            widths.append(value)  # down_proj reads the MLP's inner width
    return widths


def linear_in_features(model: Any, ignore: Sequence[str] = IGNORED_LAYERS) -> list[int]:
    """The in_features of every nn.Linear that quantization targets (the ignored ones left out)."""
    import torch

    widths = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] not in ignore:
            widths.append(int(module.in_features))
    return widths


# ---------------------------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CalibrationSource:
    """Which datasets calibrate, where that choice came from, and how to read them."""

    datasets: tuple[dict[str, Any], ...]  # DatasetSpec fields, at least `path`
    origin: str  # "request" | "run" | "default"
    stage: str | None = None
    dataset_dir: str | None = None
    template: str = "auto"
    base_dirs: tuple[Path, ...] = ()

    @property
    def names(self) -> list[str]:
        """The dataset references, as given."""
        return [str(d["path"]) for d in self.datasets]


def calibration_source(
    calibration: str | None, run_dir: Path | None, base_dirs: Sequence[Path] = ()
) -> CalibrationSource:
    """The calibration data: as requested, else the run's training data (from its job.yaml), else the demo set."""
    if calibration:
        return CalibrationSource(({"path": calibration},), "request", base_dirs=tuple(base_dirs))
    if run_dir is not None:
        from factory_cli.runs import RunDir

        run = RunDir(run_dir)
        job = run.job()
        return CalibrationSource(
            tuple(spec.model_dump(exclude_defaults=True) for spec in job.data.train),
            "run",
            stage=job.stage,
            dataset_dir=job.data.dataset_dir,
            template=job.model.template,
            base_dirs=(*run.base_dirs(), *base_dirs),
        )
    return CalibrationSource(({"path": DEFAULT_CALIBRATION},), "default", base_dirs=tuple(base_dirs))


def resolve_calibration(source: CalibrationSource) -> list[Any]:
    """Each calibration dataset resolved (a file, a registry entry or a Hub id; pure, nothing read or downloaded);
    UsageError naming the calibration data when one does not resolve."""
    from factory_cli.config.schema import DatasetSpec
    from factory_cli.data.sources import resolve_dataset

    resolved = []
    for item in source.datasets:
        try:
            spec = DatasetSpec.model_validate(item)
        except ValueError as exc:
            raise UsageError(f"calibration dataset {item.get('path')}: {exc}", "check the run's job.yaml") from None
        try:
            resolved.append(resolve_dataset(spec, source.dataset_dir, source.base_dirs))
        except UsageError as exc:
            hint = exc.hint if source.origin == "request" else f"{exc.hint}; or choose one with --calibration"
            raise UsageError(f"calibration data: {exc.message}", hint) from None
    return resolved


CALIBRATION_HINT = "give a local file (json, jsonl, csv or parquet) with --calibration"


def calibration_rows(source: CalibrationSource, samples: int) -> tuple[list[dict[str, Any]], int]:
    """Up to `samples` canonical rows (messages / text / prompt+chosen) and how many rows could not be used."""
    from factory_cli.data.formats import RowError, convert_row
    from factory_cli.data.sources import raw_rows

    rows: list[dict[str, Any]] = []
    skipped = 0
    for resolved in resolve_calibration(source):
        if len(rows) >= samples:
            break
        spec = resolved.spec
        declared = source.stage or resolved.entry.stage
        stages = [declared] if declared else []
        stages += [s for s in _CALIBRATION_STAGES if s not in stages]
        limit = spec.max_samples or samples * 4  # bad rows are skipped; read a few more than needed
        for _, raw in raw_rows(resolved.entry, limit, hint=CALIBRATION_HINT):
            if len(rows) >= samples:
                break
            for stage in stages:
                try:
                    rows.append(convert_row(raw, resolved.format_spec, stage))
                    break
                except RowError:
                    continue
            else:
                skipped += 1
    if not rows:
        raise UsageError(
            f"no usable calibration rows in {', '.join(source.names)}",
            "give a dataset with --calibration (alpaca, sharegpt, messages or text rows)",
        )
    return rows, skipped


def _row_messages(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The conversation a calibration row shows the model (sft: all of it; dpo: prompt + chosen; grpo: prompt)."""
    if isinstance(row.get("messages"), list):
        return list(row["messages"])
    if isinstance(row.get("chosen"), list):
        return [*row.get("prompt", []), *row["chosen"]]
    if isinstance(row.get("prompt"), list):
        return list(row["prompt"])
    return None


def render_calibration_text(row: dict[str, Any], tokenizer: Any, template: str | None) -> str:
    """One calibration row as the model sees it: rendered with the chat template (plain text rows as they are)."""
    from factory_cli.data.chat_render import render_chat

    messages = _row_messages(row)
    if messages is None:
        return str(row.get("text", ""))
    if template is None:
        return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in messages)
    return render_chat(
        template,
        messages,
        tools=row.get("tools"),
        bos_token=tokenizer.bos_token if isinstance(tokenizer.bos_token, str) else "",
        eos_token=tokenizer.eos_token if isinstance(tokenizer.eos_token, str) else "",
    )


def calibration_token_ids(
    rows: Sequence[dict[str, Any]], tokenizer: Any, template: str | None, max_length: int
) -> list[list[int]]:
    """Token ids of each row rendered with the chat template, truncated to `max_length` (empty rows dropped)."""
    ids: list[list[int]] = []
    for row in rows:
        text = render_calibration_text(row, tokenizer, template)
        if not text.strip():
            continue
        chat = _row_messages(row) is not None and template is not None
        encoded = tokenizer(text, add_special_tokens=not chat, truncation=True, max_length=max_length)
        if encoded["input_ids"]:
            ids.append(list(encoded["input_ids"]))
    return ids


# ---------------------------------------------------------------------------------------------- llm-compressor


@contextlib.contextmanager
def _pin_memory_noop_without_accelerator() -> Iterator[None]:
    """llm-compressor's AWQ pins its cached activations to speed up host-to-device copies during the scale search.
    Pinning needs an accelerator (RuntimeError on CPU-only torch) and without one there is nothing to copy to, so
    for this block (and only without an accelerator) the cache's pin_memory does nothing."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _gptq_single_threaded_without_accelerator() -> Iterator[None]:
    """GPTQ's eager kernel updates one weight column at a time: hundreds of tiny tensor ops per layer, which gain
    nothing from more CPU threads and, when the cores are shared, lose a lot to OpenMP's thread barriers (a
    1536x576 SmolLM2 layer on 2 busy cores: 8.9 s with 2 threads, 0.29 s with 1). Without an accelerator, each
    call to the per-layer GPTQ solve runs single-threaded; calibration forwards keep torch's thread count."""
    import torch
    from llmcompressor.modifiers.gptq import base

    if torch.accelerator.is_available():
        yield
        return
    original = base.quantize_weight

    def single_threaded(*args: Any, **kwargs: Any) -> Any:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return original(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    base.quantize_weight = single_threaded
    try:
        yield
    finally:
        base.quantize_weight = original


def _quiet_llmcompressor() -> None:
    """Per-module INFO and METRIC lines (hundreds per model) and the "no accelerator" warnings off the console,
    unless LLM_COMPRESSOR_LOG_LEVEL says otherwise."""
    import os

    if os.environ.get("LLM_COMPRESSOR_LOG_LEVEL"):
        return
    from llmcompressor.logger import LoggerConfig, configure_logger

    configure_logger(LoggerConfig(console_log_level="ERROR"))


def _w4a16_scheme(group_size: int | None) -> Any:
    """4-bit symmetric integer weights, 16-bit activations: grouped scales, or per output channel when None."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    weights = QuantizationArgs(
        num_bits=4,
        type="int",
        symmetric=True,
        strategy="group" if group_size else "channel",
        group_size=group_size,
    )
    return QuantizationScheme(targets=["Linear"], weights=weights)


def llmcompressor_recipe(method: str, group_size: int | None) -> list[Any]:
    """The llm-compressor modifiers for `method` (awq / gptq: W4A16 sym; fp8: FP8 dynamic), lm_head ignored."""
    from llmcompressor.modifiers.quantization import QuantizationModifier

    ignore = list(IGNORED_LAYERS)
    if method == "fp8":
        return [QuantizationModifier(targets=["Linear"], scheme="FP8_DYNAMIC", ignore=ignore)]
    groups = {"group_0": _w4a16_scheme(group_size)}
    if method == "gptq":
        from llmcompressor.modifiers.gptq import GPTQModifier

        return [GPTQModifier(config_groups=groups, ignore=ignore)]
    if method == "awq":
        from llmcompressor.modifiers.transform.awq import AWQModifier

        return [AWQModifier(), QuantizationModifier(config_groups=groups, ignore=ignore)]
    raise ValueError(f"not an llm-compressor method: {method}")


def _require_llmcompressor(method: str) -> None:
    """A UsageError naming the extra when llm-compressor is not installed."""
    import importlib.util

    if importlib.util.find_spec("llmcompressor") is None:
        raise UsageError(
            f"--quant {method} needs llm-compressor, which is not installed",
            "pip install 'factory-cli[quant]'  (llmcompressor==0.14.0)",
        )


def quantize_llmcompressor(
    model: Any,
    tokenizer: Any,
    method: str,
    group_size: int | None,
    calibration_ids: Sequence[Sequence[int]],
    max_length: int,
    output: Path,
    shard_size: int | str = "5GB",
) -> None:
    """Quantize `model` in place with llm-compressor's oneshot and save it in compressed-tensors format."""
    _require_llmcompressor(method)
    _quiet_llmcompressor()
    from llmcompressor import oneshot

    recipe = llmcompressor_recipe(method, group_size)
    kwargs: dict[str, Any] = {}
    if method in W4A16_METHODS:
        from datasets import Dataset

        dataset = Dataset.from_dict(
            {"input_ids": [list(i) for i in calibration_ids], "attention_mask": [[1] * len(i) for i in calibration_ids]}
        )
        kwargs = {
            "dataset": dataset,
            "num_calibration_samples": len(dataset),
            "max_seq_length": max_length,
            "shuffle_calibration_samples": False,
        }
    workarounds = {"awq": _pin_memory_noop_without_accelerator, "gptq": _gptq_single_threaded_without_accelerator}
    workaround = workarounds.get(method, contextlib.nullcontext)
    try:
        with workaround():
            oneshot(model=model, processor=tokenizer, recipe=recipe, **kwargs)
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        if method == "fp8" and "float8" in str(exc).lower():
            raise UsageError(
                f"FP8 quantization is not available here: {exc}",
                "FP8 needs torch with float8 support (CUDA Hopper/Ada GPUs run it natively); try --quant gptq",
            ) from exc
        raise
    output.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # oneshot leaves an all-"cpu" hf_device_map on a CPU run, which makes save_pretrained warn about offloading
        warnings.filterwarnings("ignore", message="Attempting to save a model with offloaded modules")
        model.save_pretrained(str(output), save_compressed=True, max_shard_size=shard_size)
    tokenizer.save_pretrained(str(output))


# ---------------------------------------------------------------------------------------------- bitsandbytes


def bnb_quant_config(method: str, compute_dtype: str) -> Any:
    """BitsAndBytesConfig: LLM.int8 for int8, nf4 with double quantization for nf4."""
    from transformers import BitsAndBytesConfig

    from factory_cli.modeling.load import torch_dtype

    if method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch_dtype(compute_dtype),
    )


def quantize_bitsandbytes(
    weights_dir: Path, tokenizer: Any, method: str, dtype: str, device: Any, output: Path, shard_size: int | str = "5GB"
) -> list[str]:
    """Load `weights_dir` quantized by bitsandbytes on `device` and save it (bitsandbytes serialization); returns
    notes for the report."""
    import importlib.util

    from transformers import AutoModelForCausalLM

    from factory_cli.modeling.load import torch_dtype

    if importlib.util.find_spec("bitsandbytes") is None:
        raise UsageError(f"--quant {method} needs bitsandbytes, which is not installed", "pip install bitsandbytes")
    if device.kind == "npu":
        raise UsageError(f"--quant {method}: bitsandbytes does not run on Ascend NPUs", "use --quant gptq or awq")
    target = "cuda:0" if device.kind == "cuda" else "cpu"
    compute = dtype if device.is_accelerator else "fp32"
    notes: list[str] = []
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(weights_dir),
            quantization_config=bnb_quant_config(method, compute),
            device_map={"": target},
            dtype=torch_dtype(dtype),
        )
    except (ImportError, RuntimeError, NotImplementedError) as exc:
        raise UsageError(
            f"bitsandbytes cannot quantize to {method} on {device.kind}: {str(exc).splitlines()[0]}",
            "run on a CUDA GPU, or use --quant gptq / awq (compressed-tensors)",
        ) from exc
    if not getattr(model, "is_8bit_serializable" if method == "int8" else "is_4bit_serializable", True):
        raise UsageError(
            f"this bitsandbytes version cannot save {method} weights", "upgrade bitsandbytes, or use --quant gptq"
        )
    try:
        model.save_pretrained(str(output), max_shard_size=shard_size)
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        raise UsageError(
            f"bitsandbytes cannot save {method} weights on {device.kind}: {str(exc).splitlines()[0]}",
            "run on a CUDA GPU, or use --quant gptq / awq",
        ) from exc
    tokenizer.save_pretrained(str(output))
    from importlib.metadata import version

    where = "its CPU backend" if target == "cpu" else target
    notes.append(f"quantized by bitsandbytes {version('bitsandbytes')} on {where}")
    notes.append(f"the embeddings and lm_head stay in {dtype}")
    if method == "nf4":
        notes.append(f"nf4 with double quantization, compute dtype {compute}")
    else:
        notes.append("LLM.int8 multiplies in fp16: activations are cast to fp16 inside the int8 layers")
    return notes
