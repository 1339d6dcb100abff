"""Per-token log-probabilities through the LM head in two GEMMs, for CPUs (fp32), where TRL's tiled kernel needs three.

TRL's fused LM head (`trl.kernels.ChunkedLogProbFunction`) never keeps the `[tokens, vocab]` logits: its backward
recomputes every tile (a second vocabulary projection) and then folds it in a dozen element-wise torch passes. That is
the right trade on a GPU, where memory is short and Triton fuses the passes; on a CPU it makes the LM head the most
expensive layer of a LoRA step. Here the forward (in blocks of rows) keeps the probabilities of the scored rows, so
the backward is one GEMM (`grad_hidden = g * (W[target] - p @ W)`) and no pass over the vocabulary at all when, as in
SFT, only the log-probabilities carry a gradient and the head is frozen.

Same signature, same outputs, same gradients (to float rounding) as TRL's function; `DenseLogProb.apply` takes this
path only where it holds — float32 inputs outside autocast, no logit soft-capping, at most `MAX_KEPT_ELEMENTS`
probabilities kept per call — and hands every other call to TRL's kernel unchanged.

A frozen head stored in bf16 (LoRA runs with bf16 frozen base layers, frozen_bf16.py `bf16_lm_head`) takes the same
path with fp32 hidden states: both vocabulary GEMMs run bf16 x bf16 with fp32 accumulation, the logits are rounded to
bf16 once, and everything after them (log-sum-exp, probabilities, outputs, gradients) is fp32 — as a bf16 run on a
GPU treats its logits. Calls handed to TRL's kernel get that weight in the hidden states' dtype.
"""

from __future__ import annotations

from typing import Any

import torch
from trl.kernels.chunked_logprob import OPTIONAL_OUTPUTS

# Probabilities kept for the backward: 32M values = 128 MiB in fp32, 64 MiB for a bf16 head (forward temporaries: one
# block of ROWS_PER_CHUNK rows).
MAX_KEPT_ELEMENTS = 32 * 1024 * 1024
ROWS_PER_CHUNK = 128  # rows projected at a time in the forward (128 x 49k-token vocabulary: 25 MB of fp32 logits)


