"""Planned Megatron-LM architecture flags -> megatron-core GPTModel, and HF Llama-layout weights -> its names.

The test's side of the architecture proof (tests/integration/test_megatron_parity.py) and of the GPU proof
(bench/megatron_gpu.py); not a converter. `parse_flags` reads every architecture flag args.py writes the way
Megatron-LM's arguments.py turns it into a TransformerConfig, and refuses a flag it does not know. No pytest here:
bench/megatron_gpu.py imports it on a machine without pytest.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

# Megatron-LM's flags for the architecture (args.py architecture_args) and how each reaches TransformerConfig /
# GPTModel; flags outside this table fail the test.
VALUE_FLAGS = {
    "--num-layers": int,
    "--hidden-size": int,
    "--ffn-hidden-size": int,
    "--num-attention-heads": int,
    "--num-query-groups": int,
    "--kv-channels": int,
    "--seq-length": int,
    "--max-position-embeddings": int,
    "--position-embedding-type": str,
    "--rotary-base": int,
    "--rope-scaling-factor": float,
    "--normalization": str,
    "--norm-epsilon": float,
    "--make-vocab-size-divisible-by": int,
    "--padded-vocab-size": int,
    "--attention-dropout": float,
    "--hidden-dropout": float,
    # Mixture of experts (args.py moe_args).
    "--num-experts": int,
    "--moe-router-topk": int,
    "--moe-ffn-hidden-size": int,
    "--moe-shared-expert-intermediate-size": int,
    "--moe-layer-freq": str,
    "--moe-router-load-balancing-type": str,
    "--moe-router-dtype": str,
    "--moe-aux-loss-coeff": float,
    "--moe-token-dispatcher-type": str,
}
SWITCHES = (
    "--group-query-attention",
    "--use-rope-scaling",
    "--swiglu",
    "--disable-bias-linear",
    "--add-qkv-bias",
    "--qk-layernorm",
    "--untie-embeddings-and-output-weights",
    "--attention-softmax-in-fp32",
    "--moe-shared-expert-gate",
    "--moe-router-pre-softmax",
    "--moe-grouped-gemm",
)


def architecture_flags(train_args: list[str]) -> list[str]:
    """The architecture flags of a planned train argv: from --num-layers through --attention-softmax-in-fp32, and
    the MoE flags that follow them (through --moe-grouped-gemm)."""
    start = train_args.index("--num-layers")
    last = "--moe-grouped-gemm" if "--moe-grouped-gemm" in train_args else "--attention-softmax-in-fp32"
    return train_args[start : train_args.index(last) + 1]


def parse_flags(flags: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    for flag, kind in VALUE_FLAGS.items():
        parser.add_argument(flag, type=kind)
    for flag in SWITCHES:
        parser.add_argument(flag, action="store_true")
    args, unknown = parser.parse_known_args(flags)
    assert not unknown, f"architecture flags this test does not read: {unknown}"
    return args


def moe_config(a: argparse.Namespace) -> dict[str, Any]:
    """The TransformerConfig fields of the MoE flags, as Megatron-LM's arguments.py sets them.

    --moe-grouped-gemm is read but not applied: grouped GEMM needs Transformer Engine or the grouped_gemm CUDA
    package, so the CPU builds the same experts as a SequentialMLP (one Linear pair per expert, the same math).
    Without CUDA the planned all-to-all dispatcher becomes the all-gather one: megatron-core 0.16's
    MoEAlltoAllTokenDispatcher creates a torch.cuda.Stream when it is built (moe/token_dispatcher.py) and copies
    its token counts to the host on it. With one expert-parallel rank both dispatchers hand every token to the
    same experts with the same weights; they differ only in how ranks exchange tokens.
    """
    if a.num_experts is None:
        return {}
    freq: Any = 1
    if a.moe_layer_freq is not None:
        # Megatron-LM's moe_freq_type: an int, or a Python list expression of 0 (dense) / 1 (MoE) per layer.
        freq = eval(a.moe_layer_freq, {"__builtins__": {}}) if "[" in a.moe_layer_freq else int(a.moe_layer_freq)
    return {
        "num_moe_experts": a.num_experts,
        "moe_router_topk": a.moe_router_topk,
        "moe_ffn_hidden_size": a.moe_ffn_hidden_size,
        "moe_shared_expert_intermediate_size": a.moe_shared_expert_intermediate_size,
        "moe_shared_expert_gate": a.moe_shared_expert_gate,
        "moe_layer_freq": freq,
        "moe_router_pre_softmax": a.moe_router_pre_softmax,
        "moe_router_load_balancing_type": a.moe_router_load_balancing_type,
        "moe_router_dtype": a.moe_router_dtype,
        "moe_aux_loss_coeff": a.moe_aux_loss_coeff,
        "moe_token_dispatcher_type": "allgather"
        if a.moe_token_dispatcher_type == "alltoall" and not torch.cuda.is_available()
        else a.moe_token_dispatcher_type,
        "moe_grouped_gemm": False,
    }


def build_gpt_model(flags: list[str]) -> Any:
    """megatron-core GPTModel (local spec) from the planned flags, as Megatron-LM's pretrain_gpt.py builds it."""
    import torch.nn.functional as F
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec, get_gpt_layer_local_spec
    from megatron.core.transformer.transformer_config import TransformerConfig

    a = parse_flags(flags)
    assert a.position_embedding_type == "rope" and a.normalization == "RMSNorm"
    config = TransformerConfig(
        num_layers=a.num_layers,
        hidden_size=a.hidden_size,
        ffn_hidden_size=a.ffn_hidden_size,
        num_attention_heads=a.num_attention_heads,
        num_query_groups=a.num_query_groups if a.group_query_attention else None,
        kv_channels=a.kv_channels,
        normalization=a.normalization,
        layernorm_epsilon=a.norm_epsilon,
        gated_linear_unit=a.swiglu,
        activation_func=F.silu if a.swiglu else F.gelu,
        add_bias_linear=not a.disable_bias_linear,
        add_qkv_bias=a.add_qkv_bias,
        qk_layernorm=a.qk_layernorm,
        attention_dropout=a.attention_dropout,
        hidden_dropout=a.hidden_dropout,
        attention_softmax_in_fp32=a.attention_softmax_in_fp32,
        # CPU: no fused kernels, weights created on the CPU, no random init (the HF weights are loaded).
        use_cpu_initialization=True,
        perform_initialization=False,
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        params_dtype=torch.float32,
        **moe_config(a),
    )
    if a.num_experts is None:
        spec: Any = get_gpt_layer_local_spec(qk_layernorm=a.qk_layernorm, normalization=a.normalization)
    else:
        # pretrain_gpt.py's spec for MoE: one layer spec per layer from --moe-layer-freq.
        spec = get_gpt_decoder_block_spec(config, use_transformer_engine=False, normalization=a.normalization)
    return GPTModel(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=a.padded_vocab_size,
        max_sequence_length=a.max_position_embeddings,
        share_embeddings_and_output_weights=not a.untie_embeddings_and_output_weights,
        position_embedding_type="rope",
        rotary_base=a.rotary_base,
        rope_scaling=a.use_rope_scaling,
        rope_scaling_factor=a.rope_scaling_factor if a.rope_scaling_factor is not None else 8.0,
    )


