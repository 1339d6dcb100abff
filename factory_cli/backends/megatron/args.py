"""Job sections and a Hugging Face architecture -> Megatron-LM / MindSpeed-LLM command-line arguments. Pure.

Flag names were checked against Megatron-LM main (2026-08, `megatron/training/arguments.py`, parsed with
`add_megatron_arguments`) and MindSpeed-LLM 26.1.0 (Megatron core_v0.12.1 plus `mindspeed_llm/features_manager`
and the `examples/mcore/{qwen25,qwen3,llama2}` scripts; Llama-3 rope flags from its 2.3.0 llama31 scripts).
"""

from __future__ import annotations

import math

from factory_cli.backends.common.plan import LR_DECAY_STYLES, num
from factory_cli.config.schema import LoraConfig, MegatronParallel, TrainSection
from factory_cli.registry.models import Architecture

MEGATRON_LM = "megatron-lm"
MINDSPEED_LLM = "mindspeed-llm"
ENGINE_LABELS = {MEGATRON_LM: "Megatron-LM", MINDSPEED_LLM: "MindSpeed-LLM"}
# The environment variables naming the engines' source checkouts (their scripts are not pip-installed).
HOME_VARS = {MEGATRON_LM: "MEGATRON_LM_HOME", MINDSPEED_LLM: "MINDSPEED_LLM_HOME"}
BRIDGE_HOME_VAR = "MEGATRON_BRIDGE_HOME"

# HF model_type -> what the decoder needs beyond the llama layout (RMSNorm, SwiGLU, RoPE, no linear bias).
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe")
QKV_BIAS_TYPES = frozenset({"qwen2", "qwen2_moe"})
QK_NORM_TYPES = frozenset({"qwen3", "qwen3_moe"})
# Why a model type the registry knows is not planned.
UNPLANNED_MODEL_TYPES = {
    "deepseek_v3": "DeepSeek-V3's multi-head latent attention and grouped sigmoid router (with expert bias instead "
    "of an auxiliary loss) need flags the megatron backend does not write yet",
    "glm": "GLM-4's layout (fused gate_up, post-norms) is not described by these flags",
    "glm4": "GLM-4's layout (fused gate_up, post-norms) is not described by these flags",
}
# MindSpeed-LLM builds Qwen3's q/k layernorm with its own layer spec (examples/mcore/qwen3 and qwen3_moe scripts).
QWEN3_SPEC = ["--spec", "mindspeed_llm.tasks.models.spec.qwen3_spec", "layer_spec"]
MINDSPEED_SPECS = {"qwen3": QWEN3_SPEC, "qwen3_moe": QWEN3_SPEC}
# Qwen2-MoE's shared expert is scaled by a sigmoid gate (Megatron-LM --moe-shared-expert-gate).
SHARED_EXPERT_GATE_TYPES = frozenset({"qwen2_moe"})
# model.moe.aux_loss_coef when neither the job nor the model's config.json gives one (config/schema.py MoESection).
DEFAULT_AUX_LOSS_COEF = 0.001
# Token dispatchers: Megatron-LM's all-to-all over the expert-parallel group; MindSpeed-LLM's examples
# (examples/mcore/qwen3_moe/tune_qwen3_30b_a3b_4K_full_ptd.sh) use its sequence-level all-to-all.
TOKEN_DISPATCHERS = {"megatron-lm": "alltoall", "mindspeed-llm": "alltoall_seq"}
# Llama-3.1 / 3.3 rope scaling (Llama-3.2 uses factor 32); the HF config's rope_scaling block.
LLAMA3_ROPE = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}

# HF projection names -> Megatron-core module names (MindSpeed-LLM --lora-target-modules).
LORA_MODULES = {
    "q_proj": "linear_qkv",
    "k_proj": "linear_qkv",
    "v_proj": "linear_qkv",
    "qkv_proj": "linear_qkv",
    "o_proj": "linear_proj",
    "gate_proj": "linear_fc1",
    "up_proj": "linear_fc1",
    "gate_up_proj": "linear_fc1",
    "down_proj": "linear_fc2",
}
ALL_LORA_MODULES = ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]


