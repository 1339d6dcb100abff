"""Job -> verl's launch: `python -m verl.trainer.main_ppo` (grpo) or torchrun `verl.trainer.sft_trainer` (sft). Pure.

Every override key was checked against verl v0.9.0 (2026-08-14): `verl/trainer/config/_generated_ppo_trainer.yaml`,
`sft_trainer_engine.yaml`, `verl/workers/config/{actor,optimizer,reward}.py`, the reward-loop managers
`naive` / `dapo`, and the example scripts (grpo_trainer, gspo_trainer, sft). Notable since verl 0.5:
* rewards live under `reward.` (`reward.custom_reward_function.*`, `reward.reward_manager.name`); the old
  top-level `custom_reward_function` / `reward_model.reward_manager` are migrated legacy keys;
* DAPO's overlong buffer is `+reward.reward_kwargs.overlong_buffer_cfg.*` with the `dapo` reward manager;
* dynamic sampling (`algorithm.filter_groups.*`) runs inside main_ppo's V1 trainer (`trainer.use_v1`, the
  default); the DAPO recipe entry `recipe.dapo.main_dapo` moved to the verl-recipe repository (a git
  submodule `recipe/` of a verl checkout) and is not installed by pip, so main_ppo is used for every loss;
* SFT is `verl.trainer.sft_trainer` (`fsdp_sft_trainer` and `model.partial_pretrain` are gone):
  `model.path`, `engine.*`, `optim.*`, `data.messages_key`.
Mixture of experts (verl 0.9.1): the megatron engine's `expert_model_parallel_size` and `router_replay.mode`
(McoreEngineConfig), the rollout's `expert_parallel_size` and `enable_rollout_routing_replay` (RolloutConfig).
The run step writes parquet (data.py) to <run_dir>/data and links the HF checkpoint at <run_dir>/hf_model.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from factory_cli.backends.base import Plan, Step
from factory_cli.backends.common.plan import LR_DECAY_STYLES, PYTHON, RunPaths, num, on_device
from factory_cli.backends.verl.data import SFT_DATASET_PAIRS
from factory_cli.backends.verl.reward_adapter import reward_module_source
from factory_cli.config.errors import UsageError
from factory_cli.config.schema import GRPOSection, TrainSection, VerlJob
from factory_cli.devices import ASCEND_SET_ENV, DeviceKind, dist_backend, launch_env, visible_devices_var
from factory_cli.rl_schedule import RLSchedule, rl_schedule

VERL_VERSION = "0.9.1"
GRPO_ENTRY = "verl.trainer.main_ppo"
SFT_ENTRY = "verl.trainer.sft_trainer"
# How the policy loss is averaged over tokens and sequences, per variant (verl's loss_agg_mode).
LOSS_AGG_MODES = {
    "grpo": "seq-mean-token-mean",
    "dapo": "token-mean",
    "dr_grpo": "seq-mean-token-sum-norm",
    "gspo": "seq-mean-token-mean",
}
POLICY_LOSS_MODES = {"gspo": "gspo"}
FILTER_METRIC = "score"  # a key of our compute_score dict, so it is in every sample's reward_extra_info
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# verl's FSDP engine computes in `mixed_precision.param_dtype` (bf16 when unset), whatever `dtype` says
# (verl/workers/engine/fsdp/transformer_impl.py); train.precision sets both.
SCHEDULERS = {"cosine": "cosine", "cosine_with_min_lr": "cosine", "constant": "constant"}
SCHEDULERS |= {"constant_with_warmup": "constant", "linear": "cosine", "warmup_stable_decay": "cosine"}
ROLLOUT_ENGINES = ("vllm", "sglang")
VAL_ROWS_WITHOUT_EVAL = 64
CPU_PLATFORM_MODULE = "factory_cli.backends.verl.cpu_platform"
MERGER_ENTRY = "verl.model_merger"
MERGE_LORA_ENTRY = "factory_cli.backends.verl.merge_lora"
_PLAIN = re.compile(r"^[A-Za-z0-9_./:+~@-]*$")


@dataclass(frozen=True)
class VerlPaths(RunPaths):
    """Every path a verl run reads or writes, under the run directory."""

    @classmethod
    def of(cls, job: VerlJob) -> VerlPaths:
        """Absolute: verl's Ray workers may start in another folder (or on another node)."""
        return cls(run_dir=cls.run_dir_of(job).absolute())

    @property
    def train_file(self) -> str:
        return self.sub("data", "train.parquet")

    @property
    def val_file(self) -> str:
        return self.sub("data", "val.parquet")

    @property
    def reward_file(self) -> str:
        return self.sub("verl_reward.py")

    @property
    def metrics_file(self) -> str:
        return self.sub("verl_metrics.jsonl")


