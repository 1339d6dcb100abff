"""LoRA dropout whose masks come from a counter-based hash instead of torch's serial CPU generator.

PEFT puts an `nn.Dropout` in front of every LoRA adapter; with `target: all` that is 7 modules per decoder layer,
each drawing one random number per input element per step. torch's CPU generator (mt19937, one element at a time)
makes that ~16% of a LoRA step on the CPU — more than attention. Here each mask is a hash of the element's position,
drawn in a handful of vectorized integer passes over the tensor: the murmur3 finalizer of `position x odd_key +
offset_key`, each 32-bit hash split into the 16-bit uniforms of two elements and compared with a threshold. Each
element is kept with probability 1 - p (p resolved to 2^-16), and the mask is scaled by 1 / (1 - p), as nn.Dropout
does. The two keys are drawn per call from torch's own generator, so a seed fixes every mask, resumed runs (whose
generator state is restored) continue the same stream, and no two calls share a stream. The masks are different
numbers from nn.Dropout's, drawn from the same distribution. The mask is kept for the backward as one bit per
element (nn.Dropout keeps four bytes): packed 8 to a byte by one int64 multiplication, unpacked by another.

In plain LoRA (no DoRA or other variant) the dropout is folded into the adapter's A matrix: `(x * keep * scale) @
A.T` is one autograd node that keeps its input `x` and the bit mask, and recomputes the dropped copy for A's
gradient. `x` is the very tensor the neighbouring adapters see (q, k and v read one input, gate and up another), so
the step keeps one copy of it where PEFT's dropout -> A chain keeps a dropped fp32 copy per adapter — and where `x`
carries a recipe (recomputed_activations.py), not even that: the recipe's tensors, which the backward keeps anyway.

CPU only: CUDA's fused dropout is already fast. FACTORY_HASH_DROPOUT=0 keeps PEFT's nn.Dropout.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from factory_cli.backends.deepspeed.recomputed_activations import Recipe, recipe_of

ENV_SWITCH = "FACTORY_HASH_DROPOUT"
_M1, _M2 = 0x85EBCA6B, 0xC2B2AE35  # murmur3 fmix32 multipliers


def _int32(value: int) -> int:
    """`value` modulo 2^32 as a signed 32-bit integer (what an int32 tensor holds)."""
    return ((value + 2**31) % 2**32) - 2**31


def _xorshift_right(h: torch.Tensor, bits: int) -> None:
    """h ^= h >>> bits, a logical shift on int32 (the arithmetic shift's sign bits masked off)."""
    h.bitwise_xor_(h.bitwise_right_shift(bits).bitwise_and_((1 << (32 - bits)) - 1))


def hash_uniform_int32(rows: int, cols: int, odd_key: int, offset_key: int, device: Any = None) -> torch.Tensor:
    """(rows, cols) int32 values, uniform over all 2^32 of them: fmix32(position x odd_key + offset_key)."""
    odd = _int32(odd_key | 1)
    row_part = torch.arange(rows, dtype=torch.int32, device=device).mul_(_int32(odd * cols))
    col_part = torch.arange(cols, dtype=torch.int32, device=device).mul_(odd).add_(_int32(offset_key))
    h = row_part[:, None] + col_part[None, :]
    _xorshift_right(h, 16)
    h.mul_(_int32(_M1))
    _xorshift_right(h, 13)
    h.mul_(_int32(_M2))
    _xorshift_right(h, 16)
    return h


def keep_mask(shape: torch.Size, p: float, device: Any = None) -> torch.Tensor:
    """A uint8 mask of `shape`, each element 1 with probability 1 - p; keys from torch's default generator."""
    odd_key, offset_key = torch.randint(0, 2**32, (2,), dtype=torch.int64).tolist()
    count = shape.numel()
    threshold = round(p * 2**16) - 2**15  # v >= threshold for a fraction 1 - p of all int16 values
    # Each 32-bit hash gives two elements their 16-bit uniforms: half the hashing, and half the temporary memory
    # (which, below glibc's mmap threshold, comes from the heap instead of fresh pages). In place and in integers:
    # torch's bool kernels are several times slower on the CPU.
    halves = hash_uniform_int32(1, (count + 1) // 2, odd_key, offset_key, device).view(torch.int16)[:count]
    return halves.ge_(threshold).to(torch.uint8).view(shape)


def _int64(value: int) -> int:
    """`value` modulo 2^64 as a signed 64-bit integer."""
    return ((value + 2**63) % 2**64) - 2**63


_GATHER_BITS = _int64(0x0102040810204080)  # x * this: bit 8i of x (byte i) lands on bit 56 + i
_REPEAT_BYTE = 0x0101010101010101  # b * this: b in every byte
_BIT_OF_BYTE = _int64(0x8040201008040201)  # bit i of byte i


def pack_mask(keep: torch.Tensor) -> torch.Tensor:
    """A 0/1 uint8 mask packed 8 elements to a byte (element i of each 8 -> bit i); unpacked as it is when its size is
    not a multiple of 8. Two integer passes over one eighth of the elements: the 8 bytes read as one int64, their
    low bits gathered by one multiplication (all partial products on distinct bits, so no carries)."""
    if keep.numel() % 8 or not keep.is_contiguous() or sys.byteorder != "little":
        return keep
    words = keep.reshape(-1).view(torch.int64)
    return words.mul(_GATHER_BITS).bitwise_right_shift_(56).bitwise_and_(0xFF).to(torch.uint8)


def unpack_mask(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The 0/1 uint8 mask of `shape` that `pack_mask` packed."""
    if packed.numel() == shape.numel():
        return packed.view(shape)
    words = packed.to(torch.int64).mul_(_REPEAT_BYTE).bitwise_and_(_BIT_OF_BYTE)
    return words.view(torch.uint8).clamp_(max=1).view(shape)


class _Masked(torch.autograd.Function):
    """y = x * keep * scale; the backward applies the same mask and scale (the mask is kept as one bit)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(pack_mask(keep))
        ctx.mask_shape, ctx.scale = keep.shape, scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (packed,) = ctx.saved_tensors
        return grad.mul(unpack_mask(packed, ctx.mask_shape)).mul_(ctx.scale), None, None


class _DroppedLinear(torch.autograd.Function):
    """y = (x * keep * scale) @ W.T; keeps x (or the recipe that rebuilds it), W and the mask (one bit per element),
    and recomputes the dropped input for W's gradient. `keep` None: no dropout."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")  # a bf16 run's backward multiplies under the forward's autocast too
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        keep: torch.Tensor | None,
        scale: float,
        recipe: Recipe | None,
    ) -> torch.Tensor:
        packed = None if keep is None else pack_mask(keep)
        if recipe is None:
            ctx.save_for_backward(weight, packed, x)
        else:
            ctx.save_for_backward(weight, packed, *recipe[1])
        ctx.rebuild = None if recipe is None else recipe[0]
        ctx.mask_shape = None if keep is None else keep.shape
        ctx.scale = scale
        return torch.nn.functional.linear(x if keep is None else x.mul(keep).mul_(scale), weight)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        weight, packed, *kept = ctx.saved_tensors
        keep = None if packed is None else unpack_mask(packed, ctx.mask_shape)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ weight if keep is None else (grad @ weight).mul_(keep).mul_(ctx.scale)
        grad_weight = None
        if ctx.needs_input_grad[1]:
            x = kept[0] if ctx.rebuild is None else ctx.rebuild(*kept)
            dropped = x if keep is None else x.mul(keep).mul_(ctx.scale)
            grad_weight = grad.reshape(-1, grad.shape[-1]).t() @ dropped.reshape(-1, dropped.shape[-1])
        return grad_x, grad_weight, None, None, None


def folded_dropout_forward(lora_a: torch.nn.Linear, p: float) -> Any:
    """The forward of a LoRA A matrix with the adapter's dropout folded in and its input rebuilt from a recipe
    (recomputed_activations.py) where the input has one; a plain matmul outside training."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not lora_a.training or x.numel() == 0:
            return torch.nn.functional.linear(x, lora_a.weight)
        keep = keep_mask(x.shape, p, x.device) if p > 0 else None
        result: torch.Tensor = _DroppedLinear.apply(x, lora_a.weight, keep, 1 / (1 - p), recipe_of(x))
        return result

    return forward


class HashDropout(torch.nn.Module):
    """nn.Dropout(p) with hash-drawn masks (see the module docstring)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.numel() == 0:
            return x
        result: torch.Tensor = _Masked.apply(x, keep_mask(x.shape, self.p, x.device), 1.0 / (1.0 - self.p))
        return result

    def extra_repr(self) -> str:
        return f"p={self.p}"


def hash_lora_dropout(model: Any, fold_without_dropout: bool = False) -> int:
    """Replace the nn.Dropout in front of every LoRA adapter with hash-drawn masks — folded into the A matrix of a
    plain adapter, a HashDropout module where a variant (DoRA ...) reads the dropout itself; returns how many.
    `fold_without_dropout`: plain adapters without dropout get the folded A too (it takes recipes for its input)."""
    from peft.tuners.lora import LoraLayer

    replaced = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        for name, dropout in list(module.lora_dropout.items()):
            lora_a: Any = module.lora_A[name] if name in module.lora_A else None  # noqa: SIM401 (a ModuleDict)
            variant = name in getattr(module, "lora_variant", {})
            plain = type(lora_a) is torch.nn.Linear and lora_a.bias is None and not variant
            if type(dropout) is torch.nn.Identity and plain and fold_without_dropout:
                lora_a.forward = folded_dropout_forward(lora_a, 0.0)
            if type(dropout) is not torch.nn.Dropout or dropout.p == 0:
                continue
            if not plain:
                module.lora_dropout[name] = HashDropout(dropout.p)
            else:
                module.lora_dropout[name] = torch.nn.Identity()
                lora_a.forward = folded_dropout_forward(lora_a, dropout.p)
            replaced += 1
    return replaced
