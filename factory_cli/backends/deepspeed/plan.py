"""Job -> what Transformers / TRL / PEFT / DeepSpeed natively take, plus the launch command. Pure.

The plan holds keyword arguments, not objects: `training_args` feeds TrainingArguments (pt) or
SFTConfig / DPOConfig / GRPOConfig; `peft` feeds peft.LoraConfig; `deepspeed` is the JSON file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from factory_cli.backends.base import Plan, Step
from factory_cli.backends.common.plan import RunPaths
from factory_cli.backends.deepspeed.launch import choose_launcher, launch_argv
from factory_cli.backends.deepspeed.zero import zero_config
from factory_cli.config.schema import DeepSpeedJob, GRPOSection
from factory_cli.devices import DeviceKind, dist_backend, launch_env, visible_devices_var

PREPARE_MODULE = "factory_cli.backends.deepspeed.prepare"
TRAINERS = {"pt": "Trainer", "sft": "SFTTrainer", "dpo": "DPOTrainer", "grpo": "GRPOTrainer"}
GRPO_LOSS_TYPES = {"grpo": "grpo", "dapo": "dapo", "dr_grpo": "dr_grpo", "gspo": "grpo"}
# Always explicit: TRL configs default to bf16=True, which on a CPU without bf16 units means a 10x slower matmul.
PRECISION_FLAGS = {
    "bf16": {"bf16": True, "fp16": False},
    "fp16": {"bf16": False, "fp16": True},
    "fp32": {"bf16": False, "fp16": False},
}


def peft_kwargs(job: DeepSpeedJob) -> dict[str, Any] | None:
    """peft.LoraConfig keyword arguments for lora / qlora, None otherwise."""
    method = job.method
    if method.type not in ("lora", "qlora"):
        return None
    lora = method.lora
    targets: str | list[str] = "all-linear" if lora.target == ["all"] else list(lora.target)
    return {
        "r": lora.rank,
        "lora_alpha": lora.alpha or 2 * lora.rank,
        "lora_dropout": lora.dropout,
        "target_modules": targets,
        "use_rslora": lora.use_rslora,
        "use_dora": lora.use_dora,
        "modules_to_save": list(lora.modules_to_save) or None,
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def training_arguments(job: DeepSpeedJob, run_dir: Path, device_kind: DeviceKind, has_eval: bool) -> dict[str, Any]:
    """Arguments shared by TrainingArguments and every TRL config."""
    t = job.train
    args: dict[str, Any] = {
        "output_dir": str(run_dir / "checkpoints"),
        "run_name": run_dir.name,
        "per_device_train_batch_size": t.micro_batch_size,
        "per_device_eval_batch_size": t.micro_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.scheduler,
        "warmup_steps": t.warmup_ratio,
        "weight_decay": t.weight_decay,
        "adam_beta1": t.adam_beta1,
        "adam_beta2": t.adam_beta2,
        "max_grad_norm": t.max_grad_norm,
        "optim": t.optimizer,
        "seed": t.seed,
        "data_seed": job.data.seed,
        "gradient_checkpointing": bool(t.gradient_checkpointing),
        "logging_steps": job.logging.steps,
        "logging_first_step": True,
        # A NaN must reach our guard, not be averaged away.
        "logging_nan_inf_filter": False,
        "save_strategy": "steps",
        "save_steps": job.output.save_steps,
        "save_total_limit": job.output.save_total_limit,
        "report_to": list(job.logging.report_to) or "none",
        "include_num_input_tokens_seen": "non_padding",
        "disable_tqdm": True,
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "use_liger_kernel": bool(t.fused_kernels),
        **PRECISION_FLAGS[t.precision],
    }
    if t.max_steps is not None:
        args["max_steps"] = t.max_steps
    else:
        args["num_train_epochs"] = t.epochs
    if job.data.streaming:
        # Each rank iterates the stream (data/streaming.py) and Accelerate shards it; batches dispatched from rank 0
        # would be cut along their first dimension, padding-free sequence bounds included.
        args["accelerator_config"] = {"dispatch_batches": False}
    if t.scheduler == "cosine_with_min_lr":
        args["lr_scheduler_kwargs"] = {"min_lr_rate": t.min_lr_ratio}
    if t.gradient_checkpointing:
        args["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    if t.compile:
        args["torch_compile"] = True
    if device_kind == "cpu":
        args["use_cpu"] = True
    if job.parallel.world_size > 1 or job.parallel.zero_stage > 0:
        args["ddp_backend"] = dist_backend(device_kind)
    if job.parallel.world_size > 1:
        args["ddp_find_unused_parameters"] = False
    if has_eval:
        args["eval_strategy"] = "steps"
        args["eval_steps"] = job.output.save_steps
    return args


def stage_arguments(job: DeepSpeedJob) -> dict[str, Any]:
    """The TRL config fields of the job's stage (with the router loss weight the job sets for a mixture of experts;
    unset, the worker gives TRL the model's own: backends/deepspeed/moe.py)."""
    args = _stage_arguments(job)
    if job.stage in ("sft", "dpo", "grpo") and job.model.moe.aux_loss_coef is not None:
        args["router_aux_loss_coef"] = job.model.moe.aux_loss_coef
    return args


