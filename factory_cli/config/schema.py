"""The job, as Pydantic models: one per section, frozen, unknown keys forbidden.

`backend` selects the job model (its `parallel` section and backend-only sections);
`stage` selects which method sections (`dpo`, `grpo`) are allowed — see `STAGE_SECTIONS` in `config/validate.py`.
Each field's description is its one-line documentation: `factory config` writes it as the
YAML comment and error hints quote it. `None` on a field means "resolved from the stage,
method and device" (`config/defaults.py`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Backend = Literal["deepspeed", "megatron", "verl"]
Stage = Literal["pt", "sft", "dpo", "grpo"]
DeviceName = Literal["auto", "cuda", "npu", "cpu"]
DType = Literal["auto", "bf16", "fp16", "fp32"]
MethodType = Literal["full", "freeze", "lora", "qlora"]
DataFormat = Literal["auto", "alpaca", "sharegpt", "messages", "preference", "rl", "text"]
AttnImpl = Literal["auto", "eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"]
Scheduler = Literal["cosine", "cosine_with_min_lr", "linear", "constant", "constant_with_warmup", "warmup_stable_decay"]
Optimizer = Literal[
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_8bit",
    "paged_adamw_8bit",
    "paged_adamw_32bit",
    "adafactor",
    "sgd",
    "lion_8bit",
]
ReportTo = Literal["tensorboard", "wandb", "swanlab", "mlflow"]
DPOLoss = Literal[
    "sigmoid",
    "ipo",
    "hinge",
    "robust",
    "exo_pair",
    "nca_pair",
    "bco_pair",
    "sppo_hard",
    "aot",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
]
GRPOLoss = Literal["grpo", "dapo", "dr_grpo", "gspo"]

SEED_MAX = 2**32 - 1  # numpy's RandomState, which transformers.set_seed seeds, takes 0..2^32-1

SUPPORTED_STAGES: dict[str, tuple[str, ...]] = {
    "deepspeed": ("pt", "sft", "dpo", "grpo"),
    "megatron": ("pt", "sft", "dpo"),
    "verl": ("sft", "grpo"),
}


class Section(BaseModel):
    """Base of every section: frozen, unknown keys are errors, and no number field takes inf or nan (YAML's `.inf`,
    `.nan`): none of them has a meaning for an infinite value."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------------------------- model


ModelSourceChoice = Literal["auto", "local", "hf", "modelscope", "modelers"]


class MoESection(Section):
    """Mixture-of-experts settings; they apply only when the model is a mixture of experts (registry or config.json)."""

    aux_loss_coef: float | None = Field(
        None,
        ge=0.0,
        description="weight of the router's load-balancing loss; default: the model's own router_aux_loss_coef "
        "(config.json), else 0.001",
    )


class ModelSection(Section):
    name_or_path: str = Field(
        min_length=1, description="registry name (factory list models), local directory, Hub id, or a .gguf file"
    )
    gguf_file: str | None = Field(None, description="GGUF file inside name_or_path, when it is a directory or Hub id")
    template: str = Field(
        "auto", description="chat template: auto (the tokenizer's own, else the registry's) or a name"
    )
    dtype: DType = Field("auto", description="weights dtype: auto (bf16 on GPU/NPU that support it, else fp32)")
    attn_implementation: AttnImpl = Field(
        "auto", description="attention kernel: auto, eager, sdpa, flash_attention_2, flex_attention (CUDA)"
    )
    trust_remote_code: bool = Field(False, description="run the model repository's own Python code (only if trusted)")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) when loading from the Hub")
    source: ModelSourceChoice = Field(
        "auto",
        description="where a registry name or Hub id comes from: auto (a local copy or a hub cache, else the Hugging "
        "Face Hub, or ModelScope / Modelers when USE_MODELSCOPE_HUB / USE_OPENMIND_HUB is set), local (never "
        "download), hf, modelscope or modelers",
    )
    tokenizer: str | None = Field(None, description="tokenizer path when it differs from the model's")
    moe: MoESection = Field(default_factory=MoESection, description="mixture-of-experts models only")


# ---------------------------------------------------------------------------------------------- method