def hf_to_mcore(hf: Any, heads: int, groups: int, head_dim: int) -> dict[str, torch.Tensor]:
    """HF Llama-layout weights under megatron-core local-spec names; q/k/v interleaved per query group."""
    sd = hf.state_dict()
    out = {"embedding.word_embeddings.weight": sd["model.embed_tokens.weight"]}
    per_group = heads // groups
    for i in range(hf.config.num_hidden_layers):
        p, m = f"model.layers.{i}.", f"decoder.layers.{i}."

        def qkv(kind: str, p: str = p) -> torch.Tensor:
            q = sd[f"{p}self_attn.q_proj.{kind}"].reshape(groups, per_group * head_dim, -1)
            k = sd[f"{p}self_attn.k_proj.{kind}"].reshape(groups, head_dim, -1)
            v = sd[f"{p}self_attn.v_proj.{kind}"].reshape(groups, head_dim, -1)
            fused = torch.cat([q, k, v], dim=1)
            return fused.reshape(-1, fused.shape[-1]) if kind == "weight" else fused.reshape(-1)

        out[f"{m}input_layernorm.weight"] = sd[f"{p}input_layernorm.weight"]
        out[f"{m}self_attention.linear_qkv.weight"] = qkv("weight")
        if f"{p}self_attn.q_proj.bias" in sd:
            out[f"{m}self_attention.linear_qkv.bias"] = qkv("bias")
        if f"{p}self_attn.q_norm.weight" in sd:
            out[f"{m}self_attention.q_layernorm.weight"] = sd[f"{p}self_attn.q_norm.weight"]
            out[f"{m}self_attention.k_layernorm.weight"] = sd[f"{p}self_attn.k_norm.weight"]
        out[f"{m}self_attention.linear_proj.weight"] = sd[f"{p}self_attn.o_proj.weight"]
        out[f"{m}pre_mlp_layernorm.weight"] = sd[f"{p}post_attention_layernorm.weight"]
        if f"{p}mlp.gate.weight" in sd:
            out.update(_moe_weights(sd, p, m))
            continue
        gate, up = sd[f"{p}mlp.gate_proj.weight"], sd[f"{p}mlp.up_proj.weight"]
        out[f"{m}mlp.linear_fc1.weight"] = torch.cat([gate, up], dim=0)
        out[f"{m}mlp.linear_fc2.weight"] = sd[f"{p}mlp.down_proj.weight"]
    out["decoder.final_layernorm.weight"] = sd["model.norm.weight"]
    if not hf.config.tie_word_embeddings:
        out["output_layer.weight"] = sd["lm_head.weight"]
    return out


