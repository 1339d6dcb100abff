"""One training process: `python -m factory_cli.backends.deepspeed.worker <run_dir>/plan.json`.

Started once per device by torchrun / the deepspeed launcher, or called in-process for a single
plain process. Reads the plan, the resolved job and the prepared-data manifest; trains; saves final/.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factory_cli.config.schema import DeepSpeedJob
from factory_cli.runs import FINAL_STAGING, RunDir, is_disk_full, mark_complete, resume_checkpoint, write_json_atomic

if TYPE_CHECKING:  # the package itself is imported only for a CPU run that uses it
    from factory_cli.accel.cpu import CpuSpeedups

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

    run = RunDir(plan_path.parent)
    return run.plan(), run.job(DeepSpeedJob)


def load_run_inputs(plan_path: Path) -> tuple[dict[str, Any], DeepSpeedJob, dict[str, Any]]:
    """The plan, the resolved job and the prepared-data manifest of a run directory."""

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
    """Train one process's share of the job; returns the exit code. A full disk ends it with one message."""
    try:
        with cpu_speedups(job, plan["engine_config"]["trainer"]) as speedups:
            return _train(plan, job, manifest, speedups)
    except Exception as exc:
        run = RunDir(Path(plan["run_dir"]))
        if not is_disk_full(exc, run.path):
            raise
        if rank_zero():
            from factory_cli.ui import print_error

            print_error(*run.disk_full_message(exc))
        return EXIT_FAILED


def seed_everything(args: Any) -> None:
    """The seeding Transformers' Trainer does in its __init__ (`seed`, and `full_determinism` when set), done first."""
    from transformers.trainer_utils import enable_full_determinism, set_seed

    if args.full_determinism:
        enable_full_determinism(args.seed)
    else:
        set_seed(args.seed)


@contextmanager
def cpu_speedups(job: DeepSpeedJob, trainer: str) -> Iterator[CpuSpeedups | None]:
    """factory's CPU speed-ups (factory_cli/accel/cpu) for a CPU run with train.cpu_speedups: auto, applied while the
    block runs; None otherwise, and then the package is not even imported (GPU and NPU runs never load it)."""
    from factory_cli.config.defaults import cpu_speedups_on

    if not cpu_speedups_on(job):
        yield None
        return
    from factory_cli.accel import cpu

    with cpu.apply(job, trainer) as speedups:
        yield speedups


def _train(plan: dict[str, Any], job: DeepSpeedJob, manifest: dict[str, Any], speedups: CpuSpeedups | None) -> int:
    from factory_cli.backends.deepspeed.callbacks import (
        CheckpointSealCallback,
        MetricsCallback,
        ProgressCallback,
        RunState,
        StopOnSignalCallback,
        last_good_checkpoint,
    )
    from factory_cli.backends.deepspeed.moe import check_adapted_parts, moe_lora_kwargs
    from factory_cli.backends.deepspeed.trainers import build_trainer, make_training_args, trl_reward_functions
    from factory_cli.data.pipeline import load_prepared
    from factory_cli.devices import DeviceInfo
    from factory_cli.methods import apply_freeze, describe_trainable, peft_config_from_kwargs, prepare_for_kbit
    from factory_cli.modeling.load import load_model, load_tokenizer
    from factory_cli.modeling.sources import tokenizer_reference
    from factory_cli.ui import quiet_engine_progress

    quiet_engine_progress()
    run_dir = Path(plan["run_dir"])
    engine = plan["engine_config"]
    init_distributed(plan)
    args = make_training_args(engine["trainer"], engine["training_args"])
    # Seeded before anything random is built: Trainer seeds in its __init__, but pt's adapter is made here, before
    # it (get_peft_model below draws LoRA's A matrices), as are any freshly initialised weights; unseeded, two runs
    # of one job differed from the first gradient on (tests/integration/test_pinned_losses.py).
    seed_everything(args)

    # the tokenizer the data was prepared with (backends/deepspeed/prepare.py)
    tokenizer = load_tokenizer(
        tokenizer_reference(job.model, RunDir(run_dir).base_dirs()) or manifest["model_path"],
        trust_remote_code=job.model.trust_remote_code,
        revision=job.model.revision,
    )
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
    if speedups is not None:
        speedups.model_loaded(model)
    moe_notes, pt_router_loss = prepare_moe(model, job, engine, args)
    peft_config = None
    if job.method.type == "freeze":
        apply_freeze(model, job.method.freeze)
    elif engine["peft"] is not None:
        peft_kwargs = {**engine["peft"], **moe_lora_kwargs(model, job.method.lora, _targets_all(engine["peft"]))}
        peft_config = peft_config_from_kwargs(model, peft_kwargs, manifest.get("registry_targets"))
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
            manifest.get("ref_model_path") or job.dpo.ref_model,
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
        router_aux_loss_coef=pt_router_loss,
    )
    if engine["peft"] is not None and moe_notes:
        check_adapted_parts(trainer.model, job.method.lora)
    say(describe_trainable(trainer.model))
    for note in moe_notes:
        say(note)
    if speedups is not None:
        speedups.trainer_built(trainer.model)
        for note in speedups.notes:
            say(note)
    if job.device == "cpu":
        say(f"cpu speed-ups: {', '.join(applied_speedups(speedups)) or 'none'} (train.cpu_speedups)")

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
            "max_steps": trainer.state.max_steps,
            "first_loss": run_state.first_loss,
            "final_loss": run_state.last_loss,
            "tokens_per_second": _median(run_state.tokens_per_second),
            "train_runtime": output.metrics.get("train_runtime"),
            "num_input_tokens_seen": trainer.state.num_input_tokens_seen,
            "final_dir": str(RunDir(run_dir).final_dir),
            "trainable": describe_trainable(trainer.model),
            "cpu_speedups": applied_speedups(speedups),
        }
        if job.logging.sample_after_training and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            summary["sample"] = sample_answer(trainer.model, tokenizer, manifest)

        write_json_atomic(RunDir(run_dir).summary_file, summary)
    return EXIT_OK