def hydra_value(value: Any) -> str:
    """A Python value in hydra's override grammar: True/False, [a,b], numbers, quoted when not plain."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return num(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    text = str(value)
    if _PLAIN.match(text) and text not in ("True", "False", "null", "true", "false"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def overrides_of(pairs: list[tuple[str, Any]]) -> list[str]:
    """key=value overrides (a key starting with + adds a key verl's schema does not declare)."""
    return [f"{key}={hydra_value(value)}" for key, value in pairs]


def has_eval(job: VerlJob) -> bool:
    """Whether the job holds out data to validate on."""
    return bool(job.data.eval) or job.data.eval_ratio > 0


def check_verl_support(job: VerlJob, device: DeviceKind) -> None:
    """What verl cannot run, as UsageErrors with the way out."""
    if device == "cpu" and job.stage == "grpo":
        raise UsageError(
            f"verl {VERL_VERSION}'s GRPO needs GPUs or NPUs: its rollouts are vLLM / SGLang servers",
            "set device: cuda (or npu) on a GPU machine, or use backend: deepspeed for GRPO on the CPU",
        )
    if device == "cpu" and job.parallel.strategy == "megatron":
        raise UsageError("verl's Megatron strategy needs GPUs or NPUs", "use parallel.strategy: fsdp2 on the CPU")
    if job.method.type not in ("full", "lora"):
        raise UsageError(f"verl does not train method {job.method.type}", "use method.type full or lora")
    if job.method.type == "lora" and job.parallel.strategy == "megatron":
        raise UsageError(
            "LoRA through verl's Megatron strategy (Megatron Bridge) is not planned", "use parallel.strategy: fsdp2"
        )
    if job.stage == "grpo" and job.rollout.engine not in ROLLOUT_ENGINES:
        raise UsageError(f"verl {VERL_VERSION} has no `{job.rollout.engine}` rollout", "use rollout.engine: vllm")


def optim_pairs(prefix: str, train: TrainSection, megatron: bool = False) -> list[tuple[str, Any]]:
    """Optimizer settings: FSDP's optim config (constant or cosine schedule), or Megatron's (lr_decay_style)."""
    lr = train.learning_rate or 0.0
    pairs: list[tuple[str, Any]] = [
        (f"{prefix}.lr", lr),
        (f"{prefix}.lr_warmup_steps_ratio", train.warmup_ratio or 0.0),
    ]
    if megatron:
        style = LR_DECAY_STYLES[train.scheduler or "cosine"]
        pairs.append((f"{prefix}.lr_decay_style", style))
        if style != "constant":
            pairs.append((f"{prefix}.min_lr", lr * (train.min_lr_ratio or 0.0)))
    else:
        scheduler = SCHEDULERS[train.scheduler or "cosine"]
        pairs.append((f"{prefix}.lr_scheduler_type", scheduler))
        if scheduler == "cosine":
            pairs.append((f"{prefix}.min_lr_ratio", train.min_lr_ratio or 0.0))
    pairs += [
        (f"{prefix}.weight_decay", train.weight_decay or 0.0),
        (f"{prefix}.betas", [train.adam_beta1, train.adam_beta2 or 0.999]),
        (f"{prefix}.clip_grad", train.max_grad_norm),
    ]
    return pairs


def tokenizer_pairs(prefix: str, job: VerlJob, base_dirs: list[str] | None) -> list[tuple[str, Any]]:
    """model.tokenizer as verl's tokenizer_path (a local folder made absolute against the job's folder)."""
    from factory_cli.modeling.sources import tokenizer_reference

    reference = tokenizer_reference(job.model, [Path(d) for d in base_dirs or []])
    return [(f"{prefix}.tokenizer_path", reference)] if reference else []


def lora_pairs(prefix: str, job: VerlJob) -> list[tuple[str, Any]]:
    """PEFT LoRA on the HF model (FSDP strategies)."""
    if job.method.type != "lora":
        return []
    lora = job.method.lora
    targets: Any = "all-linear" if lora.target == ["all"] else list(lora.target)
    return [
        (f"{prefix}.lora_rank", lora.rank),
        (f"{prefix}.lora_alpha", lora.alpha or 2 * lora.rank),
        (f"{prefix}.target_modules", targets),
    ]


def resume_pairs(job: VerlJob) -> list[tuple[str, Any]]:
    """output.resume: auto -> auto, never -> disable, a path -> resume_path + resume_from_path."""
    resume = job.output.resume
    if resume == "auto":
        return [("trainer.resume_mode", "auto")]
    if resume == "never":
        return [("trainer.resume_mode", "disable")]
    return [("trainer.resume_mode", "resume_path"), ("trainer.resume_from_path", resume)]


def logger_list(job: VerlJob) -> list[str]:
    """console, file (read back into metrics.jsonl) and the job's report_to backends."""
    return ["console", "file", *job.logging.report_to]


def iterations_per_rollout(job: VerlJob) -> int:
    """Actor optimizer steps per rollout step: samples / update batch x ppo_epochs."""
    grpo = job.grpo
    assert grpo is not None and job.rollout.update_batch_size is not None, "resolve_defaults fills these"
    samples = job.rollout.prompts_per_step * grpo.num_generations
    return max(1, samples // job.rollout.update_batch_size) * grpo.num_iterations


@dataclass(frozen=True)
class Length:
    """How long verl runs: total_epochs always, total_training_steps when known, checkpoint cadence in verl steps."""

    total_epochs: int
    total_training_steps: int | None
    save_freq: int
    schedule: RLSchedule | None


def grpo_length(job: VerlJob, dataset_sizes: list[int] | None) -> Length:
    """Rollout steps: output.save_steps and train.max_steps count optimizer iterations, verl counts rollout steps."""
    grpo, rollout, train = job.grpo, job.rollout, job.train
    assert grpo is not None and rollout.update_batch_size is not None
    per_rollout = iterations_per_rollout(job)
    save_freq = max(1, job.output.save_steps // per_rollout)
    schedule = None
    if dataset_sizes is not None:
        schedule = rl_schedule(
            dataset_sizes,
            rollout.prompts_per_step,
            grpo.num_generations,
            rollout.update_batch_size,
            save_freq,
            grpo.num_iterations,
        )
    steps_per_epoch = schedule.rollout_steps_per_epoch if schedule is not None else None
    max_steps = math.ceil(train.max_steps / per_rollout) if train.max_steps else None
    return _length(train, max_steps, steps_per_epoch, save_freq, schedule)


def sft_length(job: VerlJob, dataset_sizes: list[int] | None) -> Length:
    """Optimizer steps: one per global batch (verl drops the last partial batch)."""
    train = job.train
    assert train.global_batch_size is not None
    steps_per_epoch = sum(dataset_sizes) // train.global_batch_size if dataset_sizes is not None else None
    return _length(train, train.max_steps, steps_per_epoch, job.output.save_steps, None)


def _length(
    train: TrainSection, max_steps: int | None, steps_per_epoch: int | None, save_freq: int, schedule: RLSchedule | None
) -> Length:
    if max_steps is not None:
        # Every epoch has at least one step, so max_steps epochs are always enough.
        epochs = math.ceil(max_steps / steps_per_epoch) if steps_per_epoch else max_steps
        return Length(max(1, epochs), max_steps, save_freq, schedule)
    assert train.epochs is not None, "resolve_defaults fills train.epochs"
    total = max(1, math.ceil(train.epochs * steps_per_epoch)) if steps_per_epoch else None
    return Length(max(1, math.ceil(train.epochs)), total, save_freq, schedule)


def trainer_pairs(
    job: VerlJob, device: DeviceKind, paths: VerlPaths, length: Length, sft: bool
) -> list[tuple[str, Any]]:
    """trainer.*: devices, length, checkpoints and validation cadence, logging, resume."""
    p = job.parallel
    pairs: list[tuple[str, Any]] = [("trainer.nnodes", p.nnodes), ("trainer.n_gpus_per_node", p.nproc_per_node)]
    if device in ("npu", "cpu"):
        pairs.append(("trainer.device", device))
    pairs.append(("trainer.total_epochs", length.total_epochs))
    if length.total_training_steps is not None:
        pairs.append(("trainer.total_training_steps", length.total_training_steps))
    pairs += [
        ("trainer.save_freq", length.save_freq),
        ("trainer.test_freq", length.save_freq if has_eval(job) else -1),
    ]
    if not sft:
        pairs.append(("trainer.val_before_train", has_eval(job)))
    pairs += [
        ("trainer.default_local_dir", paths.checkpoints),
        ("trainer.project_name", job.logging.project or "factory"),
        ("trainer.experiment_name", paths.run_dir.name),
        ("trainer.logger", logger_list(job)),
    ]
    if sft:
        pairs.append(("trainer.seed", job.train.seed))
    pairs += resume_pairs(job)
    if job.output.save_total_limit is not None:
        keep = "trainer.max_ckpt_to_keep" if sft else "trainer.max_actor_ckpt_to_keep"
        pairs.append((keep, job.output.save_total_limit))
    return pairs


def grpo_pairs(
    job: VerlJob, device: DeviceKind, paths: VerlPaths, length: Length, base_dirs: list[str] | None = None
) -> list[tuple[str, Any]]:
    """main_ppo overrides for GRPO and its variants (DAPO, Dr. GRPO, GSPO)."""
    grpo, rollout, p, t = job.grpo, job.rollout, job.parallel, job.train
    assert grpo is not None and rollout.update_batch_size is not None and grpo.beta is not None
    actor, ref, roll = "actor_rollout_ref.actor", "actor_rollout_ref.ref", "actor_rollout_ref.rollout"
    model = "actor_rollout_ref.model"
    pairs: list[tuple[str, Any]] = []
    if p.strategy == "megatron":
        pairs.append(("model_engine", "megatron"))
    pairs += [
        ("algorithm.adv_estimator", "grpo"),
        ("algorithm.norm_adv_by_std_in_grpo", grpo.loss != "dr_grpo"),
        ("algorithm.use_kl_in_reward", False),
    ]
    if grpo.dynamic_sampling:
        pairs += [("algorithm.filter_groups.enable", True), ("algorithm.filter_groups.metric", FILTER_METRIC)]
    pairs += [
        ("data.train_files", paths.train_file),
        ("data.val_files", paths.val_file),
        ("data.prompt_key", "prompt"),
        ("data.train_batch_size", rollout.prompts_per_step),
        ("data.max_prompt_length", grpo.max_prompt_length),
        ("data.max_response_length", grpo.max_completion_length),
        ("data.truncation", "left"),
        ("data.shuffle", True),
        ("data.seed", job.data.seed),
        (f"{model}.path", paths.hf_model),
    ]
    pairs += tokenizer_pairs(model, job, base_dirs)
    if job.model.trust_remote_code:
        pairs.append((f"{model}.trust_remote_code", True))
    pairs.append((f"{model}.enable_gradient_checkpointing", bool(t.gradient_checkpointing)))
    pairs.append((f"+{model}.override_config.attn_implementation", job.model.attn_implementation))
    pairs += lora_pairs(model, job)
    if p.strategy != "megatron":
        pairs.append((f"{actor}.strategy", p.strategy))
    pairs += optim_pairs(f"{actor}.optim", t, megatron=p.strategy == "megatron")
    pairs += [
        (f"{actor}.ppo_mini_batch_size", rollout.update_batch_size // grpo.num_generations),
        (f"{actor}.ppo_micro_batch_size_per_gpu", t.micro_batch_size),
        (f"{actor}.ppo_epochs", grpo.num_iterations),
        (f"{actor}.use_kl_loss", grpo.beta > 0),
        (f"{actor}.kl_loss_coef", grpo.beta),
        (f"{actor}.kl_loss_type", "low_var_kl"),
        (f"{actor}.clip_ratio_low", grpo.epsilon),
        (f"{actor}.clip_ratio_high", grpo.epsilon_high),
        (f"{actor}.loss_agg_mode", LOSS_AGG_MODES[grpo.loss]),
        (f"{actor}.policy_loss.loss_mode", POLICY_LOSS_MODES.get(grpo.loss, "vanilla")),
        (f"{actor}.entropy_coeff", 0),
    ]
    if p.strategy == "megatron":
        pairs += [(f"{actor}.megatron.param_offload", p.param_offload)]
        pairs += [(f"{actor}.megatron.optimizer_offload", p.optimizer_offload)]
        pairs += megatron_parallel_pairs(f"{actor}.megatron", job)
        if rollout.routing_replay != "disabled":
            pairs.append((f"{actor}.megatron.router_replay.mode", rollout.routing_replay))
    else:
        pairs += [
            (f"{actor}.fsdp_config.param_offload", p.param_offload),
            (f"{actor}.fsdp_config.optimizer_offload", p.optimizer_offload),
            (f"{actor}.fsdp_config.dtype", DTYPES[t.precision]),
            (f"+{actor}.fsdp_config.mixed_precision.param_dtype", t.precision),
            (f"{actor}.ulysses_sequence_parallel_size", p.sequence_parallel),
        ]
    s = grpo.sampling
    pairs += [
        (f"{roll}.name", rollout.engine),
        (f"{roll}.tensor_model_parallel_size", rollout.tp),
        *rollout_moe_pairs(roll, job),
        (f"{roll}.gpu_memory_utilization", rollout.gpu_memory_utilization),
        (f"{roll}.n", grpo.num_generations),
        (f"{roll}.temperature", s.temperature),
        (f"{roll}.top_p", s.top_p),
        (f"{roll}.top_k", s.top_k if s.top_k > 0 else -1),
        (f"{roll}.dtype", DTYPES[t.precision]),
        (f"{roll}.log_prob_micro_batch_size_per_gpu", rollout.log_prob_micro_batch_size),
    ]
    if job.method.type == "lora":
        # vLLM must load the base weights itself; only the adapter is synced (verl docs, ppo_lora).
        pairs.append((f"{roll}.load_format", "safetensors"))
    pairs.append((f"{ref}.log_prob_micro_batch_size_per_gpu", rollout.log_prob_micro_batch_size))
    pairs += [
        ("reward.custom_reward_function.path", paths.reward_file),
        ("reward.custom_reward_function.name", "compute_score"),
    ]
    if grpo.overlong.buffer_length > 0:
        buffer = "+reward.reward_kwargs.overlong_buffer_cfg"
        pairs += [
            ("reward.reward_manager.name", "dapo"),
            (f"{buffer}.enable", True),
            (f"{buffer}.len", grpo.overlong.buffer_length),
            (f"{buffer}.penalty_factor", grpo.overlong.penalty_factor),
            (f"{buffer}.log", False),
            ("+reward.reward_kwargs.max_resp_len", grpo.max_completion_length),
        ]
    pairs += [(f"+ray_kwargs.ray_init.runtime_env.env_vars.{k}", v) for k, v in ray_worker_env(job, paths).items()]
    return pairs + trainer_pairs(job, device, paths, length, sft=False)


def megatron_parallel_pairs(prefix: str, job: VerlJob) -> list[tuple[str, Any]]:
    """verl's megatron engine (McoreEngineConfig): TP, PP, EP (the expert TP stays Megatron's default, the TP), and
    the router's load-balancing loss. verl's megatron engine builds every MoE model with
    `moe_router_load_balancing_type: none` unless override_transformer_config says otherwise, so
    model.moe.aux_loss_coef, when set, turns Megatron's aux_loss on with that weight."""
    p = job.parallel
    pairs: list[tuple[str, Any]] = [
        (f"{prefix}.tensor_model_parallel_size", p.tp),
        (f"{prefix}.pipeline_model_parallel_size", p.pp),
        (f"{prefix}.expert_model_parallel_size", p.ep),
    ]
    coef = job.model.moe.aux_loss_coef
    if coef is not None:
        config = f"+{prefix}.override_transformer_config"
        pairs += [(f"{config}.moe_router_load_balancing_type", "aux_loss"), (f"{config}.moe_aux_loss_coeff", coef)]
    return pairs


def rollout_moe_pairs(roll: str, job: VerlJob) -> list[tuple[str, Any]]:
    """vLLM / SGLang expert parallel (verl's RolloutConfig wants it equal to the rollout's TP x DP; the plan keeps
    DP at 1), and the rollout's routes recorded for R3 routing replay."""
    rollout = job.rollout
    pairs: list[tuple[str, Any]] = []
    if rollout.expert_parallel:
        pairs.append((f"{roll}.expert_parallel_size", rollout.tp))
    if rollout.routing_replay == "R3":
        pairs.append((f"{roll}.enable_rollout_routing_replay", True))
    return pairs


def ray_worker_env(job: VerlJob, paths: VerlPaths) -> dict[str, str]:
    """What verl's Ray actors must see, wherever Ray starts them: the metrics file verl's file logger writes (from
    the TaskRunner actor, not the launching process), tensorboard's folder and the job's env."""
    env = {"VERL_FILE_LOGGER_PATH": paths.metrics_file}
    if "tensorboard" in job.logging.report_to:
        env["TENSORBOARD_DIR"] = paths.sub("tensorboard")
    return {**env, **job.env}


def cpu_env() -> dict[str, str]:
    """verl on the CPU (tests and demos): backends/verl/cpu_platform.py registered through verl's extension hook,
    and the FSDP engine picked by its registry key (it is registered for cuda and npu only)."""
    return {
        "VERL_USE_EXTERNAL_MODULES": CPU_PLATFORM_MODULE,
        "VERL_PLATFORM": "cpu",
        "VERL_ENGINE_DEVICE": "cuda",
    }


def sft_pairs(
    job: VerlJob, device: DeviceKind, paths: VerlPaths, length: Length, base_dirs: list[str] | None = None
) -> list[tuple[str, Any]]:
    """sft_trainer overrides: multi-turn messages parquet, the HF model, the FSDP engine, optim, trainer."""
    p, t, data = job.parallel, job.train, job.data
    pairs: list[tuple[str, Any]] = [("data.train_files", paths.train_file)]
    if has_eval(job):
        pairs.append(("data.val_files", paths.val_file))
    pairs += list(SFT_DATASET_PAIRS)
    pairs += [
        ("data.messages_key", "messages"),
        ("data.train_batch_size", t.global_batch_size),
        ("data.micro_batch_size_per_gpu", t.micro_batch_size),
        ("data.max_length", data.max_length),
        ("data.truncation", "right"),
        ("data.use_dynamic_bsz", bool(data.packing)),
    ]
    if data.packing:
        pairs.append(("data.max_token_len_per_gpu", data.max_length * t.micro_batch_size))
    pairs.append(("model.path", paths.hf_model))
    pairs += tokenizer_pairs("model", job, base_dirs)
    if job.model.trust_remote_code:
        pairs.append(("model.trust_remote_code", True))
    pairs.append(("model.enable_gradient_checkpointing", bool(t.gradient_checkpointing)))
    pairs.append(("+model.override_config.attn_implementation", job.model.attn_implementation))
    pairs += lora_pairs("model", job)
    if device == "cpu":
        pairs += [("data.num_workers", 0)]
    if p.strategy == "megatron":
        pairs += [("engine", "megatron"), ("optim", "megatron")]
        pairs += [("engine.param_offload", p.param_offload), ("engine.optimizer_offload", p.optimizer_offload)]
        pairs += megatron_parallel_pairs("engine", job)
    else:
        pairs += [
            ("engine", "fsdp"),
            ("engine.strategy", p.strategy),
            ("engine.param_offload", p.param_offload),
            ("engine.optimizer_offload", p.optimizer_offload),
            ("engine.ulysses_sequence_parallel_size", p.sequence_parallel),
            ("engine.dtype", DTYPES[t.precision]),
            ("+engine.mixed_precision.param_dtype", t.precision),
        ]
        if device == "cpu":  # torch.compile of verl's loss needs a C++ toolchain per rank: not worth it for a CPU demo
            pairs.append(("engine.use_torch_compile", False))
    pairs += optim_pairs("optim", t, megatron=p.strategy == "megatron")
    return pairs + trainer_pairs(job, device, paths, length, sft=True)


def merge_argv(stage: str, step_dir: Path, target: Path, trust_remote_code: bool) -> list[str]:
    """verl's model merger: the FSDP shards of a saved step (the actor's, for GRPO) as a Hugging Face model in
    `target` (a LoRA run: the base weights plus `lora_adapter/`, which merge_lora.py then folds in)."""
    local = step_dir / "actor" if stage == "grpo" else step_dir
    argv = [PYTHON, "-m", MERGER_ENTRY, "merge", "--backend", "fsdp", "--local_dir", str(local)]
    argv += ["--target_dir", str(target)]
    return argv + (["--trust-remote-code"] if trust_remote_code else [])


def merge_lora_argv(target: Path) -> list[str]:
    """Fold the merger's `lora_adapter/` into the weights in `target` (backends/verl/merge_lora.py)."""
    return [PYTHON, "-m", MERGE_LORA_ENTRY, str(target)]


def reward_specs(grpo: GRPOSection) -> list[dict[str, Any]]:
    """The job's rewards for the generated compute_score (verl's dapo manager adds the overlong penalty)."""
    return [
        {"name": r.name, "function": r.function, "weight": r.weight, "kwargs": dict(r.kwargs), "label": r.label}
        for r in grpo.rewards
    ]


def plan_verl(
    job: VerlJob,
    device: DeviceKind,
    model_source: str,
    dataset_sizes: list[int] | None = None,
    base_dirs: list[str] | None = None,
) -> Plan:
    """The whole plan for a job whose defaults (device ones included) are resolved.

    `dataset_sizes` are the training rows per parquet file (the run step writes one): with them the plan
    states verl's total_training_steps and the RL schedule; without them (a dry run) verl counts itself.
    `base_dirs` are where relative reward files are looked up by the generated reward module.
    """
    check_verl_support(job, device)
    paths = VerlPaths.of(job)
    p = job.parallel
    env = {**launch_env(device, p.nproc_per_node), **ray_worker_env(job, paths)}
    if device == "cpu":
        env.update(cpu_env())
    files: dict[str, str] = {}
    if job.stage == "grpo":
        assert job.grpo is not None
        length = grpo_length(job, dataset_sizes)
        overrides = overrides_of(grpo_pairs(job, device, paths, length, base_dirs))
        entry = GRPO_ENTRY
        argv = [PYTHON, "-m", entry, *overrides, *job.rollout.extra_overrides]
        files[paths.reward_file] = reward_module_source(reward_specs(job.grpo), base_dirs or [])
    else:
        length = sft_length(job, dataset_sizes)
        overrides = overrides_of(sft_pairs(job, device, paths, length, base_dirs))
        entry = SFT_ENTRY
        argv = [
            PYTHON, "-m", "torch.distributed.run",
            "--nnodes", str(p.nnodes),
            "--nproc_per_node", str(p.nproc_per_node),
            "--node_rank", str(p.node_rank),
            "--master_addr", p.master_addr,
            "--master_port", str(p.master_port),
            "-m", entry, *overrides, *job.rollout.extra_overrides,
        ]  # fmt: skip
    step = Step(name="train", argv=on_device(argv, device), env=env, files=files)
    return Plan(
        backend="verl",
        stage=job.stage,
        run_dir=str(paths.run_dir),
        device=device,
        steps=[step],
        engine_config={
            "verl_version": VERL_VERSION,
            "entry": entry,
            "overrides": [*overrides, *job.rollout.extra_overrides],
            "hf_model": paths.hf_model,
            "model_source": model_source,
            "train_file": paths.train_file,
            "val_file": paths.val_file,
            "reward_file": paths.reward_file if job.stage == "grpo" else None,
            "metrics_file": paths.metrics_file,
            "dataset_sizes": dataset_sizes,
            "total_training_steps": length.total_training_steps,
            "schedule": asdict(length.schedule) if length.schedule is not None else None,
        },
        notes=_notes(job, device, paths, length),
    )


def _notes(job: VerlJob, device: DeviceKind, paths: VerlPaths, length: Length) -> list[str]:
    p = job.parallel
    entry = GRPO_ENTRY if job.stage == "grpo" else SFT_ENTRY
    notes = [
        f"engine: verl {VERL_VERSION} ({entry}); overrides checked against its generated trainer config",
        f"distributed backend: {dist_backend(device)}",
        f"the run step writes {paths.train_file} (and {paths.val_file}) and links the HF model at {paths.hf_model}",
    ]
    visible = visible_devices_var(device)
    if visible:
        notes.append(f"devices are selected with {visible}")
    if device == "npu":
        notes.append(f"Ascend: the launch sources {ASCEND_SET_ENV} first; rollouts need vllm-ascend")
    if job.stage == "grpo":
        notes += _grpo_notes(job, paths, length)
        if p.nnodes > 1:
            notes.append(
                f"{p.nnodes} nodes: start a Ray cluster first with verl's interpreter (ray start --head on "
                f"{p.master_addr}, ray start --address={p.master_addr}:6379 on the others), then run factory train "
                f"on node 0 only; {paths.run_dir} must be on storage every node sees (the data, the model link, "
                "the reward module and the checkpoints are read there by path)"
            )
    elif length.total_training_steps is None:
        notes.append("length: verl counts the steps (global batches per epoch x total_epochs) once the data is written")
    notes += _moe_notes(job)
    if job.stage == "grpo" and not has_eval(job):
        notes.append(f"no eval data: val.parquet holds the first {VAL_ROWS_WITHOUT_EVAL} prompts and is never scored")
    notes += [f"ignored: {text}" for text in _ignored(job)]
    return notes


def _grpo_notes(job: VerlJob, paths: VerlPaths, length: Length) -> list[str]:
    grpo = job.grpo
    assert grpo is not None
    per_rollout = iterations_per_rollout(job)
    notes = []
    if length.schedule is not None:
        notes.append(f"schedule: {length.schedule.describe()}")
    else:
        notes.append(
            f"schedule: {job.rollout.prompts_per_step} prompts x {grpo.num_generations} samples per rollout step, "
            f"{per_rollout} actor updates each; steps per epoch follow once the run step has counted the prompts"
        )
    save = f"checkpoints: every {length.save_freq} rollout steps (= {length.save_freq * per_rollout} iterations)"
    if job.output.save_steps % per_rollout:
        save += f"; output.save_steps {job.output.save_steps} rounded down to whole rollout steps"
    notes.append(save + f" into {paths.checkpoints}")
    labels = ", ".join(r.label for r in grpo.rewards)
    notes.append(f"rewards: {paths.reward_file} computes the weighted sum of {labels}")
    if grpo.dynamic_sampling:
        notes.append(
            "dynamic sampling: algorithm.filter_groups in main_ppo's V1 trainer drops groups whose scores are all "
            "equal (the DAPO recipe entry recipe.dapo.main_dapo is in the verl-recipe repository, not in pip's verl)"
        )
    if grpo.overlong.buffer_length > 0:
        notes.append(
            f"overlong: verl's dapo reward manager penalizes the last {grpo.overlong.buffer_length} tokens before "
            f"{grpo.max_completion_length} (factor {grpo.overlong.penalty_factor})"
        )
    return notes


def _moe_notes(job: VerlJob) -> list[str]:
    p, rollout = job.parallel, job.rollout
    notes = []
    if p.strategy == "megatron":
        experts = f", experts split over EP {p.ep}" if p.ep > 1 else ""
        layout = f"TP {p.tp} x PP {p.pp} on {p.world_size} devices{experts}"
        router = (
            f"router load-balancing loss on (aux_loss, weight {num(job.model.moe.aux_loss_coef)})"
            if job.model.moe.aux_loss_coef is not None
            else "router load-balancing loss off (verl's default; model.moe.aux_loss_coef turns it on)"
        )
        notes.append(f"megatron engine: {layout}; for a mixture of experts, {router}")
    if job.stage != "grpo":
        return notes
    if rollout.expert_parallel:
        notes.append(f"rollout: {rollout.engine} splits the experts over its {rollout.tp} tp devices (expert parallel)")
    if rollout.routing_replay == "R2":
        notes.append("routing replay R2: the update replays the routes the old-policy log-prob pass recorded")
    elif rollout.routing_replay == "R3":
        notes.append(
            f"routing replay R3: {rollout.engine} records each sample's routes and the update replays them (verl "
            "needs vLLM >= 0.22 or an SGLang that returns routed experts)"
        )
    return notes


def _ignored(job: VerlJob) -> list[str]:
    ignored = []
    if job.model.moe.aux_loss_coef is not None and job.parallel.strategy != "megatron":
        ignored.append(
            "model.moe.aux_loss_coef: verl's FSDP actor computes its loss from the logits only and has no router "
            "load-balancing term (parallel.strategy megatron takes it)"
        )
    grpo = job.grpo
    if grpo is not None and grpo.sampling.repetition_penalty != 1.0:
        ignored.append("grpo.sampling.repetition_penalty: verl's rollout config has no repetition penalty")
    if grpo is not None and grpo.mask_truncated_completions:
        ignored.append("grpo.mask_truncated_completions: verl shapes truncated completions with the overlong buffer")
    if job.train.optimizer not in ("adamw_torch", "adamw_torch_fused"):
        ignored.append(f"train.optimizer {job.train.optimizer}: the plan keeps verl's AdamW")
    if job.train.scheduler in ("linear", "warmup_stable_decay") and job.parallel.strategy != "megatron":
        ignored.append(f"train.scheduler {job.train.scheduler}: verl has constant and cosine only (cosine is used)")
    if job.stage == "sft" and job.data.train_on_prompt:
        ignored.append("data.train_on_prompt: verl's SFT trains on assistant turns only")
    return ignored
