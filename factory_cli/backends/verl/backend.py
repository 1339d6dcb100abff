"""The verl backend: hydra overrides for verl's trainers, parquet data, our rewards through verl's hook."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from factory_cli.backends.base import Plan, Progress, RunResult
from factory_cli.backends.common.engine_env import EngineProbe, EnginePython
from factory_cli.backends.verl.checks import check_verl
from factory_cli.backends.verl.plan import VERL_VERSION
from factory_cli.config.checks import CheckContext
from factory_cli.config.errors import Issue, UsageError
from factory_cli.config.schema import JobBase, VerlJob
from factory_cli.devices import DeviceKind
from factory_cli.runs import RunDir

# (module, distribution) verl needs in its interpreter: always, for SFT (its trainer imports the rollout server's
# web stack), for GRPO (main_ppo's V1 trainer), and the rollout engine.
ENGINE_PACKAGES = (("verl", "verl"), ("ray", "ray"), ("pyarrow", "pyarrow"), ("hydra", "hydra-core"))
SFT_PACKAGES = (("fastapi", "fastapi"), ("uvicorn", "uvicorn"))
GRPO_PACKAGES = (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("transfer_queue", "TransferQueue"))
ROLLOUT_PACKAGES = {"vllm": ("vllm", "vllm"), "sglang": ("sglang", "sglang")}
# What `factory env` lists for verl's interpreter: everything any stage may need there.
VERL_PROBE_PACKAGES = (
    *ENGINE_PACKAGES,
    ("factory_cli", "factory-cli"),
    *GRPO_PACKAGES,
    *ROLLOUT_PACKAGES.values(),
    ("flash_attn", "flash-attn"),
    ("torch", "torch"),
    ("transformers", "transformers"),
)
VERL_TRACKER = "latest_checkpointed_iteration.txt"
EPOCH_END_SUFFIX = ".epoch-end"
LORA_ADAPTER_DIR = "lora_adapter"  # where verl's model merger puts a LoRA run's adapter
# verl metric names -> the names factory's run summary and plots read.
METRIC_ALIASES = {
    "reward": ("critic/score/mean",),
    "loss": ("actor/pg_loss", "train/loss"),
    "learning_rate": ("actor/lr", "train/lr"),
    "grad_norm": ("actor/grad_norm", "train/grad_norm"),
    "kl": ("actor/kl_loss",),
    "entropy": ("actor/entropy",),
    "response_length": ("response_length/mean",),
}


class VerlBackend:
    """verl (+ Ray): large-scale GRPO / DAPO / GSPO and FSDP SFT."""

    name = "verl"
    stages = frozenset({"sft", "grpo"})
    install_extra = "verl"

    def check(self, job: JobBase, ctx: CheckContext) -> Iterable[Issue]:
        """Rollout TP and batch arithmetic."""
        return check_verl(job, ctx)

    def probe(self, job: JobBase) -> tuple[list[str], list[Issue]]:
        """`factory check`: (notes, warnings) on verl's interpreter here. What it lacks for this job is a warning (a
        job checked on a login node may train elsewhere); `factory train` refuses with the same message before
        anything launches."""
        from factory_cli.config.checks import warning

        assert isinstance(job, VerlJob)
        try:
            python = require_engine(job, job.stage, job.rollout.engine)
        except UsageError as exc:
            return [], [warning("engine.python", f"this machine cannot run it: {exc.message}", exc.hint)]
        return [f"engine: verl from {python.describe()}"], []

    def plan(self, job: JobBase, device: str) -> Plan:
        """main_ppo / sft_trainer argv with hydra overrides, and the generated reward module."""
        from factory_cli.backends.verl.plan import plan_verl

        assert isinstance(job, VerlJob)
        kind: DeviceKind = device  # type: ignore[assignment]
        return plan_verl(job, kind, model_source(job))

    def run(self, plan: Plan, ui: Progress) -> RunResult:
        """Probe verl's interpreter, write parquet data and the reward module, launch verl with run_child (metrics ->
        metrics.jsonl), then merge the last checkpoint into final/ with verl's model merger.

        On the CPU this runs verl's SFT trainer for real (backends/verl/cpu_platform.py; tests/integration/
        test_verl_train.py); GRPO needs vLLM or SGLang on GPUs or NPUs.
        """
        from factory_cli.backends.common.run import child_env, materialize_model, with_python
        from factory_cli.backends.verl.plan import plan_verl
        from factory_cli.launching import run_child

        run = RunDir(Path(plan.run_dir))
        job = run.job(VerlJob)
        python = require_engine(job, plan.stage, _rollout_name(plan))
        ui.info(f"engine: verl from {python.describe()}")
        base_dirs = [Path(d) for d in plan.base_dirs]
        materialize_model(job, Path(plan.engine_config["hf_model"]), base_dirs, ui)
        train_rows, val_rows = write_verl_data(job, plan, base_dirs)
        ui.info(f"data: {train_rows} training rows, {val_rows} validation rows written as parquet")
        device: DeviceKind = plan.device  # type: ignore[assignment]
        base = list(plan.base_dirs)
        plan = plan_verl(job, device, model_source(job), dataset_sizes=[train_rows], base_dirs=base)
        plan.base_dirs = base
        run.write_plan(plan.to_dict())
        for note in plan.notes:
            if note.startswith("schedule:"):
                ui.info(note)
        checkpoints = Path(run.checkpoints_dir)
        resumed = last_verl_step(checkpoints) if job.output.resume != "never" else 0
        for note in run.trim_metrics(resumed):
            ui.info(note)
        if resumed:
            ui.info(f"resume: verl continues from {checkpoints / f'global_step_{resumed}'}")
            if plan.stage == "sft":
                for note in set_aside_epoch_end_dataloader(
                    checkpoints / f"global_step_{resumed}", resumed, job, train_rows
                ):
                    ui.info(note)
        metrics_file = Path(plan.engine_config["metrics_file"])
        metrics_file.unlink(missing_ok=True)
        step = plan.steps[0]
        ui.info(f"launch: {json.dumps(step.argv)}")
        argv = with_python(step.argv, python.path)
        code = run_child(argv, child_env(step.env, step.files, python=python.path), cwd=step.cwd)
        logged = write_metrics(metrics_file, run, after_step=resumed)
        if code != 0:
            return RunResult(run_dir=run.path, ok=False, summary={"exit_code": code})
        last = last_verl_step(checkpoints)
        if not last:
            raise UsageError(f"verl exited without a checkpoint in {checkpoints}", "see verl's output above")
        planned = plan.engine_config.get("total_training_steps")
        if isinstance(planned, int) and last < planned:
            ui.warn(f"verl stopped at step {last} of {planned} without an error; final/ is not written")
            return RunResult(run_dir=run.path, ok=False, summary={"exit_code": 0, "stopped_at": last})
        ui.info(f"final: merging {checkpoints / f'global_step_{last}'} with verl's model merger")
        code = write_final(run, plan, python.path, last, job)
        summary = write_summary(run, last, logged)
        return RunResult(run_dir=run.path, ok=code == 0, summary={"exit_code": code, **summary})


def require_engine(job: VerlJob, stage: str, rollout: str) -> EnginePython:
    """verl's interpreter, probed: every module the stage needs is there, else one UsageError naming them."""
    from factory_cli.backends.common.engine_env import engine_python, probe_engine

    python = engine_python("verl", job.engine.python)
    needed = engine_modules(stage, rollout, job.model.attn_implementation, job.device)
    probe = probe_engine(python, needed)
    missing = probe.missing([module for module, _ in needed])
    if missing:
        raise UsageError(*missing_engine_message(python, probe, missing, stage, rollout))
    return python


