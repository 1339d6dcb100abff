"""Load a model for evaluation, export or chat: a registry name, a GGUF, a model dir, an adapter dir or a run dir.

`describe_model_dir` is pure (reads JSON only); `load_for_inference` imports torch/transformers/peft.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from factory_cli.config.errors import UsageError

ModelKind = Literal["full", "adapter", "quantized", "reference"]


@dataclass(frozen=True)
class ModelDirInfo:
    """What a model reference points at, before anything is loaded."""

    reference: str
    path: str
    kind: ModelKind
    base: str | None = None
    run_dir: Path | None = None
    quantization: str | None = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", "is this a model directory?") from None
    return data if isinstance(data, dict) else {}


def describe_model_dir(reference: str, base_dirs: Sequence[Path] = ()) -> ModelDirInfo:
    """Classify `reference`: a run directory (-> its final/), an adapter, a (quantized) model dir, or a name."""
    candidates = [Path(reference).expanduser()] + [b / reference for b in base_dirs]
    local = next((c for c in candidates if c.exists()), None)
    if local is None:
        return ModelDirInfo(reference, reference, "reference")
    from factory_cli.runs import RunDir

    refuse_unsealed_checkpoint(local)
    run_dir = None
    if RunDir(local).is_run_dir() and RunDir(local).final_dir.is_dir():
        run_dir, local = local, RunDir(local).final_dir
    elif RunDir(local.parent).is_run_dir() and RunDir(local.parent).final_dir == local:
        run_dir = local.parent
    if local.is_dir() and (local / "adapter_config.json").is_file():
        base = _read_json(local / "adapter_config.json").get("base_model_name_or_path")
        if not base:
            raise UsageError(f"{local} is a LoRA adapter without base_model_name_or_path", "give the base model")
        return ModelDirInfo(reference, str(local), "adapter", base=str(base), run_dir=run_dir)
    if local.is_dir() and (local / "config.json").is_file():
        quant = _read_json(local / "config.json").get("quantization_config") or {}
        method = quant.get("quant_method") or quant.get("format")
        kind: ModelKind = "quantized" if method else "full"
        return ModelDirInfo(reference, str(local), kind, run_dir=run_dir, quantization=method)
    if local.is_file() and local.suffix == ".gguf":
        return ModelDirInfo(reference, str(local), "reference")
    raise UsageError(f"{local} is neither a model, an adapter nor a run directory", "give a folder with config.json")


def refuse_unsealed_checkpoint(local: Path) -> None:
    """A run's checkpoint folder counts once sealed: one a stop left half-written is refused, naming the last sealed."""
    from factory_cli.runs import CHECKPOINT_DIR, CHECKPOINT_PATTERN, RunDir, is_complete

    if not (local.is_dir() and CHECKPOINT_PATTERN.match(local.name) and local.parent.name == CHECKPOINT_DIR):
        return
    if is_complete(local):
        return
    run = RunDir(local.parent.parent)
    last = run.last_complete_checkpoint()
    hint = f"use the last sealed checkpoint {last}" if last else f"no checkpoint of {run.path} is sealed yet"
    if run.final_dir.is_dir():
        hint += f"; the finished model is {run.final_dir}"
    raise UsageError(
        f"{local} is an incomplete checkpoint (no factory_complete.json: the run stopped while writing it)", hint
    )


@dataclass
class LoadedModel:
    """A model ready to generate or score, with its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    info: ModelDirInfo
    device: str


def _hf_path(reference: str, base_dirs: Sequence[Path]) -> str:
    """A registry name, GGUF or Hub id -> a local folder from_pretrained takes (downloaded or converted once)."""
    from factory_cli.config.schema import ModelSection
    from factory_cli.modeling.download import fetch_model

    return fetch_model(ModelSection(name_or_path=reference), base_dirs)


def load_for_inference(
    reference: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    merge_adapter: bool = True,
    base_dirs: Sequence[Path] = (),
) -> LoadedModel:
    """Load for generation/scoring: adapters on their base (merged unless asked not to), eval mode, on `device`."""
    info = describe_model_dir(reference, base_dirs)
    weights = info.base if info.kind == "adapter" else info.path
    assert weights is not None
    # on disk (or a refusal) before the heavy imports: a model no hub can serve is one message within seconds
    weights_path = weights if info.kind in ("full", "quantized") else _hf_path(weights, base_dirs)

    from transformers import AutoModelForCausalLM

    from factory_cli.config.defaults import DeviceFacts, resolve_precision
    from factory_cli.devices import detect_device
    from factory_cli.modeling.load import load_tokenizer, torch_dtype

    found = detect_device(device)
    resolved = resolve_precision(dtype, DeviceFacts(found.kind, found.bf16))
    kwargs: dict[str, Any] = {"dtype": torch_dtype(resolved)}
    if info.kind == "quantized":
        kwargs = {"dtype": "auto"}
    model: Any = AutoModelForCausalLM.from_pretrained(weights_path, **kwargs)
    tokenizer_path = info.path if info.kind != "reference" else weights_path
    if info.kind == "adapter":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, info.path)
        if merge_adapter:
            model = model.merge_and_unload()
        if not Path(info.path, "tokenizer_config.json").is_file():
            tokenizer_path = weights_path
    tokenizer = load_tokenizer(tokenizer_path)
    target = {"cuda": "cuda", "npu": "npu", "cpu": "cpu"}[found.kind]
    if info.kind != "quantized" or target == "cpu":
        model = model.to(target)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, info=info, device=target)
