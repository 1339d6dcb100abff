"""Loading for training: the tokenizer (with a pad token) and AutoModelForCausalLM in the resolved job's dtype and
attention (4/8-bit base weights for qlora). `auto` is resolved before this point, by config/defaults.py."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from factory_cli.config.errors import UsageError
from factory_cli.devices import DeviceInfo

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from factory_cli.config.schema import MethodSection, QuantConfig

_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def torch_dtype(name: str) -> torch.dtype:
    """`bf16` / `fp16` / `fp32` as a torch dtype."""
    import torch

    if name not in _DTYPES:
        raise ValueError(f"unknown dtype `{name}`; expected one of {sorted(_DTYPES)}")
    dtype: torch.dtype = getattr(torch, _DTYPES[name])
    return dtype


def load_tokenizer(
    path: str, *, trust_remote_code: bool = False, revision: str | None = None
) -> PreTrainedTokenizerBase:
    """The fast tokenizer at `path`, with a pad token (eos, else unk) and right padding for training."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise UsageError(
                f"the tokenizer at {path} has no pad, eos or unk token to pad with",
                hint="set a pad_token in its tokenizer_config.json",
            )
        tokenizer.pad_token = fallback
    tokenizer.padding_side = "right"
    return tokenizer


def bnb_config(quant: QuantConfig) -> Any:
    """The BitsAndBytesConfig for QLoRA's base weights (compute dtype as the resolved job says)."""
    import torch
    from transformers import BitsAndBytesConfig

    storage = torch.uint8 if quant.storage_dtype == "uint8" else torch_dtype(quant.storage_dtype)
    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(quant.compute_dtype),
        bnb_4bit_quant_storage=storage,
    )


def _quantized_device_map(device: DeviceInfo) -> dict[str, Any]:
    """Where a bitsandbytes model is placed: this process's device (quantized weights cannot move later)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.kind == "cuda":
        return {"": local_rank}
    if device.kind == "npu":
        return {"": f"npu:{local_rank}"}
    return {"": "cpu"}


def load_model(
    path: str,
    *,
    dtype: str,
    attn_implementation: str,
    method: MethodSection,
    device: DeviceInfo,
    trust_remote_code: bool = False,
    revision: str | None = None,
    device_map: Any = None,
) -> PreTrainedModel:
    """AutoModelForCausalLM for training in the resolved job's dtype and attention, 4/8-bit base weights for qlora.

    `auto` is refused: config/defaults.resolve_device_defaults fills it for the job, and code that loads a model
    outside a job derives its dtype with the same function (defaults.resolve_precision).
    """
    from transformers import AutoModelForCausalLM

    if "auto" in (dtype, attn_implementation):
        raise ValueError(f"load_model takes resolved values, not dtype {dtype} / attention {attn_implementation}")
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype(dtype),
        "attn_implementation": attn_implementation,
        "trust_remote_code": trust_remote_code,
        "revision": revision,
    }
    if method.type == "qlora":
        kwargs["quantization_config"] = bnb_config(method.quant)
        kwargs["device_map"] = device_map if device_map is not None else _quantized_device_map(device)
    elif device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model.config.use_cache = False  # the KV cache only costs memory during training
    return model