def architecture_args(
    arch: Architecture, max_length: int, engine: str = MEGATRON_LM, rope_scaling_factor: float | None = None
) -> list[str]:
    """Decoder shape, attention, position embedding, norm, MLP and vocabulary flags for a HF decoder (the MoE
    flags are moe_args').

    Raises ValueError for model types whose layout these flags do not describe.
    """
    if arch.model_type not in SUPPORTED_MODEL_TYPES:
        reason = UNPLANNED_MODEL_TYPES.get(arch.model_type, "")
        raise ValueError(
            f"model_type `{arch.model_type}` is not supported by the megatron backend"
            + (f": {reason}" if reason else "")
            + f" (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    args = [
        "--num-layers", str(arch.num_hidden_layers),
        "--hidden-size", str(arch.hidden_size),
        "--ffn-hidden-size", str(arch.intermediate_size),
        "--num-attention-heads", str(arch.num_attention_heads),
    ]  # fmt: skip
    if arch.num_key_value_heads != arch.num_attention_heads:
        args += ["--group-query-attention", "--num-query-groups", str(arch.num_key_value_heads)]
    if arch.head_dim is not None:
        args += ["--kv-channels", str(arch.head_dim)]
    args += [
        "--seq-length", str(max_length),
        "--max-position-embeddings", str(arch.max_position_embeddings),
        "--position-embedding-type", "rope",
        "--rotary-base", str(int(arch.rope_theta)),
    ]  # fmt: skip
    args += rope_scaling_args(arch, engine, rope_scaling_factor)
    args += ["--normalization", "RMSNorm", "--norm-epsilon", num(arch.rms_norm_eps or 1e-6), "--swiglu"]
    args.append("--disable-bias-linear")
    if arch.model_type in QKV_BIAS_TYPES:
        args.append("--add-qkv-bias")
    if arch.model_type in QK_NORM_TYPES:
        args.append("--qk-layernorm")
        if engine == MINDSPEED_LLM:
            args += MINDSPEED_SPECS[arch.model_type]
    if not arch.tie_word_embeddings:
        args.append("--untie-embeddings-and-output-weights")
    # The checkpoint's embedding has exactly vocab_size rows: no extra padding.
    args += ["--make-vocab-size-divisible-by", "1", "--padded-vocab-size", str(arch.vocab_size)]
    # HF decoders train without dropout; Megatron's defaults are 0.1.
    args += ["--attention-dropout", "0.0", "--hidden-dropout", "0.0", "--attention-softmax-in-fp32"]
    return args


def aux_loss_coef(arch: Architecture, job_coef: float | None) -> float:
    """The router's load-balancing weight: the job's model.moe.aux_loss_coef, else the model's, else the default."""
    if job_coef is not None:
        return job_coef
    return arch.router_aux_loss_coef if arch.router_aux_loss_coef is not None else DEFAULT_AUX_LOSS_COEF


def moe_layer_pattern(arch: Architecture) -> str | None:
    """--moe-layer-freq as Megatron's list expression (1 = MoE layer) when not every layer is MoE, else None.

    Megatron-LM's moe_freq_type evaluates it (e.g. "([0]*3+[1]*58)"); runs of equal layers are written once.
    """
    layers = arch.moe_layers
    if all(layers):
        return None
    runs: list[list[int]] = []
    for flag in (int(x) for x in layers):
        if runs and runs[-1][0] == flag:
            runs[-1][1] += 1
        else:
            runs.append([flag, 1])
    return "(" + "+".join(f"[{flag}]*{count}" for flag, count in runs) + ")"


