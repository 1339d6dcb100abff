"""`factory train`: validate -> resolve for the device -> plan -> run -> summary. Backend-agnostic."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factory_cli.config.errors import UsageError
from factory_cli.config.schema import JobBase

if TYPE_CHECKING:
    from factory_cli.runs import Finished, RunDir


class ConsoleProgress:
    """What a backend reports while it runs, printed to the terminal."""

    def info(self, message: str) -> None:
        from factory_cli.ui import console

        console.print(message, markup=False)

    def warn(self, message: str) -> None:
        from factory_cli.ui import console

        console.print(f"[yellow]warning[/yellow] {message}")


def device_facts(requested: str) -> Any:
    """Device-dependent facts. An explicit cuda/npu/cpu is taken as given (plans for other machines work anywhere);
    `auto` looks at this machine."""
    from factory_cli.config.defaults import DeviceFacts
    from factory_cli.devices import cpu_has_bf16_matmul, cuda_only_features_available, detect_device

    features = cuda_only_features_available()
    if requested == "auto":
        try:
            info = detect_device("auto")
        except RuntimeError as exc:
            raise UsageError(str(exc), "set device: cpu, or run on a machine with the device") from None
        bf16_matmul = info.kind == "cpu" and cpu_has_bf16_matmul()
        return DeviceFacts(info.kind, info.bf16, features["flash_attn"], features["liger_kernel"], bf16_matmul)
    bf16 = requested in ("cuda", "npu")
    flash = features["flash_attn"] and requested == "cuda"
    return DeviceFacts(requested, bf16, flash, features["liger_kernel"], requested == "cpu" and cpu_has_bf16_matmul())


def resolved_plan(job: JobBase, base_dir: Path) -> tuple[JobBase, Any]:
    """The job with device defaults filled, and its backend's plan."""
    from factory_cli.backends import get_backend
    from factory_cli.config.defaults import resolve_device_defaults

    detected = job.device == "auto"
    job = resolve_device_defaults(job, device_facts(job.device))
    if detected:
        # what `factory check` could not know before the device was found: bf16 base layers are a CPU speed-up
        from factory_cli.config.checks import CheckContext, check_lora_base_precision
        from factory_cli.config.errors import raise_if_errors

        raise_if_errors(list(check_lora_base_precision(job, CheckContext())))
    plan = get_backend(job.backend).plan(job, job.device)
    plan.base_dirs = [str(base_dir)]
    return job, plan


def train_job(job_file: Path, overrides: Sequence[str], dry_run: bool = False) -> int:
    """Validate the job, then print the plan (dry run) or run it. Returns the exit code."""
    from factory_cli.config.validate import load_and_validate
    from factory_cli.runs import RunDir, is_disk_full
    from factory_cli.ui import print_error, print_issues

    validated = load_and_validate(job_file, overrides)
    if validated.warnings:
        print_issues(validated.warnings)
    job, plan = resolved_plan(validated.job, validated.base_dir)
    if dry_run:
        print_plan(job, plan)
        return 0
    run = RunDir(Path(plan.run_dir))
    try:
        with run.lock() as notes:  # only this process: workers a launcher starts never take it
            return _run_locked(job, plan, run, notes)
    except Exception as exc:  # a full disk is no bug of ours: one message, no traceback
        if not is_disk_full(exc, run.path):
            raise
        print_error(*run.disk_full_message(exc))
        return 1


def _run_locked(job: JobBase, plan: Any, run: RunDir, notes: list[str]) -> int:
    """The run, once this process owns its directory: clean what a stopped run left, stop at a finished run, else
    prepare the directory and let the backend train."""
    from factory_cli.backends import get_backend
    from factory_cli.cache import cache_root
    from factory_cli.config.dump import job_to_yaml
    from factory_cli.data.cache import remove_abandoned
    from factory_cli.environment import environment_report
    from factory_cli.runs import plot_metrics, write_json_atomic
    from factory_cli.ui import console

    removed = [*run.clean_leftovers(), *remove_abandoned(cache_root(job.data.cache_dir))]
    notes += [f"removed {path}, left by a run that was stopped mid-write" for path in removed]
    for note in notes:
        console.print(f"note: {note}", markup=False)
    job_yaml = job_to_yaml(job)
    if job.output.resume == "auto":
        done = run.finished(job.train.max_steps, job.train.epochs)
        if done is not None:
            print_finished(job, done, job_yaml)
            return 0
    if job.output.resume == "never":
        moved = run.set_aside_previous_run()
        if moved:
            console.print(f"note: {moved}", markup=False)
    for note in run.prepare(job_yaml):
        console.print(f"note: {note}")
    write_json_atomic(run.plan_file, plan.to_dict())
    write_json_atomic(run.path / "env.json", environment_report(job.device))
    console.print(f"run directory: {run.path}")
    started = time.time()
    result = get_backend(job.backend).run(plan, ConsoleProgress())
    try:
        plot_metrics(run.path)
    except OSError as exc:  # curves are a convenience: a full disk must not hide how the run ended
        console.print(f"note: plots/ not written ({exc.strerror or exc})", markup=False)
    print_summary(job, run.path, time.time() - started, result.ok)
    return 0 if result.ok else 1


