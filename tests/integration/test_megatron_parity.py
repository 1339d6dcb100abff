"""The architecture proof: megatron-core's GPTModel, built from the planned Megatron-LM architecture flags (local
layer spec, gloo, one rank, CPU) and loaded with a tiny random Hugging Face model's weights, gives the HF logits.

One test per registry family the megatron backend plans (llama / SmolLM2 with tied embeddings, Llama-3 rope
scaling, mistral, qwen2 with q/k/v bias, qwen3 with q/k norm and its own head_dim). The flags come from the plan of a
job on that model (`factory train --dry-run` would print them); tests/integration/megatron_mapping.py reads every
architecture flag args.py writes the way Megatron-LM's arguments.py turns it into a TransformerConfig, and refuses
a flag it does not know, so a new flag needs a matching reading there. The weight mapping (`hf_to_mcore`) lives
there, with the tests: it is not a converter. Removing a flag that matters (--use-rope-scaling, --qk-layernorm,
--add-qkv-bias, --moe-router-pre-softmax, --moe-shared-expert-gate) breaks the match:
`test_a_dropped_flag_breaks_the_match`.

Mixtures of experts (qwen3_moe with a dense first layer, qwen2_moe with its gated shared expert and unnormalized
top-k, mixtral) run megatron-core's MoELayer on the CPU with two stand-ins, both in the test's side only:
* megatron-core 0.16.1 does not run its MoE router without Transformer Engine as shipped: moe/moe_utils.py defines
  te_general_gemm only when `import transformer_engine` succeeds, and the router's `te_general_gemm is not None`
  then raises NameError. The `one_rank` fixture gives the name the None its own fallback expects (torch.mm).
* the planned all-to-all token dispatcher creates a torch.cuda.Stream when built, so without CUDA the model is
  built with the all-gather dispatcher (megatron_mapping.moe_config says why that changes no number with one
  rank), and the experts as a SequentialMLP instead of the planned grouped GEMM (which needs Transformer Engine or
  the grouped_gemm CUDA package). Both are proven on a GPU only.

GLM-4 and DeepSeek-V3 are not planned by the megatron backend (args.py SUPPORTED_MODEL_TYPES), so they have no
test here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("megatron.core")

import torch

from tests.integration.megatron_mapping import (
    architecture_flags,
    build_gpt_model,
    hf_to_mcore,
    load,
    megatron_logits,
)
from tests.unit.test_megatron_plan import job_of

TOLERANCE = 1e-4
SEQ = 128


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
        # megatron-core 0.16.1 moe/moe_utils.py imports te_general_gemm only when transformer_engine imports, and
        # its except branch leaves the name undefined, so the router's `te_general_gemm is not None` test raises
        # NameError without Transformer Engine; None is the value that test expects (it then uses torch.mm).
        from megatron.core.transformer.moe import moe_utils

        if not moe_utils.HAVE_TE and not hasattr(moe_utils, "te_general_gemm"):
            patch.setattr(moe_utils, "te_general_gemm", None, raising=False)
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
    # Mixtures of experts. Qwen3-MoE: renormalized top-k, q/k norm, a dense first layer (mlp_only_layers:
    # --moe-layer-freq); Qwen2-MoE: top-k weights as they are (--moe-router-pre-softmax) and a sigmoid-gated
    # shared expert; Mixtral: experts intermediate_size wide.
    "qwen3_moe": ("Qwen3MoeConfig", {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
                                     "tie_word_embeddings": False, "rope_theta": 1000000.0, "num_experts": 4,
                                     "num_experts_per_tok": 2, "moe_intermediate_size": 48, "norm_topk_prob": True,
                                     "mlp_only_layers": [0], "router_aux_loss_coef": 0.001}),
    "qwen2_moe": ("Qwen2MoeConfig", {"num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False,
                                     "rope_theta": 1000000.0, "num_experts": 4, "num_experts_per_tok": 2,
                                     "moe_intermediate_size": 48, "shared_expert_intermediate_size": 96,
                                     "norm_topk_prob": False, "router_aux_loss_coef": 0.001}),
    "mixtral": ("MixtralConfig", {"num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False,
                                  "rope_theta": 1000000.0, "num_local_experts": 4, "num_experts_per_tok": 2,
                                  "sliding_window": None, "router_aux_loss_coef": 0.02}),
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
            elif name.endswith(("mlp.gate.weight", "shared_expert_gate.weight")):
                param.copy_(torch.randn_like(param))  # routers far from uniform: distinct top-k choices
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
            # Only the architecture flags are read: no conversion step (Megatron Bridge has no Qwen2-MoE bridge).
            f"megatron.load={run_dir / 'megatron'}",
            "megatron.save_hf=false",
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
    [
        ("llama3", "--use-rope-scaling"),
        ("qwen3", "--qk-layernorm"),
        ("qwen2", "--add-qkv-bias"),
        ("qwen2_moe", "--moe-router-pre-softmax"),
        ("qwen2_moe", "--moe-shared-expert-gate"),
    ],
)
def test_a_dropped_flag_breaks_the_match(family: str, flag: str, tmp_path: Path, one_rank: None) -> None:
    diff = max_diff(family, tmp_path, drop=flag)
    print(f"parity {family} without {flag}: max |logit diff| = {diff:.2e}")
    assert diff > 100 * TOLERANCE