def frozen_bf16_head(hidden: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether fp32 hidden states meet a frozen bf16 head (the products then run in bf16, see the module docstring)."""
    return hidden.dtype == torch.float32 and weight.dtype == torch.bfloat16 and not weight.requires_grad


def _mm(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """a @ b multiplied in b's dtype, the result in `out_dtype`."""
    product = (a if a.dtype == b.dtype else a.to(b.dtype)) @ b
    return product if product.dtype == out_dtype else product.to(out_dtype)


def dense_path_applies(hidden: torch.Tensor, weight: torch.Tensor, softcap: float | None) -> bool:
    """Whether the two-GEMM path computes this call exactly and within its memory bound."""
    return (
        hidden.dtype == torch.float32
        and (weight.dtype == torch.float32 or frozen_bf16_head(hidden, weight))
        and softcap is None
        and not torch.is_autocast_enabled(hidden.device.type)
        and hidden.shape[0] * weight.shape[0] <= MAX_KEPT_ELEMENTS
    )


class DenseLogProbFunction(torch.autograd.Function):
    """`log p(target)` of `(hidden @ weight.T + bias) * logit_scale / temperature`, with TRL's optional outputs."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,  # [N, H]
        weight: torch.Tensor,  # [V, H]
        bias: torch.Tensor | None,  # [V]
        targets: torch.Tensor,  # [N]
        scale: float,
        outputs: tuple[str, ...],
    ) -> tuple[torch.Tensor | None, ...]:
        ctx.set_materialize_grads(False)
        rows, vocab = hidden.shape[0], weight.shape[0]
        # a bf16 head multiplies the probabilities in bf16 in the backward anyway: keep them in bf16 (half the bytes)
        probs = hidden.new_empty((rows, vocab), dtype=weight.dtype if frozen_bf16_head(hidden, weight) else None)
        log_z, target_logit = hidden.new_empty(rows), hidden.new_empty(rows)
        entropy = hidden.new_empty(rows) if "entropy" in outputs else None
        log_sum_sq = hidden.new_empty(rows) if "log_sum_sq_probs" in outputs else None
        mean_logits = hidden.new_empty(rows) if "mean_logits" in outputs else None
        is_top1 = torch.empty(rows, dtype=torch.bool, device=hidden.device) if "is_top1" in outputs else None
        for start in range(0, rows, ROWS_PER_CHUNK):  # row blocks: the fp32 temporaries stay a few MB
            part = slice(start, start + ROWS_PER_CHUNK)
            logits = _mm(hidden[part], weight.t(), hidden.dtype)
            if bias is not None:
                logits.add_(bias)
            if scale != 1.0:
                logits.mul_(scale)
            if mean_logits is not None:
                mean_logits[part] = logits.mean(-1)
            part_targets = targets[part].unsqueeze(1)
            target_logit[part] = logits.gather(1, part_targets).squeeze(1)
            if is_top1 is not None:  # argmax returns the first maximum: a tie with an earlier token is no top-1 hit
                is_top1[part] = logits.argmax(-1) == part_targets.squeeze(1)
            part_log_z = torch.logsumexp(logits, -1)
            log_z[part] = part_log_z
            log_p = logits.sub_(part_log_z.unsqueeze(1))  # in place: the logits are not needed any more
            if probs.dtype == log_p.dtype:
                part_probs = torch.exp(log_p, out=probs[part])
            else:
                part_probs = log_p.exp()
                probs[part] = part_probs
            if entropy is not None:
                entropy[part] = -torch.bmm(part_probs.unsqueeze(1), log_p.unsqueeze(2)).view(-1)
            if log_sum_sq is not None:
                log_sum_sq[part] = torch.log(torch.bmm(part_probs.unsqueeze(1), part_probs.unsqueeze(2)).view(-1))
            del logits, log_p, part_probs
        ctx.save_for_backward(hidden, weight, targets, probs, entropy if entropy is not None else log_z)
        ctx.scale = scale
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(*(x for x in (log_sum_sq, mean_logits, is_top1) if x is not None))
        return target_logit - log_z, entropy, log_sum_sq, mean_logits, is_top1

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_logprobs: torch.Tensor | None, grad_entropy: torch.Tensor | None, *_: Any
    ) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, targets, probs, entropy = ctx.saved_tensors
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        needs_bias = needs_bias and ctx.has_bias
        if grad_logprobs is None and grad_entropy is None:
            return None, None, None, None, None, None
        if grad_entropy is None and not needs_weight and not needs_bias:
            # d log p_t / d z = onehot(t) - p, so grad_hidden = g * (W[t] - p @ W): one GEMM, no vocabulary pass
            assert grad_logprobs is not None
            g = grad_logprobs.unsqueeze(1) * ctx.scale
            if not needs_hidden:
                return None, None, None, None, None, None
            target_rows = weight.index_select(0, targets).to(hidden.dtype)
            grad_hidden = (target_rows - _mm(probs, weight, hidden.dtype)).mul_(g)
            return grad_hidden, None, None, None, None, None
        probs = probs.to(hidden.dtype)  # fp32 for the element-wise gradient terms
        grad_logits = torch.zeros_like(probs)
        if grad_logprobs is not None:
            grad_logits.sub_(probs * grad_logprobs.unsqueeze(1))
            grad_logits.scatter_add_(1, targets.unsqueeze(1), grad_logprobs.unsqueeze(1))
        if grad_entropy is not None:
            # d H / d z_j = -p_j (log p_j + H); p log p is taken as 0 where p underflowed to 0
            p_log_p = torch.special.xlogy(probs, probs)
            grad_logits.sub_((p_log_p + probs * entropy.unsqueeze(1)) * grad_entropy.unsqueeze(1))
        grad_logits.mul_(ctx.scale)
        grad_hidden = _mm(grad_logits, weight, hidden.dtype) if needs_hidden else None
        grad_weight = grad_logits.t() @ hidden if needs_weight else None
        grad_bias = grad_logits.sum(0) if needs_bias else None
        return grad_hidden, grad_weight, grad_bias, None, None, None


class DenseLogProb:
    """Drop-in for TRL's `ChunkedLogProbFunction` (same `apply` signature and results); other calls go to `fallback`."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback

    def apply(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        temperature: float,
        chunk_size: int,
        final_logit_softcapping: float | None = None,
        logit_scale: float = 1.0,
        outputs: tuple[str, ...] = OPTIONAL_OUTPUTS,
    ) -> tuple[torch.Tensor | None, ...]:
        if not dense_path_applies(hidden, weight, final_logit_softcapping):
            if frozen_bf16_head(hidden, weight):
                weight = weight.to(hidden.dtype)  # TRL's kernel multiplies in one dtype
            return self.fallback.apply(  # type: ignore[no-any-return]
                hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping, logit_scale, outputs
            )
        result: tuple[torch.Tensor | None, ...] = DenseLogProbFunction.apply(
            hidden, weight, bias, targets, logit_scale / temperature, tuple(outputs)
        )
        return result