def prepare_moe(model: Any, job: DeepSpeedJob, engine: dict[str, Any], args: Any) -> tuple[list[str], float | None]:
    """A mixture-of-experts model: the router loss weight for TRL's trainer (model.moe.aux_loss_coef, else the
    model's own), its sparse blocks as ZeRO-3 leaf modules. Returns lines for the run log and the weight the plain
    Trainer (pt) adds itself. A dense model with a router loss weight set is refused
    (factory_cli/backends/deepspeed/moe.py)."""
    from factory_cli.backends.deepspeed.moe import (
        describe_moe_lora,
        moe_layout,
        router_loss_coef,
        set_zero3_leaf_modules,
    )
    from factory_cli.config.errors import UsageError
    from factory_cli.config.moe_checks import QLORA_FUSED_EXPERTS, QLORA_FUSED_EXPERTS_HINT

    coef = router_loss_coef(model, job.model.moe.aux_loss_coef)
    layout = moe_layout(model)
    if not layout.is_moe:
        return [], None
    if job.method.type == "qlora" and layout.fused_expert_parameters:
        raise UsageError(QLORA_FUSED_EXPERTS, QLORA_FUSED_EXPERTS_HINT)
    notes = []
    pt_coef = None
    if coef is None:
        notes.append("mixture of experts: this model's class computes no router load-balancing loss (not added)")
    else:
        if engine["trainer"] == "Trainer" and coef and hasattr(model, "router_aux_loss_coef"):
            # The trainer adds coefficient x aux loss itself (trainers.py router_loss_trainer); the model's forward,
            # asked for its router logits, would add its own weight (the attribute it reads) on top.
            pt_coef = coef
            model.router_aux_loss_coef = 0.0
        elif engine["trainer"] != "Trainer":
            args.router_aux_loss_coef = coef
        if coef and (pt_coef is not None or engine["trainer"] != "Trainer"):
            notes.append(f"mixture of experts: router load-balancing loss x {coef:g} added, logged as aux_loss")
        else:
            notes.append("mixture of experts: no router load-balancing loss added")
    if job.method.type in ("lora", "qlora"):
        notes.append(describe_moe_lora(job.method.lora))
    if (engine["deepspeed"] or {}).get("zero_optimization", {}).get("stage") == 3:
        leaves = set_zero3_leaf_modules(model)
        notes.append(f"ZeRO-3: {', '.join(leaves)} gathered whole (DeepSpeed leaf modules)")
    return notes, pt_coef


def _targets_all(peft_kwargs: dict[str, Any]) -> bool:
    """The planned LoRA targets are PEFT's all-linear (method.lora.target: all)."""
    from factory_cli.methods import ALL_LINEAR

    return peft_kwargs.get("target_modules") == ALL_LINEAR


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def applied_speedups(speedups: CpuSpeedups | None) -> list[str]:
    """The names of the CPU speed-ups a run used (none when they are off or the run is not on the CPU)."""
    return [] if speedups is None else list(speedups.applied)


def save_final(trainer: Any, tokenizer: Any, run_dir: Path) -> None:
    """final/ = the model or adapter + tokenizer, written beside, sealed with the step it was trained to and renamed
    into place (every rank takes part)."""
    final = RunDir(run_dir).final_dir
    staging = run_dir / FINAL_STAGING
    if rank_zero() and staging.exists():
        shutil.rmtree(staging)
    trainer.save_model(str(staging))
    if rank_zero():
        tokenizer.save_pretrained(str(staging))
        mark_complete(staging, trainer.state.global_step, max_steps=trainer.state.max_steps)
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
    from factory_cli.config.errors import UsageError

    try:
        plan, job, manifest = load_run_inputs(Path(arguments[0]))
        return run_worker(plan, job, manifest)
    except UsageError as exc:  # a user's mistake found while training (a failing reward): one message, no traceback
        if rank_zero():
            from factory_cli.ui import print_error

            print_error(exc.message, exc.hint)
        return 2


if __name__ == "__main__":
    sys.exit(main())