class LoraConfig(Section):
    rank: int = Field(16, ge=1, le=1024, description="LoRA rank r (8-64 usual)")
    alpha: int | None = Field(None, ge=1, description="LoRA alpha; default 2 x rank")
    dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="dropout on the LoRA path; 0 as in PEFT, LlamaFactory and torchtune: the low rank already limits "
        "what an adapter learns, and on a CPU each mask costs a step memory and time",
    )
    target: list[str] = Field(
        default_factory=lambda: ["all"],
        description="modules to adapt: all (every linear layer) or a list like [q_proj, v_proj]",
    )
    use_rslora: bool = Field(False, description="rank-stabilized scaling alpha / sqrt(r)")
    use_dora: bool = Field(False, description="weight-decomposed LoRA (DoRA)")
    modules_to_save: list[str] = Field(default_factory=list, description="extra modules trained in full, e.g. lm_head")
    experts: bool = Field(
        False,
        description="mixture of experts: also adapt the routed experts (fused 3-D expert weights through PEFT's "
        "target_parameters: no dropout or DoRA there); `all` alone adapts the attention projections",
    )
    router: bool = Field(
        False, description="mixture of experts: also adapt the routers and shared-expert gates (never by default)"
    )
    base_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="frozen base layers of an fp32 LoRA run: bf16 stores them in bf16 and multiplies on bf16 "
        "matrix instructions (AMX-BF16, AVX512-BF16) while activations, adapters, gradients and optimizer stay fp32; "
        "auto: bf16 on a CPU with them in one process, else fp32",
    )

    @field_validator("target", mode="before")
    @classmethod
    def _target_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class FreezeConfig(Section):
    trainable_layers: int = Field(2, description="train the last N decoder layers (negative: the first N)")
    trainable_modules: list[str] = Field(
        default_factory=list, description="train only these module names inside the trainable layers (all if empty)"
    )
    extra_modules: list[str] = Field(
        default_factory=list, description="train these modules too, wherever they are (e.g. embed_tokens, lm_head)"
    )


class QuantConfig(Section):
    bits: Literal[4, 8] = Field(4, description="bitsandbytes weight bits for QLoRA")
    type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type")
    double_quant: bool = Field(True, description="quantize the quantization constants too")
    storage_dtype: Literal["uint8", "bf16", "fp16", "fp32"] = Field(
        "uint8", description="packed 4-bit storage; = compute dtype to shard QLoRA weights with ZeRO-3"
    )
    compute_dtype: DType = Field("auto", description="compute dtype: auto = bf16 on GPU, fp32 on CPU")


class MethodSection(Section):
    type: MethodType = Field("lora", description="full, freeze, lora or qlora")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA settings (lora, qlora)")
    freeze: FreezeConfig = Field(default_factory=FreezeConfig, description="which parts train (freeze)")
    quant: QuantConfig = Field(default_factory=QuantConfig, description="base-weight quantization (qlora)")


# ---------------------------------------------------------------------------------------------- data


class DatasetSpec(Section):
    path: str = Field(min_length=1, description="a file (json/jsonl/csv/parquet), a directory, or a registry name")
    format: DataFormat = Field("auto", description="alpaca, sharegpt, messages, preference, rl, text or auto")
    split: str = Field("train", description="split to read when the source has several")
    columns: dict[str, str] = Field(
        default_factory=dict, description="rename columns: {our_name: your_column}, e.g. {prompt: question}"
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="sharegpt keys: role_tag, content_tag, user_tag, assistant_tag, ..."
    )
    ranking: bool = Field(False, description="alpaca/sharegpt rows with chosen/rejected columns (LlamaFactory)")
    max_samples: int | None = Field(None, ge=1, description="use at most this many rows")
    weight: float | None = Field(None, gt=0, description="sampling weight when data.mix is interleave")
    system: str | None = Field(None, description="system prompt added to every row that has none")


def _dataset_long_form(value: Any) -> Any:
    if isinstance(value, list):
        return [{"path": item} if isinstance(item, str) else item for item in value]
    if isinstance(value, str):
        return [{"path": value}]
    return value


class MixConfig(Section):
    strategy: Literal["concat", "interleave"] = Field("concat", description="concat, or interleave by weights")
    stop: Literal["first_exhausted", "all_exhausted"] = Field(
        "all_exhausted", description="interleave: stop when the first or when all datasets are used"
    )