def engine_modules(stage: str, rollout: str, attn: str, device: str) -> list[tuple[str, str]]:
    """(module, distribution) pairs verl needs in its interpreter for this stage on this device."""
    needed = [*ENGINE_PACKAGES, ("factory_cli", "factory-cli")]
    needed += SFT_PACKAGES if stage == "sft" else GRPO_PACKAGES
    if stage == "grpo":
        needed.append(ROLLOUT_PACKAGES.get(rollout, ("vllm", "vllm")))
    if attn.startswith("flash_attention") and device == "cuda":
        needed.append(("flash_attn", "flash-attn"))
    return needed


def missing_engine_message(
    python: EnginePython, probe: EngineProbe, missing: list[str], stage: str, rollout: str
) -> tuple[str, str]:
    """(message, fix) for an engine interpreter that lacks modules."""
    from factory_cli.backends.common.engine_env import setup_hint

    version = probe.packages.get("verl")
    have = f"verl {version}" if version else "no verl"
    message = f"verl's interpreter {python.describe()} has {have} and lacks: {', '.join(missing)}"
    if "verl" in missing or "factory_cli" in missing:
        return message, setup_hint("verl")
    if stage == "grpo":
        return (
            message,
            f"install verl's GPU stack there: pip install 'verl[{rollout}]=={VERL_VERSION}' (with TransferQueue)",
        )
    return message, f"pip install {' '.join(m.replace('_', '-') for m in missing)} into that environment"


