"""Load what is being exported (a model, or an adapter merged into its base) and save it as a plain checkpoint.

`resolve_base` and `weights_size` are pure (paths and JSON); loading imports torch / transformers / peft.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory_cli.config.errors import UsageError
from factory_cli.inference.load import ModelDirInfo

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


@dataclass(frozen=True)
class BaseRef:
    """Where the full weights come from: a local checkpoint dir, or a reference to resolve (GGUF, Hub)."""

    reference: str
    # a directory with config.json, when known without converting or downloading (for a GGUF: its cached conversion)
    local_dir: Path | None
    kind: str  # "local" | "gguf" | "hub" | "registry"


def resolve_base(reference: str, base_dirs: Sequence[Path] = ()) -> BaseRef:
    """Where `reference` (a base model of an adapter, or a model reference) has its weights; pure, no download."""
    from factory_cli.config.schema import ModelSection
    from factory_cli.modeling.gguf import cached_hf_checkpoint
    from factory_cli.modeling.sources import resolve_model_source

    source = resolve_model_source(ModelSection(name_or_path=reference), base_dirs)
    if source.is_gguf:
        return BaseRef(reference, cached_hf_checkpoint(source), "gguf")
    if source.kind == "local":
        return BaseRef(reference, Path(source.path), "local")
    return BaseRef(reference, None, source.kind)


def read_config(directory: Path | None) -> dict[str, Any] | None:
    """A checkpoint's config.json, or None."""
    if directory is None or not (directory / "config.json").is_file():
        return None
    try:
        data = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def weights_size(path: Path) -> int:
    """Bytes of the weight files in a checkpoint dir (or of one file)."""
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def dir_size(path: Path) -> int:
    """Bytes of everything under `path` (or of one file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def auto_dtype(config: dict[str, Any] | None) -> str:
    """`auto` export dtype: bf16 when the base is stored in bf16, else fp32 (never a lossy fp16 by itself)."""
    stored = (config or {}).get("dtype") or (config or {}).get("torch_dtype")
    return "bf16" if stored in ("bfloat16", "bf16") else "fp32"


def source_gguf(weights_dir: Path) -> Path | None:
    """The GGUF file a cached checkpoint was converted from (modeling/gguf.py), if any."""
    from factory_cli.modeling.gguf import SOURCE_FILE

    try:
        data = json.loads((weights_dir / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    path = Path(str(data.get("gguf_file", ""))) if isinstance(data, dict) else None
    return path if path is not None and path.is_file() else None


@dataclass
class LoadedSource:
    """The model to export, in memory, with its tokenizer and where its weights came from."""

    model: Any
    tokenizer: Any
    weights_dir: Path  # the full checkpoint (the base, for an adapter)
    dtype: str
    size_bytes: int  # weights on disk: the checkpoint (+ the adapter)
    merged_adapter: bool = False
    notes: list[str] = field(default_factory=list)


def _checkpoint_dir(reference: str, base_dirs: Sequence[Path]) -> Path:
    """A local checkpoint for `reference`: as is, or a GGUF converted once into the cache (may download)."""
    from factory_cli.config.schema import ModelSection
    from factory_cli.modeling.download import fetch_model

    return Path(fetch_model(ModelSection(name_or_path=reference), base_dirs))


def _run_template(run_dir: Path | None) -> str | None:
    """The chat template a run trained with, when its job named one other than the tokenizer's own."""
    if run_dir is None:
        return None
    from factory_cli.runs import RunDir

    template = RunDir(run_dir).job().model.template
    return template if template not in ("auto", "tokenizer") else None


def _ensure_chat_template(tokenizer: Any, run_dir: Path | None, notes: list[str]) -> None:
    """Give the exported tokenizer the template the run trained with, when it has none of its own."""
    from factory_cli.data.masking import resolve_chat_template, tokenizer_chat_template

    if tokenizer_chat_template(tokenizer) is not None:
        return
    name = _run_template(run_dir)
    if name is None:
        return
    try:
        tokenizer.chat_template = resolve_chat_template(name, tokenizer, None, [run_dir] if run_dir else [])
    except ValueError:
        return
    notes.append(f"the tokenizer had no chat template; wrote the run's `{name}` template into it")


def load_source(info: ModelDirInfo, dtype: str, base_dirs: Sequence[Path] = ()) -> LoadedSource:
    """The model to export on CPU in `dtype` (`auto`: the base's): an adapter is merged (merge_and_unload)."""
    notes: list[str] = []
    if info.kind == "adapter":
        assert info.base is not None
        weights_dir = _checkpoint_dir(info.base, base_dirs)
    elif info.kind == "reference":
        weights_dir = _checkpoint_dir(info.path, base_dirs)
    else:
        weights_dir = Path(info.path)

    from transformers import AutoModelForCausalLM

    from factory_cli.modeling.load import load_tokenizer, torch_dtype

    config = read_config(weights_dir)
    resolved = auto_dtype(config) if dtype == "auto" else dtype
    model = AutoModelForCausalLM.from_pretrained(str(weights_dir), dtype=torch_dtype(resolved))
    size = weights_size(weights_dir)
    tokenizer_dir = weights_dir
    merged = False
    if info.kind == "adapter":
        from peft import PeftModel

        adapter_dir = Path(info.path)
        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
        merged = True
        size += weights_size(adapter_dir)
        if (adapter_dir / "tokenizer_config.json").is_file():
            tokenizer_dir = adapter_dir
        notes.append(f"merged the LoRA adapter {adapter_dir} into {info.base} (merge_and_unload, {resolved})")
    if info.kind == "reference" and source_gguf(weights_dir) is not None:
        notes.append(f"{info.reference} is a GGUF file; its weights were dequantized to {weights_dir}")
    tokenizer = load_tokenizer(str(tokenizer_dir))
    _ensure_chat_template(tokenizer, info.run_dir, notes)
    model.eval()
    return LoadedSource(model, tokenizer, weights_dir, resolved, size, merged, notes)


def save_checkpoint(source: LoadedSource, output: Path, shard_size: int | str) -> None:
    """save_pretrained (safetensors, shards of at most `shard_size`) with the tokenizer and its chat template."""
    if getattr(source.model, "peft_config", None):
        raise UsageError("the model still carries an unmerged adapter", "merge it first (leave --merge on)")
    output.mkdir(parents=True, exist_ok=True)
    try:
        source.model.save_pretrained(str(output), max_shard_size=shard_size)
    except ValueError as exc:
        if "size" in str(exc).lower():
            raise UsageError(f"bad shard size `{shard_size}`: {exc}", "use a size like 2GB or 500MB") from None
        raise
    source.tokenizer.save_pretrained(str(output))
