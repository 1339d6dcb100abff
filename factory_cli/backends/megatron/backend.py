"""The megatron backend: Megatron-LM / MindSpeed-LLM launched with argv built from the HF config.

`plan` looks the model up (registry or local config.json) and calls the pure planner; `run` writes the
engine's inputs (HF checkpoint link, sft / dpo jsonl rows; helpers shared with verl in backends/common/run.py) and
runs the planned steps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from factory_cli.backends.base import Plan, Progress, RunResult
from factory_cli.backends.megatron.checks import check_megatron
from factory_cli.backends.megatron.stack import StackProblem, stack_problems
from factory_cli.config.checks import CheckContext
from factory_cli.config.errors import Issue, UsageError
from factory_cli.config.schema import JobBase, MegatronJob
from factory_cli.devices import DeviceKind

LLAMA32_ROPE_FACTOR = 32.0


class MegatronBackend:
    """Megatron-LM on CUDA, MindSpeed-LLM on Ascend NPU: 3D parallel pt / sft / dpo."""

    name = "megatron"
    stages = frozenset({"pt", "sft", "dpo"})
    install_extra = "megatron"

    def check(self, job: JobBase, ctx: CheckContext) -> Iterable[Issue]:
        """TP / PP / CP / EP against the world size and the model."""
        return check_megatron(job, ctx)

    def plan(self, job: JobBase, device: str) -> Plan:
        """Convert / preprocess / train / export steps; the architecture comes from the registry or config.json."""
        from factory_cli.backends.megatron.plan import plan_megatron

        assert isinstance(job, MegatronJob)
        kind: DeviceKind = device  # type: ignore[assignment]
        return plan_megatron(job, kind, model_facts(job))

    def run(self, plan: Plan, ui: Progress) -> RunResult:
        """Write the engine's inputs, then run the steps in order with run_child; stop at the first failure.

        Before the steps: the HF model link, the jsonl rows (sft / dpo; pt data is prepared by the preprocess step,
        indexed.py), `data/megatron/` (the preprocess output folder) and, for Megatron-LM SFT, the tokenizer copy
        whose pad is not its EOS (tokenizer_copy.py). pt and MindSpeed-LLM packed SFT are planned again after
        preprocess with the samples it wrote (GPTDataset's seq_length samples; the packed sequences), so
        --train-iters covers the job's epochs of the data the engine really reads.

        Honest status: the engine steps need Megatron-LM + Megatron Bridge (CUDA) or MindSpeed-LLM (Ascend) and
        their checkouts. Tested here: the refusals, the inputs, the pt preprocess (factory's pipeline and
        megatron-core on CPU) and the step loop with the engine faked.
        """
        from factory_cli.backends.common.run import child_env, materialize_model, write_jsonl
        from factory_cli.backends.megatron.plan import (
            BRIDGE_HOME_VAR,
            ENGINE_LABELS,
            MEGATRON_LM,
            megatron_input_row,
            plan_megatron,
        )
        from factory_cli.data.pipeline import read_canonical_rows
        from factory_cli.launching import run_child
        from factory_cli.runs import RunDir

        engine = plan.engine_config["engine"]
        home_vars = [plan.engine_config["engine_home_var"]]
        bridge = engine == MEGATRON_LM and any(s.name in ("convert", "export") for s in plan.steps)
        if bridge:
            home_vars.append(BRIDGE_HOME_VAR)
        args = plan.engine_config["train_args"]
        local = "--transformer-impl" in args and args[args.index("--transformer-impl") + 1] == "local"
        problems = stack_problems(engine, os.environ, sft=plan.stage == "sft", bridge=bridge, local_impl=local)
        if problems:
            raise UsageError(stack_message(ENGINE_LABELS[engine], problems), stack_hint(problems))
        homes = engine_homes(home_vars)
        run = RunDir(Path(plan.run_dir))
        job = run.job(MegatronJob)
        base_dirs = [Path(d) for d in plan.base_dirs]
        materialize_model(job, Path(plan.engine_config["hf_model"]), base_dirs, ui)
        rows: int | None = None
        train_file = plan.engine_config["train_file"]
        if train_file is not None:  # pt: the preprocess step prepares the data itself (indexed.py)
            canonical = read_canonical_rows(job, job.data.train, base_dirs)
            write_jsonl(Path(train_file), (megatron_input_row(job.stage, r, engine) for r in canonical))
            rows = len(canonical)
            ui.info(f"data: {rows} training rows written to {train_file}")
            del canonical
        Path(plan.engine_config["data_dir"]).mkdir(parents=True, exist_ok=True)
        device: DeviceKind = plan.device  # type: ignore[assignment]

        def replan(samples: int | None) -> Plan:
            base = plan.base_dirs
            fresh = plan_megatron(job, device, model_facts(job), samples, [Path(d) for d in base])
            fresh.base_dirs = base
            run.write_plan(fresh.to_dict())
            if fresh.engine_config["train_iters"] is not None:
                ui.info(f"train iterations: {fresh.engine_config['train_iters']}")
            return fresh

        # The samples are counted in what preprocess writes: packed SFT sequences, or pt's indexed corpus.
        packed = plan.engine_config.get("packed_index")
        documents = plan.engine_config.get("document_index")
        counted = (packed or documents) if job.train.max_steps is None else None
        # A relative model.tokenizer is found in the job file's folder, which the plan knows once run has it.
        if (plan.engine_config["train_iters"] is None and not counted) or job.model.tokenizer:
            plan = replan(None if counted else rows)
        if plan.engine_config.get("engine_tokenizer"):
            from factory_cli.backends.megatron.tokenizer_copy import write_engine_tokenizer

            source = plan.engine_config["tokenizer"]
            pad = write_engine_tokenizer(Path(source), Path(plan.engine_config["engine_tokenizer"]))
            if pad is not None:
                ui.info(f"tokenizer: its pad is its EOS; Megatron-LM pads with {pad} so EOS stays a target")
        done: set[str] = set()
        while True:
            step = next((s for s in plan.steps if s.name not in done), None)
            if step is None:
                break
            done.add(step.name)
            if step.name == "convert" and has_checkpoint(Path(plan.engine_config["megatron_checkpoint"])):
                ui.info(f"convert: {plan.engine_config['megatron_checkpoint']} is already converted")
                continue
            marker = plan.engine_config.get("roundtrip_marker")
            if step.name in ("roundtrip", "verify") and marker and Path(marker).is_file():
                ui.info(f"{step.name}: the conversion was checked already ({marker})")
                continue
            argv = resolve_argv(step.argv, homes)
            ui.info(f"{step.name}: {json.dumps(argv)}")
            code = run_child(argv, child_env(step.env, step.files), cwd=step.cwd)
            if code != 0:
                ui.warn(f"step {step.name} failed with exit code {code}")
                return RunResult(run_dir=run.path, ok=False, summary={"exit_code": code, "failed_step": step.name})
            if step.name == "preprocess" and counted:
                index = Path(counted)
                plan = replan(packed_samples(index) if packed else pretraining_samples(index, job.data.max_length))
        return RunResult(run_dir=run.path, ok=True, summary={"exit_code": 0})


# ------------------------------------------------------------------------------------------ lookups (impure)


def model_facts(job: JobBase) -> Any:
    """The planner's view of the model: architecture, HF source, registry template, Llama-3 rope factor."""
    from factory_cli.backends.megatron.plan import ModelFacts
    from factory_cli.registry.models import architecture_of, find_model

    name = job.model.name_or_path
    spec = find_model(name)
    factor: float | None = None
    if spec is not None and spec.family == "llama3.2":
        factor = LLAMA32_ROPE_FACTOR
    config = Path(name).expanduser() / "config.json"
    if spec is None and config.is_file():
        try:
            scaling = json.loads(config.read_text(encoding="utf-8")).get("rope_scaling") or {}
            factor = float(scaling["factor"]) if "factor" in scaling else None
        except (OSError, ValueError, AttributeError):
            factor = None
    return ModelFacts(
        architecture=architecture_of(name),
        source=spec.hf_id if spec is not None and spec.gguf is None else name,
        template=spec.template if spec is not None else None,
        rope_scaling_factor=factor,
    )


def packed_samples(index: Path) -> int:
    """The packed sequences MindSpeed-LLM's preprocess wrote; a UsageError when the file is not there."""
    from factory_cli.backends.megatron.indexed import sequence_count

    if not index.is_file():
        raise UsageError(
            f"preprocess wrote no {index.name} in {index.parent}",
            "check the preprocess output above; MindSpeed-LLM names packed SFT data <prefix>_packed_input_ids_document",
        )
    try:
        return sequence_count(index)
    except ValueError as exc:
        raise UsageError(str(exc), "run again: preprocess rewrites it") from None


def pretraining_samples(index: Path, seq_length: int) -> int:
    """The seq_length samples megatron-core's GPTDataset cuts from one epoch of an indexed corpus (it reads one token
    past each sample: (tokens - 1) // seq_length); a UsageError when preprocess wrote no index."""
    from factory_cli.backends.megatron.indexed import token_count

    if not index.is_file():
        raise UsageError(f"preprocess wrote no {index.name} in {index.parent}", "check the preprocess output above")
    try:
        tokens = token_count(index)
    except ValueError as exc:
        raise UsageError(str(exc), "run again: preprocess rewrites it") from None
    if tokens <= seq_length:
        raise UsageError(
            f"the pt corpus holds {tokens} tokens, not one sample of data.max_length {seq_length} + 1",
            "add data or lower data.max_length",
        )
    return (tokens - 1) // seq_length


def stack_message(label: str, problems: Sequence[StackProblem]) -> str:
    """One message for everything the engine stack lacks."""
    lines = "".join(f"\n  - {p.what}" for p in problems)
    return f"the megatron backend cannot start {label} on this machine:{lines}"


def stack_hint(problems: Sequence[StackProblem]) -> str:
    """The install steps, in the order of the problems, each once."""
    return "; ".join(dict.fromkeys(p.fix for p in problems))


def engine_homes(home_vars: Sequence[str]) -> dict[str, str]:
    """The engine checkouts named by the environment; a UsageError names the variable that is missing."""
    homes: dict[str, str] = {}
    for var in home_vars:
        value = os.environ.get(var)
        if not value or not Path(value).is_dir():
            raise UsageError(
                f"${var} must name the engine's source checkout (its scripts are not pip-installed)",
                f"git clone the engine and export {var}=/path/to/it",
            )
        homes[var] = str(Path(value).resolve())
    return homes


def resolve_argv(argv: Sequence[str], homes: Mapping[str, str]) -> list[str]:
    """argv with every `$VAR` of an engine checkout replaced by its path."""
    out = []
    for arg in argv:
        for var, path in homes.items():
            arg = arg.replace(f"${var}", path)
        out.append(arg)
    return out


def has_checkpoint(directory: Path) -> bool:
    """A Megatron checkpoint folder: the tracker file or an iter_* folder."""
    if (directory / "latest_checkpointed_iteration.txt").is_file():
        return True
    return directory.is_dir() and any(p.name.startswith("iter_") for p in directory.iterdir())
