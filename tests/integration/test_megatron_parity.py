"""The architecture proof: megatron-core's GPTModel, built from the planned Megatron-LM architecture flags (local
layer spec, gloo, one rank, CPU) and loaded with a tiny random Hugging Face model's weights, gives the HF logits.

One test per registry family the megatron backend plans (llama / SmolLM2 with tied embeddings, Llama-3 rope
scaling, mistral, qwen2 with q/k/v bias, qwen3 with q/k norm and its own head_dim). The flags come from the plan of a
job on that model (`factory train --dry-run` would print them); `flags_to_config` reads every architecture flag
args.py writes the way Megatron-LM's arguments.py turns it into a TransformerConfig, and refuses a flag it does not
know, so a new flag needs a matching reading here. The weight mapping (`hf_to_mcore`) lives here only: it is the
test's, not a converter. Removing a flag that matters (--use-rope-scaling, --qk-layernorm, --add-qkv-bias) breaks
the match: `test_a_dropped_flag_breaks_the_match`.

GLM-4 is not planned by the megatron backend (args.py SUPPORTED_MODEL_TYPES), so it has no test here.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("megatron.core")

import torch

from tests.unit.test_megatron_plan import job_of

TOLERANCE = 1e-4
SEQ = 128
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


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """torch.distributed on gloo with one rank, Megatron's model-parallel groups of size 1, on the CPU."""
    import torch.distributed as dist
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import random as tp_random

    store = tmp_path_factory.mktemp("dist") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    parallel_state.initialize_model_parallel(1, 1)
    with pytest.MonkeyPatch.context() as patch:
        # rotary_pos_embedding.py moves its frequencies to torch.cuda.current_device() on first use: here, the CPU.
        patch.setattr(torch.cuda, "current_device", lambda: "cpu")
        # Attention forks the CUDA RNG tracker for dropout; dropout is 0 here and the CPU has no CUDA RNG.
        patch.setattr(tp_random.CudaRNGStatesTracker, "fork", lambda self, name=None: contextlib.nullcontext())
        yield
    parallel_state.destroy_model_parallel()
    dist.destroy_process_group()


COMMON = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 160,
    "vocab_size": 320,
    "rms_norm_eps": 1e-6,
    "initializer_range": 0.15,
}  # larger than the usual 0.02, so attention is far from uniform and rope matters
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    # SmolLM2's layout: llama, GQA, tied embeddings.
    "llama": ("LlamaConfig", {"num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True,
                              "rope_theta": 100000.0}),
    "llama3": ("LlamaConfig", {"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
                               "tie_word_embeddings": False, "rope_theta": 500000.0,
                               "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                               "max_position_embeddings": 131072}),
    "mistral": ("MistralConfig", {"num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False,
                                  "rope_theta": 1000000.0, "sliding_window": None}),
    "qwen2": ("Qwen2Config", {"num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False,
                              "rope_theta": 1000000.0}),
    "qwen3": ("Qwen3Config", {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
                              "tie_word_embeddings": True, "rope_theta": 1000000.0}),
}  # fmt: skip


def tiny_hf(family: str, target: Path) -> Any:
    """A random tiny HF model of the family, saved to `target`; norms and biases randomized too."""
    import transformers

    class_name, extra = FAMILIES[family]
    config = getattr(transformers, class_name)(**{"max_position_embeddings": 4096, **COMMON, **extra})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            elif name.endswith(".bias"):
                param.copy_(0.2 * torch.randn_like(param))
    model.save_pretrained(target)
    return model.eval()


def planned_flags(model_dir: Path, run_dir: Path) -> list[str]:
    """The architecture flags of the Megatron-LM pt plan of a job on the local model."""
    from factory_cli.backends import get_backend

    job = job_of(
        "megatron_pt.yaml",
        "cuda",
        (
            f"model.name_or_path={model_dir}",
            f"output.dir={run_dir}",
            "parallel.nnodes=1",
            "parallel.nproc_per_node=1",
            "parallel.tp=1",
            "parallel.pp=1",
            "parallel.sequence_parallel=false",
            f"data.max_length={SEQ}",
        ),
    )
    return architecture_flags(get_backend("megatron").plan(job, "cuda").engine_config["train_args"])


def max_diff(family: str, tmp_path: Path, drop: str | None = None) -> float:
    hf = tiny_hf(family, tmp_path / family)
    flags = planned_flags(tmp_path / family, tmp_path / "run")
    if drop is not None:
        assert drop in flags
        flags = [f for f in flags if f != drop]
    model = build_gpt_model(flags)
    c = hf.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    weights = hf_to_mcore(hf, c.num_attention_heads, c.num_key_value_heads, head_dim)
    if drop is not None:
        own = model.state_dict()
        weights = {k: v for k, v in weights.items() if k in own}
    load(model, weights, strict=drop is None)
    ids = torch.randint(0, c.vocab_size, (2, SEQ), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(ids).logits
    return float((megatron_logits(model, ids) - want).abs().max())


@pytest.mark.integration
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_planned_architecture_matches_hf_logits(family: str, tmp_path: Path, one_rank: None) -> None:
    diff = max_diff(family, tmp_path)
    print(f"parity {family}: max |logit diff| = {diff:.2e}")
    assert diff < TOLERANCE


@pytest.mark.integration
@pytest.mark.parametrize(
    ("family", "flag"),
    [("llama3", "--use-rope-scaling"), ("qwen3", "--qk-layernorm"), ("qwen2", "--add-qkv-bias")],
)
def test_a_dropped_flag_breaks_the_match(family: str, flag: str, tmp_path: Path, one_rank: None) -> None:
    diff = max_diff(family, tmp_path, drop=flag)
    print(f"parity {family} without {flag}: max |logit diff| = {diff:.2e}")
    assert diff > 100 * TOLERANCE
