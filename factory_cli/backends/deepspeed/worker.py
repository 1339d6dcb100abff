"""One training process: `python -m factory_cli.backends.deepspeed.worker <run_dir>/plan.json`.

Started once per device by torchrun / the deepspeed launcher, or called in-process for a single
plain process. Reads the plan, the resolved job and the prepared-data manifest; trains; saves final/.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from factory_cli.config.schema import DeepSpeedJob

EXIT_OK, EXIT_FAILED = 0, 1


def rank_zero() -> bool:
    """True on the process that writes shared files."""
    return int(os.environ.get("RANK", "0")) == 0


def say(message: str) -> None:
    """Print from the main process only."""
    if rank_zero():
        from factory_cli.ui import console

        console.print(message)


def load_plan_and_job(plan_path: Path) -> tuple[dict[str, Any], DeepSpeedJob]:
    """The plan and the resolved job of the run directory `plan_path` (<run_dir>/plan.json) lies in."""
    from factory_cli.runs import RunDir

    run = RunDir(plan_path.parent)
    return run.plan(), run.job(DeepSpeedJob)


def load_run_inputs(plan_path: Path) -> tuple[dict[str, Any], DeepSpeedJob, dict[str, Any]]:
    """The plan, the resolved job and the prepared-data manifest of a run directory."""
    from factory_cli.runs import RunDir

    plan, job = load_plan_and_job(plan_path)
    return plan, job, RunDir(plan_path.parent).manifest()


def init_distributed(plan: dict[str, Any]) -> None:
    """DeepSpeed must own the process group before a ZeRO-3 model is built (gloo on CPU, hccl on NPU)."""
    if plan["device"] == "npu":
        import torch_npu  # noqa: F401 - registers the npu device with torch

    if plan["engine_config"].get("deepspeed") is None:
        return
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    import deepspeed

    from factory_cli.devices import dist_backend

    deepspeed.init_distributed(dist_backend=dist_backend(plan["device"]))


def run_worker(plan: dict[str, Any], job: DeepSpeedJob, manifest: dict[str, Any]) -> int:
    """Train one process's share of the job; returns the exit code."""
    from factory_cli.backends.deepspeed import cpu_malloc
    from factory_cli.backends.deepspeed.lm_head import compact_lm_head, dense_kernel_on, switched_on

    if plan["device"] == "cpu" and switched_on(cpu_malloc.ENV_SWITCH) and cpu_malloc.fix_mmap_threshold():
        say(f"malloc: blocks over {cpu_malloc.MMAP_THRESHOLD_BYTES >> 20} MiB are returned to the system when freed")
    fused_head = plan["engine_config"]["trainer"] != "Trainer"  # TRL's trainers score through a fused LM head
    with compact_lm_head(plan["device"] if fused_head else None) as compact:
        # TRL's own fused kernel multiplies in one dtype: a bf16 head needs the model's forward or factory's kernel
        bf16_head_fits = not fused_head or dense_kernel_on(compact)
        return _train(plan, job, manifest, compact, bf16_head_fits)


