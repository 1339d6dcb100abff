"""`factory eval`: measure one model (or two, compared) on a list of tasks; the report goes to a table and JSON.

Models are loaded one at a time (the first is freed before the second loads); both see the same tasks, data and
limits. torch / transformers / lm-eval are imported only when a model is loaded.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from factory_cli.config.errors import UsageError
from factory_cli.evaluation.perplexity import PplRows, PplSource
from factory_cli.evaluation.report import EvalReport, ModelResults, TaskResult, compute_deltas
from factory_cli.evaluation.tasks import TaskSpec, resolve_tasks

DEFAULT_PPL_DATASET = "demo-sft-alpaca"
DEFAULT_MAX_NEW_TOKENS = 256  # gsm8k_demo's generation budget
DEVICES = ("auto", "cuda", "npu", "cpu")
DTYPES = ("auto", "bf16", "fp16", "fp32")
VERSION_KEYS = ("factory-cli", "torch", "transformers", "peft", "datasets", "lm-eval")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate and how: the model (and one to compare with), tasks, limits and generation budget."""

    model: str
    tasks: list[str]
    compare: str | None = None
    limit: int | None = None
    batch_size: int = 8
    num_fewshot: int | None = None  # None: each lm-eval task's own default
    device: str = "auto"
    dtype: str = "auto"
    max_new_tokens: int | None = None  # None: 256 for gsm8k_demo, each lm-eval task's own generation_kwargs
    dataset: str | None = None  # ppl: a registry name or a file (default: the run's eval data, else demo-sft-alpaca)
    base_dirs: tuple[Path, ...] = ()


def validate_request(request: EvalRequest) -> list[TaskSpec]:
    """Every option checked before anything loads; the resolved tasks."""
    specs = resolve_tasks(request.tasks)
    if not request.model or not request.model.strip():
        raise UsageError("no model to evaluate", "give --model (a registry name, model/adapter dir or run dir)")
    if request.limit is not None and request.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {request.limit}", "leave it out to use every example")
    if request.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {request.batch_size}", "e.g. --batch-size 8")
    if request.num_fewshot is not None and request.num_fewshot < 0:
        raise UsageError(f"--num-fewshot must be 0 or more, got {request.num_fewshot}", "e.g. --num-fewshot 5")
    if request.max_new_tokens is not None and request.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {request.max_new_tokens}", "e.g. 256")
    if request.device not in DEVICES:
        raise UsageError(f"unknown device `{request.device}`", f"one of {', '.join(DEVICES)}")
    if request.dtype not in DTYPES:
        raise UsageError(f"unknown dtype `{request.dtype}`", f"one of {', '.join(DTYPES)}")
    return specs


# --------------------------------------------------------------------------------------------- run jobs


def ppl_source(request: EvalRequest, run_dirs: Sequence[Path | None]) -> PplSource:
    """What `ppl` scores: --dataset, else the first run's data.eval (else data.train), else demo-sft-alpaca."""
    from factory_cli.config.schema import DatasetSpec
    from factory_cli.runs import RunDir

    base_dirs = tuple(request.base_dirs)
    if request.dataset:
        return PplSource((DatasetSpec(path=request.dataset),), request.dataset, base_dirs=base_dirs)
    run_dir = next((r for r in run_dirs if r is not None), None)
    if run_dir is None:
        return PplSource((DatasetSpec(path=DEFAULT_PPL_DATASET),), DEFAULT_PPL_DATASET, base_dirs=base_dirs)
    job = RunDir(run_dir).job()
    data = job.data
    specs = tuple(data.eval or data.train)
    label = ", ".join(s.path for s in specs) + (" (run eval data)" if data.eval else " (run train data)")
    return PplSource(
        specs,
        label,
        dataset_dir=data.dataset_dir,
        stage=job.stage,
        base_dirs=(*base_dirs, run_dir),
        max_length=data.max_length,
    )


# ------------------------------------------------------------------------------------------- one model


def chat_template_for(loaded: Any) -> str | None:
    """The template training used: the run job's model.template, else the tokenizer's own, else the registry's."""
    from factory_cli.data.masking import resolve_chat_template
    from factory_cli.registry.models import find_model

    info = loaded.info
    setting, name = "auto", info.base or info.reference
    if info.run_dir is not None:
        from factory_cli.runs import RunDir

        model = RunDir(info.run_dir).job().model
        setting, name = model.template, model.name_or_path
    spec = find_model(name)
    try:
        return resolve_chat_template(setting, loaded.tokenizer, spec.template if spec else None)
    except ValueError as exc:
        raise UsageError(str(exc), "set model.template in the job, or use a tokenizer with a chat template") from None


