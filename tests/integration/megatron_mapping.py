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
)


def architecture_flags(train_args: list[str]) -> list[str]:
    """The architecture flags of a planned train argv: from --num-layers through --attention-softmax-in-fp32."""
    start = train_args.index("--num-layers")
    end = train_args.index("--attention-softmax-in-fp32") + 1
    return train_args[start:end]


def parse_flags(flags: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    for flag, kind in VALUE_FLAGS.items():
        parser.add_argument(flag, type=kind)
    for flag in SWITCHES:
        parser.add_argument(flag, action="store_true")
    args, unknown = parser.parse_known_args(flags)
    assert not unknown, f"architecture flags this test does not read: {unknown}"
    return args


def build_gpt_model(flags: list[str]) -> Any:
    """megatron-core GPTModel (local spec) from the planned flags, as Megatron-LM's pretrain_gpt.py builds it."""
    import torch.nn.functional as F
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
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
    )
    return GPTModel(
        config=config,
        transformer_layer_spec=get_gpt_layer_local_spec(qk_layernorm=a.qk_layernorm, normalization=a.normalization),
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
        gate, up = sd[f"{p}mlp.gate_proj.weight"], sd[f"{p}mlp.up_proj.weight"]
        out[f"{m}mlp.linear_fc1.weight"] = torch.cat([gate, up], dim=0)
        out[f"{m}mlp.linear_fc2.weight"] = sd[f"{p}mlp.down_proj.weight"]
    out["decoder.final_layernorm.weight"] = sd["model.norm.weight"]
    if not hf.config.tie_word_embeddings:
        out["output_layer.weight"] = sd["lm_head.weight"]
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