def moe_args(arch: Architecture, engine: str, job_coef: float | None) -> list[str]:
    """Experts, router, expert FFN, shared experts, dense/MoE layer pattern, grouped GEMM, dispatcher and the
    load-balancing loss of a mixture-of-experts decoder; nothing for a dense one.

    The router matches transformers': a softmax over every expert, the top k kept, renormalized to sum to 1 when
    the model does (Megatron's default: top k of the logits, then a softmax over them, which is the same) or kept
    as they are (--moe-router-pre-softmax: softmax first, no renormalization; Qwen2-MoE's norm_topk_prob false).
    MindSpeed-LLM's Qwen2-MoE scripts name that routing `--moe-router-load-balancing-type softmax_topk`, a choice
    26.1.0's parser does not list (tests/unit/megatron_flags/mindspeed_llm_26.1.0.json); megatron-core's
    --moe-router-pre-softmax with aux_loss is used there too. Dropless (no capacity factor), as transformers routes
    every token.
    """
    if arch.num_experts is None:
        return []
    assert arch.num_experts_per_tok is not None and arch.expert_intermediate_size is not None
    args = [
        "--num-experts", str(arch.num_experts),
        "--moe-router-topk", str(arch.num_experts_per_tok),
        "--moe-ffn-hidden-size", str(arch.expert_intermediate_size),
    ]  # fmt: skip
    if engine == MINDSPEED_LLM:
        # MindSpeed-LLM's own MoE layers read --moe-intermediate-size (its qwen3_moe scripts pass both).
        args += ["--moe-intermediate-size", str(arch.expert_intermediate_size)]
    shared = arch.shared_expert_size
    if shared is not None and engine == MINDSPEED_LLM and shared % arch.expert_intermediate_size == 0:
        # MindSpeed-LLM counts shared experts in expert widths (examples/mcore/qwen2_moe scripts: Qwen2-57B-A14B's
        # 20480-wide shared expert is --n-shared-experts 8 of 2560) and gates them with its --shared-expert-gate.
        args += ["--n-shared-experts", str(shared // arch.expert_intermediate_size)]
        if arch.model_type in SHARED_EXPERT_GATE_TYPES:
            args.append("--shared-expert-gate")
    elif shared is not None:
        args += ["--moe-shared-expert-intermediate-size", str(shared)]
        if arch.model_type in SHARED_EXPERT_GATE_TYPES:
            args.append("--shared-expert-gate" if engine == MINDSPEED_LLM else "--moe-shared-expert-gate")
    pattern = moe_layer_pattern(arch)
    if pattern is not None:
        args += ["--moe-layer-freq", pattern]
    if arch.renormalizes_top_k:
        if engine == MINDSPEED_LLM:
            args.append("--norm-topk-prob")
    else:
        args.append("--moe-router-pre-softmax")
    args += [
        # The router in fp32, as transformers takes its softmax in float32 (and as Megatron advises for MoE).
        "--moe-router-dtype", "fp32",
        "--moe-router-load-balancing-type", "aux_loss",
        "--moe-aux-loss-coeff", num(aux_loss_coef(arch, job_coef)),
        "--moe-token-dispatcher-type", TOKEN_DISPATCHERS[engine],
        "--moe-grouped-gemm",
    ]  # fmt: skip
    return args


def rope_scaling_args(arch: Architecture, engine: str, factor: float | None = None) -> list[str]:
    """Llama-3 rope scaling: MindSpeed-LLM takes the whole rope_scaling block, Megatron-LM the factor."""
    if arch.rope_scaling_type is None:
        return []
    if arch.rope_scaling_type != "llama3":
        raise ValueError(f"rope scaling `{arch.rope_scaling_type}` is not supported by the megatron backend")
    scale = factor if factor is not None else LLAMA3_ROPE["factor"]
    if engine == MINDSPEED_LLM:
        return [
            "--rope-scaling-type", "llama3",
            "--rope-scaling-factor", num(scale),
            "--low-freq-factor", num(LLAMA3_ROPE["low_freq_factor"]),
            "--high-freq-factor", num(LLAMA3_ROPE["high_freq_factor"]),
            "--original-max-position-embeddings", num(LLAMA3_ROPE["original_max_position_embeddings"]),
        ]  # fmt: skip
    return ["--use-rope-scaling", "--rope-scaling-factor", num(scale)]


def tokenizer_args(engine: str, hf_path: str, sft: bool = False) -> list[str]:
    """The tokenizer of the HF checkpoint; Megatron-LM SFT uses its chat-template SFTTokenizer."""
    if engine == MINDSPEED_LLM:
        return ["--tokenizer-type", "PretrainedFromHF", "--tokenizer-name-or-path", hf_path]
    if sft:
        return [
            "--tokenizer-type", "SFTTokenizer",
            "--tokenizer-model", hf_path,
            "--sft-tokenizer-prompt-format", "default",
        ]  # fmt: skip
    return ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", hf_path]


def layers_per_virtual_stage(parallel: MegatronParallel, num_layers: int) -> int | None:
    """--num-layers-per-virtual-pipeline-stage for parallel.vpp virtual stages per pipeline rank."""
    if parallel.vpp is None:
        return None
    stages = parallel.pp * parallel.vpp
    if num_layers % stages:
        raise ValueError(f"{num_layers} layers do not split into pp {parallel.pp} x vpp {parallel.vpp} stages")
    return num_layers // stages


def parallel_args(parallel: MegatronParallel, num_layers: int | None = None) -> list[str]:
    """TP / PP / CP / EP / virtual pipeline, sequence parallel and the distributed optimizer."""
    args = [
        "--tensor-model-parallel-size", str(parallel.tp),
        "--pipeline-model-parallel-size", str(parallel.pp),
    ]  # fmt: skip
    if parallel.cp > 1:
        args += ["--context-parallel-size", str(parallel.cp)]
    if parallel.ep > 1:
        args += ["--expert-model-parallel-size", str(parallel.ep)]
    if parallel.vpp is not None:
        if num_layers is None:
            raise ValueError("parallel.vpp needs the model's number of layers")
        args += ["--num-layers-per-virtual-pipeline-stage", str(layers_per_virtual_stage(parallel, num_layers))]
    if parallel.sequence_parallel:
        args.append("--sequence-parallel")
    if parallel.distributed_optimizer:
        args.append("--use-distributed-optimizer")
    return args


# warmup_stable_decay: the last WSD_DECAY_FRACTION of the iterations decay, cosine (transformers' get_wsd_schedule
# default decay type); Megatron's optimizer_param_scheduler.py asserts the decay length is given.
WSD_DECAY_FRACTION = 0.1
WSD_DECAY_STYLE = "cosine"


def wsd_decay_iters(iters: int) -> int:
    """--lr-wsd-decay-iters for a run of `iters` iterations: at least one."""
    return max(1, math.ceil(WSD_DECAY_FRACTION * iters))


def optimizer_args(train: TrainSection, iters: int | None = None) -> list[str]:
    """Batch sizes, AdamW, the learning-rate schedule, clipping, precision and seed (defaults resolved).

    warmup_stable_decay needs the run's length (`iters`) for --lr-wsd-decay-iters; without it (a dry run before
    the rows are counted) the flag is left to the re-plan of the run step.
    """
    assert train.learning_rate is not None and train.global_batch_size is not None, "resolve_defaults fills these"
    lr = train.learning_rate
    scheduler = train.scheduler or "cosine"
    min_lr = lr * (train.min_lr_ratio or 0.0) if scheduler in ("cosine", "cosine_with_min_lr", "linear") else 0.0
    args = [
        "--micro-batch-size", str(train.micro_batch_size),
        "--global-batch-size", str(train.global_batch_size),
        "--lr", num(lr),
        "--min-lr", num(min_lr),
        "--lr-decay-style", LR_DECAY_STYLES[scheduler],
        "--lr-warmup-fraction", num(train.warmup_ratio or 0.0),
        "--weight-decay", num(train.weight_decay or 0.0),
        "--adam-beta1", num(train.adam_beta1),
        "--adam-beta2", num(train.adam_beta2 or 0.999),
        "--clip-grad", num(train.max_grad_norm),
    ]  # fmt: skip
    if scheduler == "warmup_stable_decay" and iters is not None:
        args += ["--lr-wsd-decay-style", WSD_DECAY_STYLE, "--lr-wsd-decay-iters", str(wsd_decay_iters(iters))]
    if train.precision == "bf16":
        args.append("--bf16")
    elif train.precision == "fp16":
        args.append("--fp16")
    args += ["--seed", str(train.seed)]
    return args


def train_iters(train: TrainSection, train_samples: int | None) -> int | None:
    """train.max_steps, else ceil(epochs x samples / global batch); None while the sample count is unknown."""
    if train.max_steps is not None:
        return train.max_steps
    if train_samples is None:
        return None
    assert train.global_batch_size is not None and train.epochs is not None, "resolve_defaults fills these"
    return max(1, math.ceil(train.epochs * train_samples / train.global_batch_size))


def recompute_args(mode: str) -> list[str]:
    """Activation recomputation: selective (attention core) or full (every layer, uniformly, one at a time)."""
    if mode == "selective":
        return ["--recompute-granularity", "selective"]
    if mode == "full":
        return ["--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", "1"]
    return []


def lora_target_modules(targets: list[str]) -> list[str]:
    """HF projection names (or `all`) -> Megatron-core module names, in Megatron's order, without repeats."""
    if targets == ["all"] or "all-linear" in targets:
        return list(ALL_LORA_MODULES)
    unknown = [t for t in targets if t not in LORA_MODULES and t not in ALL_LORA_MODULES]
    if unknown:
        raise ValueError(
            f"LoRA targets {unknown} have no Megatron module; use all or {', '.join(sorted(LORA_MODULES))}"
        )
    wanted = {LORA_MODULES.get(t, t) for t in targets}
    return [module for module in ALL_LORA_MODULES if module in wanted]


def lora_args(lora: LoraConfig) -> list[str]:
    """MindSpeed-LLM LoRA: rank, alpha and the Megatron modules to adapt."""
    return [
        "--lora-r", str(lora.rank),
        "--lora-alpha", str(lora.alpha or 2 * lora.rank),
        "--lora-target-modules", *lora_target_modules(list(lora.target)),
    ]  # fmt: skip