class DataSection(Section):
    train: list[DatasetSpec] = Field(min_length=1, description="training datasets: registry names or {path, format}")
    eval: list[DatasetSpec] = Field(default_factory=list, description="evaluation datasets (optional)")
    dataset_dir: str | None = Field(
        None, description="folder with a LlamaFactory dataset_info.json whose entries train/eval may name"
    )
    eval_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="hold out this fraction of train for eval")
    max_length: int = Field(2048, ge=16, description="tokens per sample; longer samples are truncated")
    packing: bool | None = Field(None, description="pack samples into full sequences (default: on for pt)")
    mix: MixConfig = Field(default_factory=MixConfig, description="how several train datasets combine")
    num_workers: int = Field(1, ge=1, description="processes for tokenization")
    train_on_prompt: bool = Field(False, description="sft: also compute loss on user turns")
    cache_dir: str | None = Field(None, description="where tokenized data is cached (default ~/.cache/factory)")
    seed: int = Field(42, ge=0, le=SEED_MAX, description="shuffle and split seed")
    streaming: bool = Field(
        False,
        description="pt / sft: read, tokenize and pack the data on the fly while training (no pass before step 1; "
        "needs train.max_steps; deepspeed backend)",
    )

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _long_form(cls, value: Any) -> Any:
        return _dataset_long_form(value)


# ---------------------------------------------------------------------------------------------- train