def _stage_arguments(job: DeepSpeedJob) -> dict[str, Any]:
    data = job.data
    if job.stage == "sft":
        # Our pipeline tokenizes, masks, truncates and packs; TRL must take the rows as they are.
        return {
            "max_length": None,
            "packing": False,
            "padding_free": bool(data.packing),
            "dataset_num_proc": data.num_workers if data.num_workers > 1 else None,
        }
    if job.stage == "dpo":
        assert job.dpo is not None
        return {
            "beta": job.dpo.beta,
            "loss_type": [job.dpo.loss],
            "label_smoothing": job.dpo.label_smoothing,
            "max_length": data.max_length,
            "precompute_ref_log_probs": job.dpo.precompute_ref_log_probs,
            "dataset_num_proc": data.num_workers if data.num_workers > 1 else None,
        }
    if job.stage == "grpo":
        assert job.grpo is not None
        return grpo_arguments(job.grpo)
    return {}


def grpo_arguments(grpo: GRPOSection) -> dict[str, Any]:
    """GRPOConfig fields: group, clip, KL, loss variant (gspo = sequence-level importance ratio), sampling."""
    args: dict[str, Any] = {
        "num_generations": grpo.num_generations,
        "max_completion_length": grpo.max_completion_length,
        "beta": grpo.beta,
        "epsilon": grpo.epsilon,
        "epsilon_high": grpo.epsilon_high,
        "num_iterations": grpo.num_iterations,
        "loss_type": GRPO_LOSS_TYPES[grpo.loss],
        "importance_sampling_level": "sequence" if grpo.loss == "gspo" else "token",
        "scale_rewards": "none" if grpo.loss == "dr_grpo" else "group",
        "mask_truncated_completions": bool(grpo.mask_truncated_completions),
        "temperature": grpo.sampling.temperature,
        "top_p": grpo.sampling.top_p,
        "top_k": grpo.sampling.top_k,
        "repetition_penalty": grpo.sampling.repetition_penalty,
        "use_vllm": grpo.use_vllm,
        "log_completions": False,
    }
    weights = [r.weight for r in grpo.rewards]
    if grpo.overlong.buffer_length > 0:
        weights.append(grpo.overlong.penalty_factor)
    args["reward_weights"] = weights
    return args


def reward_specs(grpo: GRPOSection | None) -> list[dict[str, Any]]:
    """The rewards, in the order of reward_weights (the overlong penalty last)."""
    if grpo is None:
        return []
    specs: list[dict[str, Any]] = [
        {"name": r.name, "function": r.function, "weight": r.weight, "kwargs": dict(r.kwargs), "label": r.label}
        for r in grpo.rewards
    ]
    if grpo.overlong.buffer_length > 0:
        specs.append(
            {
                "name": "soft_overlong_punishment",
                "function": None,
                "weight": grpo.overlong.penalty_factor,
                "kwargs": {
                    "max_completion_len": grpo.max_completion_length,
                    "soft_punish_cache": grpo.overlong.buffer_length,
                },
                "label": "overlong",
            }
        )
    return specs