def set_aside_epoch_end_dataloader(step_dir: Path, step: int, job: VerlJob, train_rows: int) -> list[str]:
    """Resuming SFT from a checkpoint saved at the end of an epoch: verl 0.9's SFT trainer restores the dataloader
    state of the finished epoch into the next one, which then yields no batch, and exits 0 without training (the
    resume test in tests/integration/test_verl_train.py). At an epoch's end that state says nothing more than "start
    the next epoch", which verl does without it: the files are renamed, never deleted."""
    assert job.train.global_batch_size is not None, "resolve_defaults fills it"
    per_epoch = train_rows // job.train.global_batch_size
    if not per_epoch or step % per_epoch:
        return []
    moved = []
    for state in sorted(step_dir.glob("data_*.pt")):
        state.replace(state.with_name(state.name + EPOCH_END_SUFFIX))
        moved.append(state.name)
    if not moved:
        return []
    return [
        f"resume: step {step} ends epoch {step // per_epoch}; {', '.join(moved)} set aside ({EPOCH_END_SUFFIX}) "
        "so verl starts the next epoch"
    ]


def last_verl_step(checkpoints: Path) -> int:
    """The step of verl's last saved checkpoint (its latest_checkpointed_iteration.txt), 0 when there is none."""
    tracker = checkpoints / VERL_TRACKER
    try:
        return int(tracker.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return 0


def write_final(run: RunDir, plan: Plan, python: Path, step: int, job: VerlJob) -> int:
    """final/ from verl's checkpoint at `step` by verl's model merger (the full model, LoRA merged in), with the
    tokenizer and chat template; written beside and renamed into place, then sealed."""
    import shutil

    from factory_cli.backends.common.run import child_env, with_python
    from factory_cli.backends.verl.plan import merge_argv, merge_lora_argv
    from factory_cli.launching import run_child
    from factory_cli.runs import FINAL_STAGING, mark_complete

    staging = run.path / FINAL_STAGING
    shutil.rmtree(staging, ignore_errors=True)
    step_dir = Path(run.checkpoints_dir) / f"global_step_{step}"
    env = child_env(plan.steps[0].env, python=python)
    code = run_child(with_python(merge_argv(plan.stage, step_dir, staging, job.model.trust_remote_code), python), env)
    if code == 0 and (staging / LORA_ADAPTER_DIR).is_dir():
        code = run_child(with_python(merge_lora_argv(staging), python), env)
    if code != 0:
        return code
    mark_complete(staging, step, max_steps=job.train.max_steps)
    if run.final_dir.exists():
        shutil.rmtree(run.final_dir)
    staging.replace(run.final_dir)
    return 0


def write_summary(run: RunDir, step: int, logged: int) -> dict[str, Any]:
    """summary.json from metrics.jsonl: the step reached, first and final loss, final/."""
    from factory_cli.runs import first_last, write_json_atomic

    first, last = first_last(run.metrics(), "loss")
    summary = {
        "global_step": step,
        "first_loss": first,
        "final_loss": last,
        "final_dir": str(run.final_dir),
        "engine": "verl",
        "logged_steps": logged,
    }
    write_json_atomic(run.summary_file, summary)
    return summary


def _rollout_name(plan: Plan) -> str:
    for override in plan.engine_config.get("overrides", []):
        if override.startswith("actor_rollout_ref.rollout.name="):
            return str(override.split("=", 1)[1])
    return "vllm"


def model_source(job: JobBase) -> str:
    """The HF checkpoint the run links at <run_dir>/hf_model: a registry entry's Hub id, else the job's path."""
    from factory_cli.registry.models import find_model

    spec = find_model(job.model.name_or_path)
    return spec.hf_id if spec is not None and spec.gguf is None else job.model.name_or_path


def verl_rows(job: VerlJob, rows: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """Canonical rows as verl parquet rows for the job's stage."""
    from factory_cli.backends.verl.data import verl_rl_row, verl_sft_row

    if job.stage == "grpo":
        return [verl_rl_row(row, index, split) for index, row in enumerate(rows)]
    return [verl_sft_row(row) for row in rows]


def split_rows(job: VerlJob, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held out) by data.eval_ratio and data.seed, the rows the deepspeed backend holds out too
    (pipeline.held_out_rows); grpo without eval data validates on a few prompts."""
    from factory_cli.backends.verl.plan import VAL_ROWS_WITHOUT_EVAL
    from factory_cli.data.pipeline import held_out_rows

    if job.data.eval_ratio > 0:
        held = set(held_out_rows(len(rows), job.data.eval_ratio, job.data.seed))
        return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]
    # verl's RL trainer always builds a validation set; with test_freq -1 it is never scored.
    return rows, rows[:VAL_ROWS_WITHOUT_EVAL] if job.stage == "grpo" else []


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as one parquet file, with the variable-schema parts as JSON values (data.verl_table): each row keeps
    exactly its own fields."""
    import pyarrow.parquet as pq

    from factory_cli.backends.verl.data import verl_table

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(verl_table(rows), tmp)
    tmp.replace(path)


def write_verl_data(job: VerlJob, plan: Plan, base_dirs: list[Path]) -> tuple[int, int]:
    """Write train.parquet and val.parquet; return their row counts."""
    from factory_cli.data.pipeline import read_canonical_rows

    rows = read_canonical_rows(job, job.data.train, base_dirs)
    if job.data.eval:  # as prepare_data: eval datasets replace the held-out split
        train, held = rows, read_canonical_rows(job, job.data.eval, base_dirs, role="eval")
    else:
        train, held = split_rows(job, rows)
    if not train:
        raise UsageError("no training rows left for verl", "check data.train and data.eval_ratio")
    write_parquet(Path(plan.engine_config["train_file"]), verl_rows(job, train, "train"))
    if held:
        write_parquet(Path(plan.engine_config["val_file"]), verl_rows(job, held, "test"))
    return len(train), len(held)


def metrics_records(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """verl's file-logger lines ({"step", "data": {...}}) as factory metrics records with the usual aliases."""
    for line in lines:
        if not line.strip():
            continue
        entry = json.loads(line)
        data = entry.get("data") or {}
        record: dict[str, Any] = {"step": entry.get("step"), **data}
        for name, sources in METRIC_ALIASES.items():
            found = next((data[s] for s in sources if s in data), None)
            if found is not None and name not in record:
                record[name] = found
        yield record


def write_metrics(verl_file: Path, run: RunDir, after_step: int = 0) -> int:
    """Append verl's logged steps after `after_step` (where a resumed run continued) to the run's metrics.jsonl;
    returns how many (0 when verl logged none)."""
    if not verl_file.is_file():
        return 0
    writer = run.metrics_writer()
    count = 0
    with open(verl_file, encoding="utf-8") as handle:
        for record in metrics_records(handle):
            if isinstance(record.get("step"), int) and record["step"] <= after_step:
                continue
            writer.write(record)
            count += 1
    return count