class TrainSection(Section):
    epochs: float | None = Field(None, gt=0, description="passes over the data (default by stage)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    learning_rate: float | None = Field(None, gt=0, description="peak learning rate (default by stage and method)")
    scheduler: Scheduler | None = Field(None, description="lr schedule (cosine; pt: cosine to min_lr_ratio)")
    min_lr_ratio: float | None = Field(None, ge=0.0, le=1.0, description="cosine_with_min_lr floor, as peak fraction")
    warmup_ratio: float | None = Field(None, ge=0.0, lt=1.0, description="fraction of steps spent warming up")
    micro_batch_size: int = Field(1, ge=1, description="samples per device per forward pass")
    gradient_accumulation_steps: int | None = Field(None, ge=1, description="micro-batches per optimizer step")
    global_batch_size: int | None = Field(
        None, ge=1, description="samples per optimizer step = micro x data-parallel x accumulation"
    )
    precision: DType = Field("auto", description="auto (bf16 where supported, else fp32), bf16, fp16 or fp32")
    gradient_checkpointing: Literal["auto", True, False] = Field(
        "auto", description="recompute activations to save memory (auto: on for GPU/NPU, off on CPU)"
    )
    optimizer: Optimizer = Field("adamw_torch", description="optimizer name as Transformers knows it")
    adam_beta1: float = Field(0.9, gt=0.0, lt=1.0, description="AdamW beta1")
    adam_beta2: float | None = Field(None, gt=0.0, lt=1.0, description="AdamW beta2 (pt: 0.95, else 0.999)")
    weight_decay: float | None = Field(None, ge=0.0, description="AdamW weight decay (default by stage)")
    max_grad_norm: float = Field(1.0, ge=0.0, description="gradient clipping norm (0 disables)")
    seed: int = Field(42, ge=0, le=SEED_MAX, description="random seed for weights init, dropout and sampling")
    fused_kernels: Literal["auto", True, False] = Field(
        "auto", description="Liger fused kernels where installed (CUDA only)"
    )
    compile: bool = Field(
        False,
        description="torch.compile each decoder block: fused kernels, less activation memory, after a one-off "
        "compile cached for later runs (pt/sft)",
    )
    cpu_speedups: Literal["auto", "off"] = Field(
        "auto",
        description="factory's CPU kernels (factory_cli/accel/cpu): the LM head scores only supervised tokens, LoRA "
        "base layers in bf16 on CPUs with bf16 matrix units, adapter inputs rebuilt in the backward, sdpa per "
        "example of packed rows; auto: on for CPU runs (GPU/NPU runs never load them); off: the libraries' own code",
    )

    @field_validator("cpu_speedups", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainSection:
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("give either train.epochs or train.max_steps, not both")
        return self


# ---------------------------------------------------------------------------------------------- stages


class DPOSection(Section):
    beta: float = Field(0.1, gt=0.0, description="strength of the pull towards the reference model")
    loss: DPOLoss = Field("sigmoid", description="sigmoid (DPO), ipo, hinge, robust, ...")
    ref_model: str | None = Field(
        None, description="reference model; default: the frozen base (LoRA: the base under the adapter)"
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="robust DPO label-flip probability")
    precompute_ref_log_probs: bool = Field(False, description="compute reference log-probs once before training")

    @model_validator(mode="before")
    @classmethod
    def _no_prompt_length(cls, value: Any) -> Any:
        # Neither TRL 1.16's DPOConfig (max_length only, keeping the start) nor MindSpeed-LLM's DPO arguments limit
        # the prompt alone: a setting no engine reads is refused, not silently ignored.
        if isinstance(value, dict) and "max_prompt_length" in value:
            raise ValueError(
                "dpo.max_prompt_length is not supported: the DPO engines truncate prompt and answer together at "
                "data.max_length (keeping the start); remove it"
            )
        return value


class RewardSpec(Section):
    name: str | None = Field(None, description="a built-in reward (factory list rewards)")
    function: str | None = Field(None, description="your reward as path/to/file.py:function")
    weight: float = Field(1.0, description="weight when several rewards combine")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for the reward")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"function": value} if ":" in value or value.endswith(".py") else {"name": value}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> RewardSpec:
        if (self.name is None) == (self.function is None):
            raise ValueError("a reward needs exactly one of `name` (built-in) or `function` (file.py:function)")
        return self

    @property
    def label(self) -> str:
        return self.name or (self.function or "").rsplit(":", 1)[-1]


class SamplingConfig(Section):
    temperature: float = Field(1.0, gt=0.0, description="sampling temperature for rollouts")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling")
    top_k: int = Field(0, ge=0, description="top-k sampling (0 = off)")
    repetition_penalty: float = Field(1.0, gt=0.0, description="penalize repeated tokens (1 = off)")


class OverlongConfig(Section):
    buffer_length: int = Field(0, ge=0, description="soft overlong penalty buffer before max length (0 = off)")
    penalty_factor: float = Field(1.0, ge=0.0, description="penalty at the hard limit")


class GRPOSection(Section):
    loss: GRPOLoss = Field("grpo", description="grpo, dapo (clip-higher, token mean), dr_grpo, gspo (sequence ratio)")
    num_generations: int = Field(8, ge=2, description="completions sampled per prompt (the group)")
    max_prompt_length: int = Field(512, ge=1, description="prompt tokens kept (left-truncated)")
    max_completion_length: int = Field(256, ge=1, description="tokens generated per completion")
    beta: float | None = Field(None, ge=0.0, description="KL weight towards the reference (grpo: 0.04, else 0)")
    epsilon: float = Field(0.2, gt=0.0, lt=1.0, description="clip range (low side)")
    epsilon_high: float | None = Field(None, gt=0.0, description="clip range high side (dapo: 0.28, else = epsilon)")
    num_iterations: int = Field(1, ge=1, description="policy updates per generated batch (mu)")
    rewards: list[RewardSpec] = Field(min_length=1, description="reward functions and their weights")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="rollout sampling")
    dynamic_sampling: bool | None = Field(
        None, description="drop groups whose rewards are all equal (dapo default; verl backend)"
    )
    overlong: OverlongConfig = Field(default_factory=OverlongConfig, description="soft overlong punishment (dapo)")
    mask_truncated_completions: bool | None = Field(None, description="no loss on truncated completions (dapo: on)")
    use_vllm: bool = Field(False, description="generate with vLLM (CUDA, deepspeed backend)")


# ---------------------------------------------------------------------------------------------- parallel


class LaunchFields(Section):
    nnodes: int = Field(1, ge=1, description="machines")
    nproc_per_node: int = Field(1, ge=1, description="processes (GPUs/NPUs) per machine")
    node_rank: int = Field(0, ge=0, description="this machine's rank (0 on the first)")
    master_addr: str = Field("127.0.0.1", description="address of node 0")
    master_port: int = Field(29500, ge=1, le=65535, description="rendezvous port on node 0")

    @model_validator(mode="after")
    def _rank_in_range(self) -> LaunchFields:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        return self

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


class DeepSpeedParallel(LaunchFields):
    zero_stage: Literal[0, 1, 2, 3] = Field(0, description="DeepSpeed ZeRO stage (0 = plain DDP)")
    offload: Literal["none", "cpu", "nvme"] = Field("none", description="ZeRO offload of optimizer (and params at 3)")
    nvme_path: str | None = Field(None, description="directory on NVMe for offload: nvme")
    launcher: Literal["auto", "torchrun", "deepspeed", "accelerate"] = Field(
        "auto", description="process launcher (auto: torchrun for several processes)"
    )


class MegatronParallel(LaunchFields):
    tp: int = Field(1, ge=1, description="tensor parallel size (divides heads)")
    pp: int = Field(1, ge=1, description="pipeline parallel size (divides layers)")
    cp: int = Field(1, ge=1, description="context parallel size")
    ep: int = Field(1, ge=1, description="expert parallel size (MoE)")
    vpp: int | None = Field(None, ge=1, description="virtual pipeline stages per rank")
    sequence_parallel: bool = Field(False, description="sequence parallel (needs tp > 1)")
    distributed_optimizer: bool = Field(True, description="shard optimizer state across data-parallel ranks")


class VerlParallel(LaunchFields):
    strategy: Literal["fsdp", "fsdp2", "megatron"] = Field("fsdp2", description="actor training strategy")
    sequence_parallel: int = Field(1, ge=1, description="Ulysses sequence parallel size")
    tp: int = Field(1, ge=1, description="tensor parallel size (strategy megatron)")
    pp: int = Field(1, ge=1, description="pipeline parallel size (strategy megatron)")
    ep: int = Field(1, ge=1, description="expert parallel size (strategy megatron, MoE): experts split over ep devices")
    param_offload: bool = Field(False, description="offload actor parameters to CPU")
    optimizer_offload: bool = Field(False, description="offload optimizer states to CPU")


# ---------------------------------------------------------------------------------------------- backend-only


class MegatronSection(Section):
    load: str | None = Field(None, description="Megatron checkpoint to start from (default: convert the HF model)")
    recompute: Literal["none", "selective", "full"] = Field("selective", description="activation recomputation")
    use_mindspeed: Literal["auto", True, False] = Field("auto", description="MindSpeed-LLM on NPU (auto: when on NPU)")
    save_hf: bool = Field(True, description="convert the final checkpoint back to Hugging Face format")
    extra_args: list[str] = Field(default_factory=list, description="extra pretrain_gpt.py arguments, verbatim")


class RolloutSection(Section):
    engine: Literal["vllm", "sglang", "hf"] = Field("vllm", description="generation engine for rollouts")
    tp: int = Field(1, ge=1, description="rollout tensor parallel size")
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0, description="share of device memory for rollout")
    prompts_per_step: int = Field(32, ge=1, description="prompts per rollout step (verl data.train_batch_size)")
    update_batch_size: int | None = Field(
        None, ge=1, description="samples per actor update (default: all of one step's samples)"
    )
    log_prob_micro_batch_size: int = Field(8, ge=1, description="per-device micro batch for log-prob passes")
    expert_parallel: bool = Field(False, description="MoE: the rollout engine splits experts over its tp devices")
    routing_replay: Literal["disabled", "R2", "R3"] = Field(
        "disabled",
        description="MoE, strategy megatron: train on the routes of the old-policy pass (R2) or of the rollout (R3)",
    )
    extra_overrides: list[str] = Field(default_factory=list, description="extra verl hydra overrides, verbatim")