def _train(
    plan: dict[str, Any], job: DeepSpeedJob, manifest: dict[str, Any], compact_lm_head: bool, bf16_head_fits: bool
) -> int:
    from factory_cli.backends.deepspeed.callbacks import (
        CheckpointSealCallback,
        MetricsCallback,
        ProgressCallback,
        RunState,
        StopOnSignalCallback,
        last_good_checkpoint,
    )
    from factory_cli.backends.deepspeed.trainers import build_trainer, make_training_args, trl_reward_functions
    from factory_cli.data.pipeline import load_prepared
    from factory_cli.devices import DeviceInfo
    from factory_cli.methods import apply_freeze, describe_trainable, peft_config_from_kwargs, prepare_for_kbit
    from factory_cli.modeling.load import load_model, load_tokenizer
    from factory_cli.runs import resume_checkpoint
    from factory_cli.ui import quiet_engine_progress

    quiet_engine_progress()
    run_dir = Path(plan["run_dir"])
    engine = plan["engine_config"]
    init_distributed(plan)
    args = make_training_args(engine["trainer"], engine["training_args"])

    tokenizer = load_tokenizer(manifest["model_path"], trust_remote_code=job.model.trust_remote_code)
    if manifest.get("chat_template"):
        tokenizer.chat_template = manifest["chat_template"]
    train_dataset, eval_dataset = load_prepared(manifest)

    device = DeviceInfo(plan["device"], 1, plan["device"], job.train.precision == "bf16")
    model: Any = load_model(
        manifest["model_path"],
        dtype=job.model.dtype,
        attn_implementation=job.model.attn_implementation,
        method=job.method,
        device=device,
        trust_remote_code=job.model.trust_remote_code,
        revision=job.model.revision,
    )
    if job.data.packing:  # packed rows are padding-free (TRL's padding_free, the pt collator's)
        from factory_cli.backends.deepspeed.varlen_attention import use_varlen_sdpa

        if use_varlen_sdpa(model):
            say("attention: sdpa per example of each padding-free row (factory_varlen_sdpa)")
    peft_config = None
    if job.method.type == "freeze":
        apply_freeze(model, job.method.freeze)
    elif engine["peft"] is not None:
        peft_config = peft_config_from_kwargs(model, engine["peft"], manifest.get("registry_targets"))
        if job.method.type == "qlora":
            # TRL 1.16 does not prepare k-bit models itself (norms in fp32, input grads for checkpointing).
            model = prepare_for_kbit(model, bool(job.train.gradient_checkpointing))
        if engine["trainer"] == "Trainer":
            # The plain Trainer takes a ready PEFT model; TRL's trainers wrap the base model themselves
            # (handing them a wrapped one would add a second adapter for the DPO / GRPO reference).
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
            peft_config = None

    ref_model = None
    if job.stage == "dpo" and job.dpo is not None and job.dpo.ref_model:
        ref_model = load_model(
            job.dpo.ref_model,
            dtype=job.model.dtype,
            attn_implementation=job.model.attn_implementation,
            method=job.method.model_copy(update={"type": "full"}),
            device=device,
            trust_remote_code=job.model.trust_remote_code,
        )
    rewards = trl_reward_functions(engine["rewards"], [Path.cwd()]) if job.stage == "grpo" else None

    run_state = RunState()
    callbacks = [
        MetricsCallback(run_dir, run_state),
        CheckpointSealCallback(),
        StopOnSignalCallback(run_state),
        ProgressCallback(run_state),
    ]
    trainer = build_trainer(
        engine["trainer"],
        model=model,
        args=args,
        tokenizer=tokenizer,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=peft_config,
        callbacks=callbacks,
        reward_functions=rewards,
        ref_model=ref_model,
        packed=bool(job.data.packing),
    )
    say(describe_trainable(trainer.model))
    for note in speed_up_lora(trainer.model, plan["device"], job, bf16_head_fits):
        say(note)

    checkpoint = resume_checkpoint(run_dir, job.output.resume)
    if checkpoint is not None:
        say(f"resuming from {checkpoint}")
    started = time.time()
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    wall = time.time() - started

    if run_state.nan_at_step is not None:
        say(
            f"[red]stopped: the loss became NaN/inf at step {run_state.nan_at_step}[/red]; "
            f"last good checkpoint: {last_good_checkpoint(run_dir)}. Lower train.learning_rate or check the data."
        )
        return EXIT_FAILED
    if run_state.interrupted_by is not None:
        say(
            f"[yellow]interrupted by {run_state.interrupted_by} at step {trainer.state.global_step}[/yellow]; "
            f"checkpoint saved: {last_good_checkpoint(run_dir)}. Run the same command again to resume."
        )
        return EXIT_FAILED

    save_final(trainer, tokenizer, run_dir)
    if rank_zero():
        summary = {
            "wall_seconds": wall,
            "global_step": trainer.state.global_step,
            "first_loss": run_state.first_loss,
            "final_loss": run_state.last_loss,
            "tokens_per_second": _median(run_state.tokens_per_second),
            "train_runtime": output.metrics.get("train_runtime"),
            "num_input_tokens_seen": trainer.state.num_input_tokens_seen,
            "final_dir": str(run_dir / "final"),
            "trainable": describe_trainable(trainer.model),
            "compact_lm_head": compact_lm_head,
        }
        if job.logging.sample_after_training and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            summary["sample"] = sample_answer(trainer.model, tokenizer, manifest)
        from factory_cli.runs import write_json_atomic

        write_json_atomic(run_dir / "summary.json", summary)
    return EXIT_OK


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def speed_up_lora(model: Any, device: str, job: DeepSpeedJob, bf16_head_fits: bool = True) -> list[str]:
    """The LoRA speed kernels the job and device call for, applied to the PEFT model; one note per kernel used.
    `bf16_head_fits`: whether the LM head may go to bf16 with the base layers (it scores through code that takes it)."""
    if job.method.type != "lora":
        return []
    notes: list[str] = []
    from factory_cli.backends.deepspeed.lm_head import switched_on

    if job.method.lora.base_precision == "bf16":
        from factory_cli.backends.deepspeed.frozen_bf16 import LM_HEAD_ENV_SWITCH, bf16_frozen_base_layers, bf16_lm_head

        notes.append(f"frozen base layers in bf16 (fp32 activations and adapters): {bf16_frozen_base_layers(model)}")
        if bf16_head_fits and switched_on(LM_HEAD_ENV_SWITCH) and bf16_lm_head(model):
            notes.append("frozen LM head in bf16 (log-probabilities and gradients in fp32)")
    if device != "cpu":
        return notes
    from factory_cli.backends.deepspeed import lora_dropout, recomputed_activations

    recompute = switched_on(recomputed_activations.ENV_SWITCH)
    if switched_on(lora_dropout.ENV_SWITCH):
        replaced = lora_dropout.hash_lora_dropout(model, fold_without_dropout=recompute)
        if replaced:
            notes.append(f"LoRA dropout masks from a counter hash: {replaced} modules")
    if recompute:
        mlps, norms = recomputed_activations.recompute_adapter_inputs(model)
        if mlps or norms:
            notes.append(f"adapter inputs rebuilt in the backward, not kept: {mlps} SwiGLU MLPs, {norms} RMSNorms")
    return notes


