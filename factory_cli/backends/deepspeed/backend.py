"""The deepspeed backend: Transformers + TRL + PEFT, DeepSpeed ZeRO when asked. Engine imports stay in run."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from factory_cli.backends.base import Plan, Progress, RunResult
from factory_cli.backends.deepspeed.checks import check_deepspeed
from factory_cli.config.checks import CheckContext
from factory_cli.config.errors import Issue, UsageError
from factory_cli.config.schema import DeepSpeedJob, JobBase
from factory_cli.devices import DeviceKind

ENGINE_MODULES = ("torch", "transformers", "trl", "peft", "datasets")


class DeepSpeedBackend:
    """Transformers Trainer (pt) and TRL trainers (sft, dpo, grpo), PEFT adapters, DeepSpeed ZeRO."""

    name = "deepspeed"
    stages = frozenset({"pt", "sft", "dpo", "grpo"})
    install_extra = "deepspeed"

    def check(self, job: JobBase, ctx: CheckContext) -> Iterable[Issue]:
        """ZeRO, offload and launcher settings."""
        return check_deepspeed(job, ctx)

    def plan(self, job: JobBase, device: str) -> Plan:
        """TrainingArguments / TRL config, PEFT and DeepSpeed settings, the launch argv."""
        from factory_cli.backends.deepspeed.plan import plan_deepspeed

        assert isinstance(job, DeepSpeedJob)
        kind: DeviceKind = device  # type: ignore[assignment]
        return plan_deepspeed(job, kind)

    def run(self, plan: Plan, ui: Progress) -> RunResult:
        """Prepare model and data here, then train in-process (one plain process) or through the launcher."""
        missing = [m for m in ENGINE_MODULES if importlib.util.find_spec(m) is None]
        if plan.engine_config.get("deepspeed") and importlib.util.find_spec("deepspeed") is None:
            missing.append("deepspeed")
        if missing:
            raise UsageError(
                f"the deepspeed backend needs {', '.join(missing)}", "pip install 'factory-cli[deepspeed]'"
            )
        from factory_cli.backends.deepspeed.prepare import prepare_inputs
        from factory_cli.backends.deepspeed.worker import load_plan_and_job, run_worker
        from factory_cli.launching import run_child
        from factory_cli.runs import RunDir, checkpoint_step, write_json_atomic

        run_dir = Path(plan.run_dir)
        if plan.engine_config.get("deepspeed"):
            write_json_atomic(run_dir / "deepspeed.json", plan.engine_config["deepspeed"])
        plan_file = run_dir / "plan.json"
        _, job = load_plan_and_job(plan_file)
        run = RunDir(run_dir)
        for note in run.trim_metrics(checkpoint_step(run.resume_checkpoint(job.output.resume))):
            ui.info(f"note: {note}")
        manifest = prepare_inputs(job, run_dir, [Path(d) for d in plan.base_dirs])
        train_step = plan.steps[-1]
        if plan.engine_config.get("launcher") == "inprocess":
            with _environment(train_step.env):
                _apply_thread_count(train_step.env)
                code = run_worker(plan.to_dict(), job, manifest)
        else:
            ui.info("launch: " + " ".join(train_step.argv))
            code = run_child(train_step.argv, train_step.env)
        return RunResult(run_dir=run_dir, ok=code == 0, summary={"exit_code": code})


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """The step's environment for an in-process run, restored afterwards."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _apply_thread_count(env: dict[str, str]) -> None:
    threads = env.get("OMP_NUM_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