# Accelerate reads these when Trainer hands it torch_compile: compile each repeated block once (the 30 decoder layers
# share one compiled graph) with dynamic sequence lengths, instead of the whole model per shape.
COMPILE_ENV = {"ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION": "1", "ACCELERATE_DYNAMO_USE_DYNAMIC": "1"}


# oneDNN, which runs the bf16 GEMMs on the CPU, caches one primitive (with its buffers) per matrix shape; with a new
# sequence length per example the default 1024 entries grow the process by ~0.5 GB over a run. One example's
# shapes (a forward and a backward GEMM per distinct layer shape) fit in 32.
BF16_BASE_ENV = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "32"}


def bf16_base_env(job: DeepSpeedJob) -> dict[str, str]:
    """The oneDNN setting of runs whose frozen base layers multiply in bf16 (method.lora.base_precision)."""
    return dict(BF16_BASE_ENV) if job.method.lora.base_precision == "bf16" else {}


def compile_env(job: DeepSpeedJob) -> dict[str, str]:
    """Regional, dynamic-shape torch.compile when train.compile is on; compiled kernels are kept in the factory
    cache (next to the converted models), so a later run of the same architecture skips most of the compilation."""
    if not job.train.compile:
        return {}
    from factory_cli.cache import cache_root

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen is None or Path(chosen).name.startswith("torchinductor_"):
        # torch writes its own temp-dir default into the environment once anything asked for it; only a value the
        # user chose is kept.
        chosen = str(cache_root() / "compile")
    return {**COMPILE_ENV, "TORCHINDUCTOR_CACHE_DIR": chosen}


PROJECT_VARIABLES = {"wandb": "WANDB_PROJECT", "swanlab": "SWANLAB_PROJECT", "mlflow": "MLFLOW_EXPERIMENT_NAME"}


def reporter_env(job: DeepSpeedJob, run_dir: Path) -> dict[str, str]:
    """Where the optional trackers write: TensorBoard into the run directory, projects by logging.project."""
    env: dict[str, str] = {}
    if "tensorboard" in job.logging.report_to:
        env["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    if job.logging.project:
        for reporter in job.logging.report_to:
            if reporter in PROJECT_VARIABLES:
                env[PROJECT_VARIABLES[reporter]] = job.logging.project
    return env


def plan_deepspeed(job: DeepSpeedJob, device_kind: DeviceKind, cpu_cores: int | None = None) -> Plan:
    """The whole plan for a job whose defaults (device ones included) are resolved."""
    run_dir = RunPaths.run_dir_of(job)
    plan_path = str(run_dir / "plan.json")
    has_eval = bool(job.data.eval) or job.data.eval_ratio > 0
    ds = zero_config(job.parallel, job.train.precision)
    args = {**training_arguments(job, run_dir, device_kind, has_eval), **stage_arguments(job)}
    if ds is not None:
        args["deepspeed"] = str(run_dir / "deepspeed.json")
    env = {
        **launch_env(device_kind, job.parallel.nproc_per_node, cpu_cores),
        **reporter_env(job, run_dir),
        **compile_env(job),
        **bf16_base_env(job),
        **job.env,
    }
    launcher = choose_launcher(job.parallel)
    steps = [
        Step(name="prepare", argv=[sys.executable, "-m", PREPARE_MODULE, plan_path]),
        Step(name="train", argv=launch_argv(job.parallel, plan_path, device_kind), env=env),
    ]
    notes = [f"launcher: {launcher}", f"distributed backend: {dist_backend(device_kind)}"]
    visible = visible_devices_var(device_kind)
    if visible:
        notes.append(f"devices are selected with {visible}")
    if device_kind == "npu":
        notes.append("Ascend: torch_npu is imported in each worker before the model loads; no CUDA-only kernels")
    return Plan(
        backend="deepspeed",
        stage=job.stage,
        run_dir=str(run_dir),
        device=device_kind,
        steps=steps,
        engine_config={
            "trainer": TRAINERS[job.stage],
            "training_args": args,
            "peft": peft_kwargs(job),
            "deepspeed": ds,
            "rewards": reward_specs(job.grpo),
            "launcher": launcher,
        },
        notes=notes,
    )
