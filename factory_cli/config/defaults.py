"""Stage- and method-dependent defaults (docs/domain.md): fill every `None` of a validated job. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from factory_cli.config.schema import DPOSection, JobBase, MegatronJob, VerlJob


@dataclass(frozen=True)
class StageDefaults:
    """Recommended values for one stage; `lr_*` are (default, usual_low, usual_high)."""

    lr_full: tuple[float, float, float]
    lr_adapter: tuple[float, float, float]
    epochs: float
    warmup_ratio: float
    weight_decay: float
    adam_beta2: float
    scheduler: str
    min_lr_ratio: float
    packing: bool


STAGE_DEFAULTS: dict[str, StageDefaults] = {
    "pt": StageDefaults((1e-4, 1e-4, 1e-3), (2e-4, 1e-4, 1e-3), 1.0, 0.01, 0.1, 0.95, "cosine_with_min_lr", 0.1, True),
    "sft": StageDefaults((1e-5, 1e-5, 2e-5), (1e-4, 1e-4, 2e-4), 3.0, 0.03, 0.01, 0.999, "cosine", 0.0, False),
    "dpo": StageDefaults((1e-6, 5e-7, 5e-6), (5e-6, 5e-6, 5e-5), 1.0, 0.1, 0.0, 0.999, "cosine", 0.0, False),
    "grpo": StageDefaults((1e-6, 1e-6, 3e-6), (1e-5, 1e-5, 1e-4), 1.0, 0.0, 0.0, 0.999, "cosine", 0.0, False),
}

DEFAULT_GRADIENT_ACCUMULATION = 8
GRPO_DEFAULT_BETA = 0.04
DAPO_CLIP_HIGH = 0.28
GSPO_CLIP = (3e-4, 4e-4)


def uses_adapter(job: JobBase) -> bool:
    """LoRA and QLoRA train an adapter; full and freeze train the weights."""
    return job.method.type in ("lora", "qlora")


def usual_lr(job: JobBase) -> tuple[float, float, float]:
    """(default, low, high) learning rate for the job's stage and method."""
    table = STAGE_DEFAULTS[job.stage]
    return table.lr_adapter if uses_adapter(job) else table.lr_full