def _moe_weights(sd: dict[str, torch.Tensor], p: str, m: str) -> dict[str, torch.Tensor]:
    """One MoE layer: transformers 5's router and fused 3-D experts (gate_up_proj [E, 2I, H], down_proj [E, H, I])
    -> megatron-core's router and SequentialMLP experts (linear_fc1 = [gate; up]); Qwen2-MoE's gated shared expert."""
    out = {f"{m}mlp.router.weight": sd[f"{p}mlp.gate.weight"]}
    gate_up, down = sd[f"{p}mlp.experts.gate_up_proj"], sd[f"{p}mlp.experts.down_proj"]
    for e in range(gate_up.shape[0]):
        out[f"{m}mlp.experts.local_experts.{e}.linear_fc1.weight"] = gate_up[e]
        out[f"{m}mlp.experts.local_experts.{e}.linear_fc2.weight"] = down[e]
    if f"{p}mlp.shared_expert.gate_proj.weight" in sd:
        shared = f"{p}mlp.shared_expert."
        fc1 = torch.cat([sd[f"{shared}gate_proj.weight"], sd[f"{shared}up_proj.weight"]], dim=0)
        out[f"{m}mlp.shared_experts.linear_fc1.weight"] = fc1
        out[f"{m}mlp.shared_experts.linear_fc2.weight"] = sd[f"{shared}down_proj.weight"]
        if f"{p}mlp.shared_expert_gate.weight" in sd:
            out[f"{m}mlp.shared_experts.gate_weight"] = sd[f"{p}mlp.shared_expert_gate.weight"]
    return out


def load(model: Any, weights: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Load the mapped weights; every parameter of the model must get one (extra state aside)."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if strict:
        assert not missing and not unexpected, (missing, unexpected)


def megatron_logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    positions = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
    # The causal mask as GPTDataset builds it (True = masked); without one the local attention makes it on CUDA.
    causal = torch.triu(torch.ones(ids.shape[1], ids.shape[1]), diagonal=1).bool()[None, None]
    with torch.no_grad():
        return model(ids, positions, attention_mask=causal)