def print_finished(job: JobBase, done: Finished, job_yaml: str) -> None:
    """A run that already reached its end is not trained again: say so (finishing final/ or summary.json when a stop
    came between them), where the model is, and how to start anew."""
    from factory_cli.runs import RESUME_HINT
    from factory_cli.ui import console

    def say(text: str) -> None:  # paths whole, never folded
        console.print(text, markup=False, soft_wrap=True)

    run = done.run
    if done.from_checkpoint is not None:
        run.finish_from_checkpoint(done.from_checkpoint)
        say(f"note: the run stopped after its last checkpoint; final/ written from {done.from_checkpoint}")
    if not run.summary_file.is_file():
        run.recover_summary(done.step)
        say("note: summary.json rebuilt from final/ and metrics.jsonl (the run stopped before writing it)")
    target = f"train.max_steps {job.train.max_steps}" if job.train.max_steps else f"train.epochs {job.train.epochs}"
    say(f"already finished: {run.path} was trained to step {done.step} ({target}); not training")
    if run.job_file.is_file() and run.job_file.read_text(encoding="utf-8") != job_yaml:
        say("note: this job differs from the job.yaml of the finished run; nothing of it was applied")
    say(f"final model: {run.final_dir}")
    say(f"{RESUME_HINT}, e.g. `factory train <job.yaml> output.resume=never`")
    print_next(run.path)


def print_plan(job: JobBase, plan: Any) -> None:
    """The resolved job and the engine-level plan, as --dry-run shows them."""
    from factory_cli.config.dump import job_to_yaml
    from factory_cli.ui import console

    console.rule("resolved job")
    console.print(job_to_yaml(job), markup=False)
    console.rule("plan")
    console.print(json.dumps(plan.to_dict(), indent=2, default=str), markup=False)
    console.rule("launch")
    for step in plan.steps:
        console.print(f"{step.name}: {json.dumps(step.argv)}", markup=False)
        if step.env:
            console.print("  env: " + " ".join(f"{k}={v}" for k, v in sorted(step.env.items())), markup=False)
    for note in plan.notes:
        console.print(f"note: {note}", markup=False)


def print_summary(job: JobBase, run_dir: Path, wall: float, ok: bool) -> None:
    """Wall time, throughput, first/final loss (or reward), where final/ is, and the next commands."""
    from factory_cli.runs import RunDir, first_last
    from factory_cli.ui import console, print_table

    run = RunDir(run_dir)
    summary = run.summary() if ok and run.summary_file.is_file() else {}
    notes: list[str] = []
    records = run.metrics(notes)
    for note in notes:
        console.print(f"note: {note}", markup=False)
    rows: list[tuple[str, str]] = [("wall time", f"{wall:.1f} s")]
    if summary.get("tokens_per_second"):
        rows.append(("tokens/s", f"{summary['tokens_per_second']:,.0f}"))
    key = "reward" if job.stage == "grpo" else "loss"
    first, last = first_last(records, key)
    if first is not None and last is not None:
        rows.append((f"{key} first -> final", f"{first:.4f} -> {last:.4f}"))
    if job.stage == "dpo":
        margin = first_last(records, "rewards/margins")
        if margin[0] is not None and margin[1] is not None:
            rows.append(("reward margin", f"{margin[0]:.4f} -> {margin[1]:.4f}"))
    if summary.get("trainable"):
        rows.append(("trained", summary["trainable"]))
    if ok:
        rows.append(("final model", str(run.final_dir)))
    print_table("run " + ("finished" if ok else "stopped"), ["", ""], rows)
    sample = summary.get("sample") or {}
    if sample.get("answer"):
        console.print(f"[bold]sample[/bold] Q: {sample['prompt']}", markup=True, highlight=False)
        console.print(f"           A: {sample['answer']}", markup=False)
    if ok:
        print_next(run_dir)


def print_next(run_dir: Path) -> None:
    """The commands that use a trained model."""
    from factory_cli.runs import RunDir
    from factory_cli.ui import console

    final = RunDir(run_dir).final_dir
    console.print("next:")
    console.print(f"  factory eval --model {final} --tasks ppl", markup=False)
    console.print(f"  factory export --model {final} -o {run_dir / 'merged'}", markup=False)
    console.print(f"  factory chat --model {final}", markup=False)