def data_parallel_size(job: JobBase) -> int:
    """Ranks that see different data: world / (tp x pp x cp) for megatron, the world otherwise."""
    world = job.parallel.world_size  # type: ignore[attr-defined]
    if isinstance(job, MegatronJob):
        model_parallel = job.parallel.tp * job.parallel.pp * job.parallel.cp
        return max(1, world // model_parallel)
    return world


def model_short_name(name_or_path: str) -> str:
    """`Qwen/Qwen2.5-7B-Instruct` -> `qwen2.5-7b-instruct`, `/x/model.gguf` -> `model`."""
    tail = name_or_path.rstrip("/").rsplit("/", 1)[-1]
    return tail.removesuffix(".gguf").lower()


def resolve_defaults(job: JobBase) -> JobBase:
    """The same job with every stage/method-dependent default filled in (device ones stay `auto`)."""
    stage = STAGE_DEFAULTS[job.stage]
    t = job.train
    train: dict[str, Any] = {}
    if t.epochs is None and t.max_steps is None:
        train["epochs"] = stage.epochs
    if t.learning_rate is None:
        train["learning_rate"] = usual_lr(job)[0]
    if t.scheduler is None:
        train["scheduler"] = stage.scheduler
    if t.min_lr_ratio is None:
        train["min_lr_ratio"] = stage.min_lr_ratio
    if t.warmup_ratio is None:
        train["warmup_ratio"] = stage.warmup_ratio
    if t.weight_decay is None:
        train["weight_decay"] = stage.weight_decay
    if t.adam_beta2 is None:
        train["adam_beta2"] = stage.adam_beta2
    dp = data_parallel_size(job)
    per_step = t.micro_batch_size * dp
    if t.gradient_accumulation_steps is None:
        if t.global_batch_size is not None and t.global_batch_size % per_step == 0:
            train["gradient_accumulation_steps"] = t.global_batch_size // per_step
        elif t.global_batch_size is None:
            train["gradient_accumulation_steps"] = DEFAULT_GRADIENT_ACCUMULATION
    accumulation = train.get("gradient_accumulation_steps", t.gradient_accumulation_steps)
    if t.global_batch_size is None and accumulation is not None:
        train["global_batch_size"] = per_step * accumulation

    update: dict[str, Any] = {"train": t.model_copy(update=train)}
    if job.method.type in ("lora", "qlora") and job.method.lora.alpha is None:
        lora = job.method.lora.model_copy(update={"alpha": 2 * job.method.lora.rank})
        update["method"] = job.method.model_copy(update={"lora": lora})
    if job.data.packing is None:
        update["data"] = job.data.model_copy(update={"packing": stage.packing})
    if job.stage == "dpo" and job.dpo is None:
        update["dpo"] = DPOSection()
    if job.stage == "grpo" and job.grpo is not None:
        update["grpo"] = _resolve_grpo(job)
    if job.output.dir is None:
        name = f"runs/{job.stage}-{model_short_name(job.model.name_or_path)}"
        update["output"] = job.output.model_copy(update={"dir": name})
    if isinstance(job, VerlJob) and job.rollout.update_batch_size is None and job.grpo is not None:
        samples = job.rollout.prompts_per_step * job.grpo.num_generations
        update["rollout"] = job.rollout.model_copy(update={"update_batch_size": samples})
    return job.model_copy(update=update)


def _resolve_grpo(job: JobBase) -> Any:
    grpo = job.grpo
    assert grpo is not None
    is_dapo = grpo.loss == "dapo"
    fill: dict[str, Any] = {}
    if grpo.loss == "gspo" and "epsilon" not in grpo.model_fields_set:
        # Sequence-level ratios sit much closer to 1 than token-level ones: GSPO clips at 3e-4 / 4e-4.
        fill["epsilon"] = GSPO_CLIP[0]
        if grpo.epsilon_high is None:
            fill["epsilon_high"] = GSPO_CLIP[1]
    if grpo.beta is None:
        fill["beta"] = GRPO_DEFAULT_BETA if grpo.loss == "grpo" else 0.0
    if grpo.epsilon_high is None and "epsilon_high" not in fill:
        fill["epsilon_high"] = DAPO_CLIP_HIGH if is_dapo else grpo.epsilon
    if grpo.dynamic_sampling is None:
        fill["dynamic_sampling"] = is_dapo
    if grpo.mask_truncated_completions is None:
        fill["mask_truncated_completions"] = is_dapo
    if is_dapo and "buffer_length" not in grpo.overlong.model_fields_set:
        fill["overlong"] = grpo.overlong.model_copy(update={"buffer_length": grpo.max_completion_length // 4})
    return grpo.model_copy(update=fill)


@dataclass(frozen=True)
class DeviceFacts:
    """What device-dependent defaults depend on: the device kind, bf16 support, optional CUDA kernels installed."""

    kind: str
    bf16: bool = False
    flash_attn: bool = False
    liger: bool = False
    cpu_bf16_matmul: bool = False


def resolve_precision(requested: str, facts: DeviceFacts) -> str:
    """`auto` -> bf16 where the device has it, fp16 on older CUDA cards, else fp32 (bf16 is emulated on a CPU).

    The one resolver of an automatic precision / weight dtype: jobs get it through resolve_device_defaults, and a
    model loaded outside a job (eval, export, chat) through this function with the facts of the device it runs on.
    """
    if requested != "auto":
        return requested
    if facts.kind == "cpu":
        return "fp32"
    return "bf16" if facts.bf16 else "fp16" if facts.kind == "cuda" else "fp32"


def resolve_device_defaults(job: JobBase, facts: DeviceFacts) -> JobBase:
    """Fill every `auto` that depends on the device: precision, dtype, attention, checkpointing, fused kernels."""
    t, m = job.train, job.model
    precision = resolve_precision(t.precision, facts)
    dtype = m.dtype if m.dtype != "auto" else precision
    sixteen_bit = precision in ("bf16", "fp16")
    attn = m.attn_implementation
    if attn == "auto":
        cuda_flash = facts.kind == "cuda" and facts.flash_attn
        # Ascend: transformers routes flash_attention_2 to torch_npu's fused varlen attention (packed rows)
        npu_flash = facts.kind == "npu" and bool(job.data.packing)
        attn = "flash_attention_2" if (cuda_flash or npu_flash) and sixteen_bit else "sdpa"
    checkpointing = t.gradient_checkpointing if t.gradient_checkpointing != "auto" else facts.kind != "cpu"
    fused = t.fused_kernels if t.fused_kernels != "auto" else (facts.kind == "cuda" and facts.liger)
    train = t.model_copy(
        update={"precision": precision, "gradient_checkpointing": checkpointing, "fused_kernels": fused}
    )
    model = m.model_copy(update={"dtype": dtype, "attn_implementation": attn})
    update: dict[str, Any] = {"device": facts.kind, "train": train, "model": model}
    if job.method.type in ("lora", "qlora") and job.method.lora.base_precision == "auto":
        base = "bf16" if lora_base_bf16_fits(job, facts, precision) else "fp32"
        lora = job.method.lora.model_copy(update={"base_precision": base})
        update["method"] = job.method.model_copy(update={"lora": lora})
    if job.method.type == "qlora" and job.method.quant.compute_dtype == "auto":
        quant = job.method.quant.model_copy(update={"compute_dtype": "fp32" if facts.kind == "cpu" else precision})
        update["method"] = update.get("method", job.method).model_copy(update={"quant": quant})
    return job.model_copy(update=update)


def lora_base_bf16_obstacle(job: JobBase, precision: str) -> str | None:
    """Why a job's frozen base layers cannot run in bf16 (None when they can): they are wired for an fp32 LoRA run in
    one process without ZeRO on the deepspeed backend."""
    parallel = getattr(job, "parallel", None)
    if job.backend != "deepspeed" or job.method.type != "lora":
        return "bf16 base layers are for method.type: lora on the deepspeed backend"
    if job.device in ("cuda", "npu"):
        return f"bf16 base layers are a CPU speed-up; on {job.device} set train.precision: bf16"
    if job.train.cpu_speedups == "off":
        return "bf16 base layers are one of the CPU speed-ups, and train.cpu_speedups is off"
    if precision not in ("fp32", "auto"):
        return f"train.precision {precision} already runs the base layers in 16 bits"
    if job.method.lora.use_dora:
        return "DoRA reads the full-precision base weight in every step"
    if parallel is not None and (parallel.world_size > 1 or getattr(parallel, "zero_stage", 0) > 0):
        return "bf16 base layers run in a single process without ZeRO"
    return None


def cpu_speedups_on(job: JobBase) -> bool:
    """Whether a resolved job runs with factory's CPU speed-ups (factory_cli/accel/cpu): a deepspeed run on the CPU
    with train.cpu_speedups: auto. GPU and NPU runs never load them."""
    return job.backend == "deepspeed" and job.device == "cpu" and job.train.cpu_speedups == "auto"


def lora_base_bf16_fits(job: JobBase, facts: DeviceFacts, precision: str) -> bool:
    """Where bf16 frozen base layers are the right default: where they can run, on a CPU with bf16 matrix
    instructions, AMX-BF16 or AVX512-BF16 (there a bf16 GEMM is 3-4x an fp32 one; on GPUs and NPUs the run itself
    is bf16)."""
    return (
        facts.kind == "cpu"
        and facts.cpu_bf16_matmul
        and precision == "fp32"
        and lora_base_bf16_obstacle(job, precision) is None
    )
