"""The megatron backend: Megatron-LM / MindSpeed-LLM launched with argv built from the HF config.

`plan` looks the model up (registry or local config.json) and calls the pure planner; `run` writes the
engine's inputs (HF checkpoint link, jsonl rows) and runs the planned steps. The run-time helpers here
(`materialize_model`, `read_canonical_rows`, `resolve_argv`, `child_env`) are shared with the verl backend.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from factory_cli.backends.base import Plan, Progress, RunResult
from factory_cli.backends.megatron.checks import check_megatron
from factory_cli.config.checks import CheckContext
from factory_cli.config.errors import Issue, UsageError
from factory_cli.config.schema import DatasetSpec, JobBase, MegatronJob
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

        Honest status: this path needs Megatron-LM + Megatron Bridge (CUDA) or MindSpeed-LLM (Ascend) and
        their checkouts, none of which the test environment has, so only its refusal (engine missing) and
        the input writing are tested; the steps themselves are the planned argv, run as they are.
        """
        from factory_cli.backends.megatron.plan import (
            BRIDGE_HOME_VAR,
            ENGINE_LABELS,
            ENGINE_MODULES,
            MEGATRON_LM,
            megatron_input_row,
            plan_megatron,
        )
        from factory_cli.launching import run_child
        from factory_cli.runs import write_json_atomic

        engine = plan.engine_config["engine"]
        home_vars = [plan.engine_config["engine_home_var"]]
        modules = list(ENGINE_MODULES[engine])
        if engine == MEGATRON_LM and any(s.name in ("convert", "export") for s in plan.steps):
            home_vars.append(BRIDGE_HOME_VAR)
            modules.append("megatron.bridge")
        missing = missing_modules(modules, home_vars)
        if missing:
            raise UsageError(
                f"the megatron backend needs {ENGINE_LABELS[engine]} ({', '.join(missing)} not importable)",
                "pip install 'factory-cli[megatron]'",
            )
        homes = engine_homes(home_vars)
        run_dir = Path(plan.run_dir)
        job = load_run_job(run_dir)
        assert isinstance(job, MegatronJob)
        base_dirs = [Path(d) for d in plan.base_dirs]
        materialize_model(job, Path(plan.engine_config["hf_model"]), base_dirs, ui)
        rows = read_canonical_rows(job, job.data.train, base_dirs)
        write_jsonl(Path(plan.engine_config["train_file"]), (megatron_input_row(job.stage, r, engine) for r in rows))
        ui.info(f"data: {len(rows)} training rows written to {plan.engine_config['train_file']}")
        if plan.engine_config["train_iters"] is None:
            device: DeviceKind = plan.device  # type: ignore[assignment]
            base = plan.base_dirs
            plan = plan_megatron(job, device, model_facts(job), train_samples=len(rows))
            plan.base_dirs = base
            write_json_atomic(run_dir / "plan.json", plan.to_dict())
            ui.info(f"train iterations: {plan.engine_config['train_iters']}")
        for step in plan.steps:
            if step.name == "convert" and has_checkpoint(Path(plan.engine_config["megatron_checkpoint"])):
                ui.info(f"convert: {plan.engine_config['megatron_checkpoint']} is already converted")
                continue
            argv = resolve_argv(step.argv, homes)
            ui.info(f"{step.name}: {json.dumps(argv)}")
            code = run_child(argv, child_env(step.env, step.files), cwd=step.cwd)
            if code != 0:
                ui.warn(f"step {step.name} failed with exit code {code}")
                return RunResult(run_dir=run_dir, ok=False, summary={"exit_code": code, "failed_step": step.name})
        return RunResult(run_dir=run_dir, ok=True, summary={"exit_code": 0})


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


def _module_found(dotted: str, homes: Sequence[Path]) -> bool:
    """Whether `dotted` is importable, judged from files only (nothing is imported)."""
    top, *rest = dotted.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    roots += [str(h / top) for h in homes if (h / top).is_dir()]
    if spec is None and not roots:
        return False
    for part in rest:
        found = [str(Path(r) / part) for r in roots if (Path(r) / part).is_dir() or (Path(r) / f"{part}.py").is_file()]
        if not found:
            return False
        roots = found
    return True


def missing_modules(modules: Sequence[str], home_vars: Sequence[str] = ()) -> list[str]:
    """The engine modules that cannot be imported (also looked for in the engine checkouts, when set)."""
    homes = [Path(os.environ[v]) for v in home_vars if os.environ.get(v)]
    return [m for m in modules if not _module_found(m, homes)]


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


def child_env(env: Mapping[str, str], files: Mapping[str, str] | None = None) -> dict[str, str]:
    """The step's env, with this interpreter's bin folder first on PATH (argv says `python`); writes step files."""
    from factory_cli.runs import write_text_atomic

    for path, text in (files or {}).items():
        write_text_atomic(Path(path), text)
    bin_dir = str(Path(sys.executable).parent)
    return {**env, "PATH": os.pathsep.join([bin_dir, env.get("PATH", os.environ.get("PATH", ""))])}


def has_checkpoint(directory: Path) -> bool:
    """A Megatron checkpoint folder: the tracker file or an iter_* folder."""
    if (directory / "latest_checkpointed_iteration.txt").is_file():
        return True
    return directory.is_dir() and any(p.name.startswith("iter_") for p in directory.iterdir())


def load_run_job(run_dir: Path) -> JobBase:
    """The resolved job of a run directory (job.yaml, written before the backend runs)."""
    from factory_cli.config.load import parse_yaml_text
    from factory_cli.config.validate import validate_loaded

    job_file = run_dir / "job.yaml"
    return validate_loaded(parse_yaml_text(job_file.read_text(encoding="utf-8"), str(job_file)), checks=False).job


def materialize_model(job: JobBase, target: Path, base_dirs: Sequence[Path], ui: Progress) -> Path:
    """Make `target` the model's HF checkpoint: a link to a local folder, else a Hub download (GGUF converted)."""
    from factory_cli.modeling import ensure_hf_checkpoint, resolve_model_source

    if target.is_dir() and not target.is_symlink():
        return target
    source = resolve_model_source(job.model, base_dirs)
    path = ensure_hf_checkpoint(source, trust_remote_code=job.model.trust_remote_code, revision=job.model.revision)
    local = Path(path)
    if not local.is_dir():
        from huggingface_hub import snapshot_download

        ui.info(f"model: downloading {path}")
        local = Path(snapshot_download(repo_id=path, revision=job.model.revision))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()
    target.symlink_to(local.resolve(), target_is_directory=True)
    return target


def read_canonical_rows(job: JobBase, specs: Sequence[DatasetSpec], base_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Every valid canonical row of `specs` (invalid rows are counted and reported by the data pipeline)."""
    from factory_cli.data.pipeline import DataError, _read_source, _resolve

    rows: list[dict[str, Any]] = []
    for spec in specs:
        try:
            source = _resolve(spec, job.data.dataset_dir, base_dirs, "train")
            _read_source(source, job.stage, job.data.seed)
        except DataError as exc:
            raise UsageError(exc.message, exc.hint) from None
        rows += source.rows
    return rows


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line, written to a temp file and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
