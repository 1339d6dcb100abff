"""Padding-free attention for sdpa: each example of a flattened micro batch attends only to itself.

A padding-free micro batch (TRL's `padding_free`, or packed rows) is one row holding several examples end to end,
with position ids restarting at each. flash-attention reads the example boundaries and computes one causal block
per example. With `sdpa`, Transformers instead builds a dense `[tokens, tokens]` block-diagonal mask: attention then
costs the square of the whole row (and, on the CPU, a materialized mask and attention matrix per layer), which is
what made packing slower than no packing on the CPU.

`factory_varlen_sdpa` is registered with Transformers' AttentionInterface and runs plain causal sdpa once per
example, from the boundaries TRL's collator passes (`cu_seq_lens_q`) or, failing those, from the position-id resets.
Its mask function builds no mask for such rows; every other call (generation with a cache, padded batches) gets
Transformers' own sdpa mask and sdpa attention unchanged. Models with sliding-window or chunked layers keep plain
sdpa (their masks are more than causal blocks).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

ATTENTION_NAME = "factory_varlen_sdpa"


def segment_bounds(length: int, cu_seq_lens: torch.Tensor | None, position_ids: torch.Tensor | None) -> list[int]:
    """Start offsets of the examples in a row of `length` tokens, plus `length`: from cu_seq_lens, else from the
    positions where the position id does not continue the previous one."""
    if cu_seq_lens is not None:
        bounds = [int(b) for b in cu_seq_lens.tolist()]
    elif position_ids is not None:
        row = position_ids.reshape(-1)[:length]
        starts = (row[1:] != row[:-1] + 1).nonzero().flatten().add(1).tolist()
        bounds = [0, *starts, length]
    else:
        bounds = [0, length]
    if bounds[0] != 0 or bounds[-1] != length:
        raise ValueError(f"sequence bounds {bounds} do not cover a row of {length} tokens")
    return bounds


def _one_row_without_mask(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None) -> bool:
    return attention_mask is None and query.shape[0] == 1 and query.shape[2] == key.shape[2] and query.shape[2] > 1


def varlen_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [1, heads, tokens, head_dim]
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal sdpa per example of a flattened row; any other call is Transformers' sdpa attention."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not _one_row_without_mask(query, key, attention_mask):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    bounds = segment_bounds(query.shape[2], kwargs.get("cu_seq_lens_q"), kwargs.get("position_ids"))
    if len(bounds) == 2:
        return sdpa_attention_forward(module, query, key, value, None, dropout, scaling, is_causal=True)
    outputs = [
        sdpa_attention_forward(
            module,
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            None,
            dropout,
            scaling,
            is_causal=True,
        )[0]
        for start, end in itertools.pairwise(bounds)
    ]
    return torch.cat(outputs, dim=1), None  # [1, tokens, heads, head_dim], as sdpa_attention_forward returns


def varlen_sdpa_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor | None:
    """No mask for a single unpadded row seen whole (the attention splits it); Transformers' sdpa mask otherwise."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None and batch_size == 1 and q_length == kv_length and q_offset == 0 and kv_offset == 0:
        return None
    mask: torch.Tensor | None = sdpa_mask(
        batch_size=batch_size,
        q_length=q_length,
        kv_length=kv_length,
        q_offset=q_offset,
        kv_offset=kv_offset,
        attention_mask=attention_mask,
        **kwargs,
    )
    return mask


def register_varlen_sdpa() -> str:
    """Make `factory_varlen_sdpa` known to Transformers (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, varlen_sdpa_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, varlen_sdpa_mask)
    return ATTENTION_NAME


def varlen_fits(config: Any) -> bool:
    """Whether every attention layer of the model is plain causal (no sliding window, no chunked attention)."""
    layer_types = getattr(config, "layer_types", None) or []
    if any(kind != "full_attention" for kind in layer_types):
        return False
    sliding = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    return not sliding and not getattr(config, "attention_chunk_size", None)


def use_varlen_sdpa(model: Any) -> bool:
    """Switch a model that runs sdpa to factory_varlen_sdpa where its layers allow; returns whether it did."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa" or not varlen_fits(config):
        return False
    name = register_varlen_sdpa()
    model.set_attn_implementation(name)
    return True
