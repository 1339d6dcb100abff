"""Activations a LoRA A matrix rebuilds in its backward instead of keeping.

A LoRA adapter's A matrix needs its input for its weight gradient. In a Llama-style decoder layer those inputs are
the two RMSNorm outputs (read by q, k, v and by gate, up) and the SwiGLU product silu(gate) * up (read by down); a
plain LoRA backward keeps all three, 1 + 1 + 2.7 floats per hidden unit and token. Each is a cheap elementwise
function of tensors the backward keeps anyway: the norm's fp32 input and its per-row 1/rms (the norm's own backward
keeps them), and gate and up (the SwiGLU backward keeps them). So the module that makes such an activation tags it
with a *recipe* — a function and those kept tensors — and the LoRA A matrix (`_LinearRebuildingInput`) keeps the
recipe's tensors instead of the activation, rebuilding it, bit for bit, for A's gradient. An adapter with dropout
(`method.lora.dropout` > 0) reads a dropped copy, which carries no recipe: PEFT's A keeps that copy as it does.

SwiGLU runs as one autograd Function that keeps gate and up; torch's silu -> mul chain also keeps silu(gate). The
function's gradients are the ones the chain computes (`aten.silu_backward` of grad * up, and grad * silu(gate)).

Only modules whose forward is exactly the Llama one are switched (`LlamaMLP.forward`, `LlamaRMSNorm.forward`,
compared by code object: Qwen2, Qwen3, Mistral and the other families that copy them qualify); others run as they
are. No tag is made while gradients are off (generation, a DPO reference pass).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

_RECIPE_ATTRIBUTE = "_factory_recipe"

Recipe = tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]


def tag(output: torch.Tensor, function: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
    """Mark `output` as `function(*inputs)`; the inputs are kept detached (sharing storage and version counter)."""
    recipe: Recipe = (function, tuple(tensor.detach() for tensor in inputs))
    setattr(output, _RECIPE_ATTRIBUTE, (recipe, output._version))
    return output


def recipe_of(tensor: torch.Tensor) -> Recipe | None:
    """The recipe `tensor` was tagged with, or None (also when the tensor was changed in place since)."""
    found = getattr(tensor, _RECIPE_ATTRIBUTE, None)
    if found is None or found[1] != tensor._version:
        return None
    recipe: Recipe = found[0]
    return recipe


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up, computed the way the Llama MLP computes it."""
    return torch.nn.functional.silu(gate) * up


class _SwiGLU(torch.autograd.Function):
    """silu(gate) * up keeping only gate and up for the backward."""

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return swiglu(gate, up)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        gate, up = ctx.saved_tensors
        grad_gate = torch.ops.aten.silu_backward(grad * up, gate) if ctx.needs_input_grad[0] else None
        grad_up = grad * torch.nn.functional.silu(gate) if ctx.needs_input_grad[1] else None
        return grad_gate, grad_up


def swiglu_keeping_inputs(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up through `_SwiGLU`, tagged with its recipe, while gradients are on."""
    if not torch.is_grad_enabled():
        return swiglu(gate, up)
    product: torch.Tensor = _SwiGLU.apply(gate, up)
    return tag(product, swiglu, gate, up)


def _mlp_forward(mlp: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = mlp.down_proj(swiglu_keeping_inputs(mlp.gate_proj(x), mlp.up_proj(x)))
        return result

    return forward


def _norm_forward(norm: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden = hidden_states.to(torch.float32)
        inverse_rms = torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        output: torch.Tensor = norm.weight * (hidden * inverse_rms).to(input_dtype)
        if hidden_states.requires_grad and input_dtype == torch.float32:  # else its backward keeps nothing of it
            tag(output, _llama_norm_output, hidden, inverse_rms, norm.weight)
        return output

    return forward


def _llama_norm_output(hidden: torch.Tensor, inverse_rms: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return weight * (hidden * inverse_rms)


def _same_code(method: Any, reference: Any) -> bool:
    code, expected = getattr(method, "__code__", None), reference.__code__
    return code is not None and (code.co_code, code.co_names, code.co_consts) == (
        expected.co_code,
        expected.co_names,
        expected.co_consts,
    )


def _is_silu(activation: Any) -> bool:
    from transformers.activations import SiLUActivation

    return type(activation) in (torch.nn.SiLU, SiLUActivation)


class _LinearRebuildingInput(torch.autograd.Function):
    """y = x @ W.T keeping W and the tensors of x's recipe, not x; x is rebuilt for W's gradient."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")  # a bf16 run's backward multiplies under the forward's autocast too
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, recipe: Recipe) -> torch.Tensor:
        ctx.save_for_backward(weight, *recipe[1])
        ctx.rebuild = recipe[0]
        return torch.nn.functional.linear(x, weight)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        weight, *kept = ctx.saved_tensors
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            x = ctx.rebuild(*kept)
            grad_weight = grad.reshape(-1, grad.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        return grad_x, grad_weight, None


def adapter_a_forward(lora_a: torch.nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward of a LoRA A matrix that rebuilds a tagged input in its backward instead of keeping it."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        recipe = recipe_of(x) if lora_a.training else None
        if recipe is None:
            return torch.nn.functional.linear(x, lora_a.weight)
        result: torch.Tensor = _LinearRebuildingInput.apply(x, lora_a.weight, recipe)
        return result

    return forward


def _rebuild_adapter_inputs(model: Any) -> int:
    """Switch the A matrix of every plain LoRA adapter without dropout (no DoRA or other variant, no bias) to
    `adapter_a_forward`; returns how many."""
    from peft.tuners.lora import LoraLayer

    switched = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        for name, dropout in module.lora_dropout.items():
            lora_a: Any = module.lora_A[name] if name in module.lora_A else None  # noqa: SIM401 (a ModuleDict)
            variant = name in getattr(module, "lora_variant", {})
            plain = type(lora_a) is torch.nn.Linear and lora_a.bias is None and not variant
            if plain and type(dropout) is torch.nn.Identity:
                lora_a.forward = adapter_a_forward(lora_a)
                switched += 1
    return switched


def recompute_adapter_inputs(model: Any) -> tuple[int, int, int]:
    """Switch every Llama-style MLP to the SwiGLU Function, every Llama-style RMSNorm to a tagging forward and the A
    matrix of every plain adapter without dropout to one that rebuilds its tagged input; returns (MLPs, norms, A
    matrices) switched. (The SwiGLU Function alone already keeps one tensor less than torch's silu -> mul chain.)"""
    from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

    adapters = _rebuild_adapter_inputs(model)
    mlps = norms = 0
    for module in model.modules():
        forward = type(module).forward
        if _same_code(forward, LlamaMLP.forward) and _is_silu(module.act_fn):
            module.forward = _mlp_forward(module)
            mlps += 1
        elif _same_code(forward, LlamaRMSNorm.forward):
            module.forward = _norm_forward(module)
            norms += 1
    return mlps, norms, adapters