# ---------------------------------------------------------------------------------------------- run


class OutputSection(Section):
    dir: str | None = Field(None, description="run directory (default runs/<stage>-<model>)")
    save_steps: int = Field(500, ge=1, description="checkpoint every N optimizer steps")
    save_total_limit: int | None = Field(3, ge=1, description="keep the N newest checkpoints")
    resume: str = Field("auto", description="auto (continue the last complete checkpoint), never, or a path")


class LoggingSection(Section):
    steps: int = Field(10, ge=1, description="log every N optimizer steps")
    report_to: list[ReportTo] = Field(default_factory=list, description="tensorboard, wandb, swanlab, mlflow")
    project: str | None = Field(None, description="project name for wandb / swanlab / mlflow")
    sample_after_training: bool = Field(True, description="print the trained model's answer to one training prompt")


class EvalSection(Section):
    tasks: list[str] = Field(
        default_factory=lambda: ["ppl"],
        description="ppl, demo tasks, or lm-eval tasks as lm:<task> (factory list tasks)",
    )
    model: str | None = Field(None, description="model to evaluate (default: this run's final/)")
    compare: str | None = Field(None, description="a second model evaluated on the same tasks, with deltas")
    limit: int | None = Field(None, ge=1, description="examples per task (default: all)")
    batch_size: int = Field(8, ge=1, description="examples per forward pass")
    num_fewshot: int | None = Field(None, ge=0, description="few-shot examples for lm-eval tasks (default: the task's)")
    max_new_tokens: int | None = Field(
        None, ge=1, description="generation budget (default: 256 for gsm8k_demo, the task's own for lm-eval tasks)"
    )

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class SampleSection(Section):
    model: str | None = Field(None, description="model to sample from (default: this run's final/)")
    data: list[DatasetSpec] = Field(default_factory=list, description="prompts (default: the job's data.train)")
    rewards: list[RewardSpec] = Field(default_factory=list, description="scoring rewards (default: grpo.rewards)")
    output: str = Field(min_length=1, description="the rows written, a .jsonl file")
    n: int = Field(8, ge=1, description="answers sampled per prompt")
    temperature: float = Field(1.0, ge=0.0, description="sampling temperature")
    max_new_tokens: int = Field(256, ge=1, description="longest answer in tokens")
    keep: Literal["best", "top-k", "all"] = Field(
        "best", description="best (one per prompt), top-k (the k best) or all accepted answers"
    )
    k: int = Field(2, ge=1, description="answers kept per prompt with keep: top-k")
    min_score: float = Field(1.0, description="an answer is accepted at or above this total reward")
    pairs: bool = Field(False, description="write DPO pairs (best accepted vs worst) instead of SFT rows")
    limit: int | None = Field(None, ge=1, description="prompts read (default: all)")
    batch_size: int = Field(8, ge=1, description="prompts per generation batch, each with its n answers")
    seed: int = Field(42, ge=0, le=SEED_MAX, description="sampling seed: the same seed gives the same rows")
    engine: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="auto: vLLM when installed and on a CUDA GPU, else transformers generate"
    )

    @field_validator("data", mode="before")
    @classmethod
    def _long_form(cls, value: Any) -> Any:
        return _dataset_long_form(value)


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class JobBase(Section):
    backend: Backend = Field(description="engine: deepspeed, megatron or verl")
    stage: Stage = Field(description="pt, sft, dpo or grpo")
    device: DeviceName = Field("auto", description="auto, cuda, npu or cpu")
    model: ModelSection = Field(description="what to train")
    method: MethodSection = Field(default_factory=MethodSection, description="full, freeze, lora or qlora")
    data: DataSection = Field(description="datasets and how they become tokens")
    train: TrainSection = Field(default_factory=TrainSection, description="optimization")
    dpo: DPOSection | None = Field(None, description="stage dpo only")
    grpo: GRPOSection | None = Field(None, description="stage grpo only")
    output: OutputSection = Field(default_factory=OutputSection, description="run directory and checkpoints")
    logging: LoggingSection = Field(default_factory=LoggingSection, description="metrics")
    eval: EvalSection | None = Field(None, description="what `factory eval <job>` measures after training")
    sample: SampleSection | None = Field(None, description="what `factory sample <job>` generates and keeps")
    env: dict[str, str] = Field(default_factory=dict, description="environment variables for every process")

    @field_validator("env", mode="before")
    @classmethod
    def _env_values_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str) or not ENV_NAME.match(key):
                    raise ValueError(f"`{key}` is not a valid environment variable name")
                if isinstance(item, dict | list):
                    raise ValueError(f"env.{key} must be a single value (text or number), not a {type(item).__name__}")
            return {
                k: ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()
            }
        return value