def _load(reference: str, request: EvalRequest) -> Any:
    """Load for scoring; weights that may come from the Hub (a Hub id, an adapter's base) load offline without it."""
    import contextlib

    from factory_cli.hub import offline_unless_reachable
    from factory_cli.inference.load import describe_model_dir, load_for_inference

    local = describe_model_dir(reference, request.base_dirs).kind in ("full", "quantized")
    try:
        with contextlib.nullcontext() if local else offline_unless_reachable():
            return load_for_inference(
                reference, device=request.device, dtype=request.dtype, base_dirs=request.base_dirs, merge_adapter=True
            )
    except RuntimeError as exc:
        if str(exc).startswith("device:"):
            raise UsageError(str(exc), "use --device auto or cpu") from None
        raise
    except OSError as exc:
        raise UsageError(
            f"cannot load model `{reference}`: {exc}", "give a model dir, adapter, run dir or registry name"
        ) from None


def _free(loaded: Any) -> None:
    """Drop a model and give its memory back before the next one loads."""
    import torch

    loaded.model = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate_model(
    reference: str,
    specs: Sequence[TaskSpec],
    request: EvalRequest,
    source: PplSource,
    progress: Progress | None = None,
    ppl_rows: PplRows | None = None,
) -> ModelResults:
    """Load one model, run every task on it, free it."""
    from factory_cli.evaluation.accuracy import evaluate_math_accuracy
    from factory_cli.evaluation.harness import make_lm, run_harness_task
    from factory_cli.evaluation.perplexity import evaluate_perplexity

    say = progress or (lambda _message: None)
    say(f"loading {reference}")
    started = time.perf_counter()
    loaded = _load(reference, request)
    say(f"loaded {reference} ({loaded.info.kind}) on {loaded.device} in {time.perf_counter() - started:.1f}s")
    info = loaded.info
    results: list[TaskResult] = []
    lm = None
    try:
        template = chat_template_for(loaded)
        for spec in specs:
            say(f"{spec.name}: running")
            task_started = time.perf_counter()
            if spec.kind == "perplexity":
                results.append(
                    evaluate_perplexity(
                        loaded,
                        source,
                        template,
                        limit=request.limit,
                        batch_size=request.batch_size,
                        progress=say,
                        rows=ppl_rows,
                    )
                )
            elif spec.kind == "generation":
                results.append(
                    evaluate_math_accuracy(
                        loaded,
                        template,
                        limit=request.limit,
                        batch_size=request.batch_size,
                        max_new_tokens=request.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
                        progress=say,
                    )
                )
            else:
                lm = lm or make_lm(loaded, request.batch_size)
                results += run_harness_task(
                    lm,
                    spec,
                    limit=request.limit,
                    num_fewshot=request.num_fewshot,
                    max_new_tokens=request.max_new_tokens,
                )
            say(f"{spec.name}: done in {time.perf_counter() - task_started:.1f}s")
    finally:
        del lm
        _free(loaded)
    return ModelResults(
        model=reference,
        kind=info.kind,
        results=results,
        path=str(Path(info.path).resolve()) if Path(info.path).exists() else info.path,  # absolute: reports move
        run_dir=str(Path(info.run_dir).resolve()) if info.run_dir is not None else None,
    )


# --------------------------------------------------------------------------------------------- the run


def _versions() -> dict[str, str | None]:
    from factory_cli.environment import library_versions

    versions = library_versions()
    return {key: versions.get(key) for key in VERSION_KEYS}


def _request_dict(request: EvalRequest, specs: Sequence[TaskSpec], source: PplSource) -> dict[str, Any]:
    data = asdict(request)
    data["base_dirs"] = [str(p) for p in request.base_dirs]
    data["tasks"] = [s.name for s in specs]
    if any(s.kind == "perplexity" for s in specs):
        data["ppl_dataset"] = source.label
    return data


def run_eval(request: EvalRequest, progress: Progress | None = None) -> EvalReport:
    """Evaluate `request.model` (and `request.compare`) on every task; deltas = model - compare."""
    from factory_cli.evaluation.harness import load_harness_task, quiet_harness
    from factory_cli.evaluation.perplexity import load_ppl_rows
    from factory_cli.inference.load import describe_model_dir
    from factory_cli.ui import quiet_engine_progress

    specs = validate_request(request)
    references = [request.model] + ([request.compare] if request.compare else [])
    infos = [describe_model_dir(ref, request.base_dirs) for ref in references]  # a bad path fails before loading
    source = ppl_source(request, [info.run_dir for info in infos])
    quiet_engine_progress()
    # Everything that can fail without a model fails before one loads: the ppl rows, the harness tasks' data.
    rows = load_ppl_rows(source, request.limit) if any(s.kind == "perplexity" for s in specs) else None
    for spec in specs:
        if spec.kind == "harness":
            if progress is not None:
                progress(f"{spec.name}: checking the lm-eval task")
            with quiet_harness():
                load_harness_task(spec)
    models = [evaluate_model(ref, specs, request, source, progress, rows) for ref in references]
    deltas = compute_deltas(models[0], models[1]) if len(models) == 2 else []
    return EvalReport(models=models, deltas=deltas, request=_request_dict(request, specs, source), versions=_versions())
