"""Frozen base layers of a LoRA model multiplied in bf16, everything that learns kept in fp32.

In an fp32 LoRA run almost every multiply-add goes through the frozen base weights: the forward GEMM and, because
the adapters below need it, the input-gradient GEMM of the backward. On a CPU with AMX-BF16 units (Xeon Sapphire
Rapids and later) a bf16 GEMM with fp32 accumulation is ~3x an fp32 one. `method.lora.base_precision: bf16` stores
each frozen base Linear of a LoRA layer in bf16 (half the memory) and computes `x @ W.T` as bf16 x bf16 -> fp32;
activations, attention, norms, the LoRA adapters, the loss, gradients and the optimizer stay fp32. It is the CPU
counterpart of training over a bf16 base on a GPU, with fp32 activations.

Nothing but the frozen weight is saved for the backward (its gradient is not wanted), so the layer also keeps no
copy of its input. The fp32 originals are released: the other frozen weights are copied out of the memory-mapped
checkpoint, so the run holds ~2 bytes per frozen base parameter instead of 4.

The frozen LM head is stored in bf16 the same way (`bf16_lm_head`): its vocabulary GEMMs (the compact scoring path of
dense_logprob.py, or the head's own forward) run in bf16, and an input embedding tied to it hands fp32 rows to the
model.
"""

from __future__ import annotations

from typing import Any

import torch


class _FrozenBf16Linear(torch.autograd.Function):
    """y = x @ W.T + b with W frozen in bf16: bf16 inputs, fp32 accumulation, y and dx in x's dtype."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(weight)
        y = torch.nn.functional.linear(x.to(weight.dtype), weight).to(x.dtype)
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (weight,) = ctx.saved_tensors
        return (grad.to(weight.dtype) @ weight).to(grad.dtype), None, None


def _bf16_forward(layer: torch.nn.Linear) -> Any:
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _FrozenBf16Linear.apply(x, layer.weight, layer.bias)

    return forward


def bf16_frozen_base_layers(model: Any) -> int:
    """Switch every frozen fp32 base Linear under a PEFT LoRA layer to bf16 weights and GEMMs; returns how many.

    Layers whose weight trains, that are not plain Linears (quantized, conv) or that are not fp32 stay as they are.
    """
    from peft.tuners.lora import LoraLayer

    switched = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        base = module.get_base_layer()
        if type(base) is not torch.nn.Linear or base.weight.requires_grad or base.weight.dtype != torch.float32:
            continue
        base.weight.data = base.weight.data.to(torch.bfloat16)
        base.forward = _bf16_forward(base)  # type: ignore[method-assign]
        switched += 1
    if switched:
        _own_frozen_tensors(model)
    return switched


def _own_frozen_tensors(model: Any) -> None:
    """Copy the remaining frozen weights out of the memory-mapped checkpoint, so that the mapping (which still holds
    the fp32 originals of the converted layers) is released."""
    for parameter in model.parameters():
        if not parameter.requires_grad and parameter.dtype == torch.float32:
            parameter.data = parameter.data.clone()


def bf16_lm_head(model: Any) -> bool:
    """Store the frozen LM head in bf16 with bf16 GEMMs and fp32 outputs; a tied input embedding keeps returning fp32.
    Returns whether the head was switched (not when it trains or is not a plain fp32 Linear)."""
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.weight.requires_grad or head.weight.dtype != torch.float32:
        return False
    embedding = model.get_input_embeddings()
    tied = embedding is not None and getattr(embedding, "weight", None) is head.weight
    head.weight.data = head.weight.data.to(torch.bfloat16)
    head.forward = _bf16_forward(head)  # type: ignore[method-assign]
    if tied:
        embedding.register_forward_hook(_fp32_rows)
    return True


def _fp32_rows(module: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of an embedding whose (tied) weight is bf16: the model's activations stay fp32."""
    return output.float()
