"""Parameter counts from an Architecture: the total, and the active share a token passes through (MoE).

Pure arithmetic over the config.json numbers, so `factory list models` needs no weights. Counted: embeddings (and
the output layer unless tied), attention projections (GQA, or DeepSeek's multi-head latent attention with its
norms), gated MLPs (dense, routed experts, shared experts and their gate), routers and RMSNorm weights. Not counted:
biases (Qwen2's q/k/v bias is under 0.01% of a model), DeepSeek-V3's multi-token-prediction layer (not part of
the published 671B). tests/unit/test_model_registry.py holds the counts to the published totals.
"""

from __future__ import annotations

from dataclasses import dataclass

from factory_cli.registry.models import Architecture


@dataclass(frozen=True)
class ParameterCount:
    """Parameters in the model, those one token uses (equal for a dense model) and the routed experts' share."""

    total: int
    active: int
    experts: int = 0


def _attention(arch: Architecture) -> int:
    hidden, heads = arch.hidden_size, arch.num_attention_heads
    if arch.is_mla:
        assert arch.kv_lora_rank is not None and arch.qk_nope_head_dim is not None
        rope, nope = arch.qk_rope_head_dim or 0, arch.qk_nope_head_dim
        v_dim = arch.v_head_dim or nope
        q_dim = heads * (nope + rope)
        q = (
            hidden * arch.q_lora_rank + arch.q_lora_rank + arch.q_lora_rank * q_dim
            if arch.q_lora_rank
            else hidden * q_dim
        )
        kv = hidden * (arch.kv_lora_rank + rope) + arch.kv_lora_rank + arch.kv_lora_rank * heads * (nope + v_dim)
        return q + kv + heads * v_dim * hidden
    head_dim = arch.effective_head_dim
    q_width, kv_width = heads * head_dim, arch.num_key_value_heads * head_dim
    qk_norm = 2 * head_dim if arch.model_type in ("qwen3", "qwen3_moe") else 0
    return 2 * hidden * q_width + 2 * hidden * kv_width + qk_norm


def _mlp(hidden: int, width: int) -> int:
    """A gated (SwiGLU) MLP: gate, up and down projections."""
    return 3 * hidden * width


def count_parameters(arch: Architecture) -> ParameterCount:
    """Total and active parameters of the architecture."""
    hidden = arch.hidden_size
    per_layer = _attention(arch) + 2 * hidden  # attention + its two RMSNorms
    total = active = arch.num_hidden_layers * per_layer
    routed = 0
    expert = arch.expert_intermediate_size
    shared = arch.shared_expert_size
    for is_moe in arch.moe_layers:
        if not is_moe:
            total += _mlp(hidden, arch.intermediate_size)
            active += _mlp(hidden, arch.intermediate_size)
            continue
        assert arch.num_experts is not None and arch.num_experts_per_tok is not None and expert is not None
        router = hidden * arch.num_experts
        common = router
        if shared is not None:
            # Qwen2-MoE gates its shared expert with a one-output linear layer.
            common += _mlp(hidden, shared) + (hidden if arch.shared_expert_intermediate_size is not None else 0)
        routed += arch.num_experts * _mlp(hidden, expert)
        total += common + arch.num_experts * _mlp(hidden, expert)
        active += common + arch.num_experts_per_tok * _mlp(hidden, expert)
    embeddings = arch.vocab_size * hidden * (1 if arch.tie_word_embeddings else 2) + hidden  # + the final norm
    return ParameterCount(total=total + embeddings, active=active + embeddings, experts=routed)