class DeepSpeedJob(JobBase):
    backend: Literal["deepspeed"] = Field(description="engine: deepspeed, megatron or verl")
    parallel: DeepSpeedParallel = Field(default_factory=DeepSpeedParallel, description="processes and ZeRO")


class MegatronJob(JobBase):
    backend: Literal["megatron"] = Field(description="engine: deepspeed, megatron or verl")
    parallel: MegatronParallel = Field(default_factory=MegatronParallel, description="TP / PP / CP / EP sizes")
    megatron: MegatronSection = Field(default_factory=MegatronSection, description="Megatron / MindSpeed options")


class EngineSection(Section):
    python: str | None = Field(
        None,
        description="the interpreter that runs the engine, in an environment of its own (its pins clash with ours); "
        "default: the project's .venv-verl (make setup-verl) when present, else the one running factory",
    )


class VerlJob(JobBase):
    backend: Literal["verl"] = Field(description="engine: deepspeed, megatron or verl")
    engine: EngineSection = Field(default_factory=EngineSection, description="verl's own environment")
    parallel: VerlParallel = Field(default_factory=VerlParallel, description="processes and actor strategy")
    rollout: RolloutSection = Field(default_factory=RolloutSection, description="rollout engine (grpo)")


Job = DeepSpeedJob | MegatronJob | VerlJob

JOB_MODELS: dict[str, type[JobBase]] = {
    "deepspeed": DeepSpeedJob,
    "megatron": MegatronJob,
    "verl": VerlJob,
}