def save_final(trainer: Any, tokenizer: Any, run_dir: Path) -> None:
    """final/ = the model or adapter + tokenizer, written beside and renamed into place (every rank takes part)."""
    final = run_dir / "final"
    staging = run_dir / ".final.partial"
    if rank_zero() and staging.exists():
        shutil.rmtree(staging)
    trainer.save_model(str(staging))
    if rank_zero():
        tokenizer.save_pretrained(str(staging))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)


def sample_answer(model: Any, tokenizer: Any, manifest: dict[str, Any], max_new_tokens: int = 64) -> dict[str, str]:
    """Greedy answer of the trained model to the first training prompt (a quick look at what it learned)."""
    from factory_cli.inference.generate import generate
    from factory_cli.inference.render import encode_prompt, prompt_template

    prompt = manifest.get("sample_prompt")
    if not prompt:
        return {}
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    model.eval()
    ids = encode_prompt(tokenizer, messages, prompt_template(tokenizer))
    (answer,) = generate(model, tokenizer, [ids], max_new_tokens=max_new_tokens)
    question = messages[-1]["content"] if messages else ""
    return {"prompt": str(question), "answer": answer}


def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process."""
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1:
        print("usage: python -m factory_cli.backends.deepspeed.worker <run_dir>/plan.json", file=sys.stderr)
        return 2
    plan, job, manifest = load_run_inputs(Path(arguments[0]))
    return run_worker(plan, job, manifest)


if __name__ == "__main__":
    sys.exit(main())
