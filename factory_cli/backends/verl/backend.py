"""The verl backend: hydra overrides for verl's trainers, parquet data, our rewards through verl's hook."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from factory_cli.backends.base import Plan, Progress, RunResult
from factory_cli.backends.verl.checks import check_verl
from factory_cli.config.checks import CheckContext
from factory_cli.config.errors import Issue, UsageError
from factory_cli.config.schema import JobBase, VerlJob
from factory_cli.devices import DeviceKind
from factory_cli.runs import RunDir

ENGINE_MODULES = ("verl", "ray", "pyarrow")
ROLLOUT_MODULES = {"vllm": "vllm", "sglang": "sglang"}
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

    def plan(self, job: JobBase, device: str) -> Plan:
        """main_ppo / sft_trainer argv with hydra overrides, and the generated reward module."""
        from factory_cli.backends.verl.plan import plan_verl

        assert isinstance(job, VerlJob)
        kind: DeviceKind = device  # type: ignore[assignment]
        return plan_verl(job, kind, model_source(job))

    def run(self, plan: Plan, ui: Progress) -> RunResult:
        """Write parquet data and the reward module, then launch verl with run_child; metrics -> metrics.jsonl.

        Honest status: this needs verl (+ Ray and vLLM / SGLang) on GPUs or NPUs, which the test environment
        does not have; only the refusal when verl is missing and the data / metrics conversions are tested.
        """
        from factory_cli.backends.common.run import child_env, materialize_model, missing_modules
        from factory_cli.backends.verl.plan import plan_verl
        from factory_cli.launching import run_child

        modules = list(ENGINE_MODULES)
        if plan.stage == "grpo":
            modules.append(ROLLOUT_MODULES.get(_rollout_name(plan), "vllm"))
        missing = missing_modules(modules)
        if missing:
            raise UsageError(
                f"the verl backend needs verl ({', '.join(missing)} not importable)", "pip install 'factory-cli[verl]'"
            )
        run = RunDir(Path(plan.run_dir))
        job = run.job(VerlJob)
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
        step = plan.steps[0]
        ui.info(f"launch: {json.dumps(step.argv)}")
        code = run_child(step.argv, child_env(step.env, step.files), cwd=step.cwd)
        write_metrics(Path(plan.engine_config["metrics_file"]), run)
        return RunResult(run_dir=run.path, ok=code == 0, summary={"exit_code": code})


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
    """Rows as one parquet file (pyarrow infers the nested message / extra_info types)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
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


def write_metrics(verl_file: Path, run: RunDir) -> None:
    """Append verl's logged steps to the run's metrics.jsonl (nothing when verl logged none)."""
    if not verl_file.is_file():
        return
    writer = run.metrics_writer()
    with open(verl_file, encoding="utf-8") as handle:
        for record in metrics_records(handle):
            writer.write(record)
