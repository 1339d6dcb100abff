"""load -> sections allowed for backend/stage -> schema -> defaults -> checks; every problem reported at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from factory_cli.backends import check_with_backend
from factory_cli.config.checks import CheckContext, DataScan, run_checks
from factory_cli.config.defaults import resolve_defaults
from factory_cli.config.errors import Issue, JobError
from factory_cli.config.load import LoadedJob, apply_overrides, find_placeholders, load_job_file
from factory_cli.config.pydantic_issues import did_you_mean, issues_from_validation_error
from factory_cli.config.schema import JOB_MODELS, SUPPORTED_STAGES, JobBase

# Sub-sections that only mean something for some method types.
METHOD_SECTIONS = {"lora": ("lora", "qlora"), "freeze": ("freeze",), "quant": ("qlora",)}
STAGE_SECTIONS = ("dpo", "grpo")


@dataclass
class ValidatedJob:
    """A job that passed every check: the resolved Job, where it came from, and its warnings."""

    job: JobBase
    loaded: LoadedJob
    warnings: list[Issue] = field(default_factory=list)
    data_scan: DataScan | None = None  # what the data checks read (None when checks were off)

    @property
    def base_dir(self) -> Path:
        return Path(self.loaded.source).resolve().parent if self.loaded.source != "command line" else Path.cwd()


def _path_parts(path: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for chunk in path.replace("]", "").split("."):
        head, *indexes = chunk.split("[")
        if head:
            parts.append(head)
        parts.extend(int(i) for i in indexes)
    return tuple(parts)


def gate_sections(data: dict[str, Any]) -> list[Issue]:
    """Backend and stage are known and compatible; stage- and method-only sections appear only where they apply."""
    issues: list[Issue] = []
    backend = data.get("backend")
    stage = data.get("stage")
    backend = backend if backend is None or isinstance(backend, str) else repr(backend)
    stage = stage if stage is None or isinstance(stage, str) else repr(stage)
    backends = list(SUPPORTED_STAGES)
    if backend is None:
        issues.append(Issue("backend", "required, but not given", f"choose one of: {', '.join(backends)}"))
    elif backend not in SUPPORTED_STAGES:
        hint = did_you_mean(str(backend), backends) or f"choose one of: {', '.join(backends)}"
        issues.append(Issue("backend", f"unknown backend `{backend}`", hint))
    if stage is None:
        issues.append(Issue("stage", "required, but not given", "choose one of: pt, sft, dpo, grpo"))
    elif stage not in ("pt", "sft", "dpo", "grpo"):
        hint = did_you_mean(str(stage), ["pt", "sft", "dpo", "grpo"]) or "choose one of: pt, sft, dpo, grpo"
        issues.append(Issue("stage", f"unknown stage `{stage}`", hint))
    elif backend in SUPPORTED_STAGES and stage not in SUPPORTED_STAGES[backend]:
        others = [b for b, stages in SUPPORTED_STAGES.items() if stage in stages]
        issues.append(
            Issue(
                "stage",
                f"the {backend} backend does not run stage {stage}; it runs: {', '.join(SUPPORTED_STAGES[backend])}",
                f"for {stage} use backend: {' or '.join(others)}",
            )
        )
    for section in STAGE_SECTIONS:
        if section in data and stage in ("pt", "sft", "dpo", "grpo") and stage != section:
            issues.append(Issue(section, f"section `{section}` applies to stage {section}, not {stage}", "remove it"))
    if stage == "grpo" and data.get("grpo") is None:
        issues.append(
            Issue("grpo", "stage grpo needs a grpo section with at least one reward", "grpo: {rewards: [math_answer]}")
        )
    method = data.get("method")
    if isinstance(method, dict):
        kind = method.get("type", "lora")
        for sub, kinds in METHOD_SECTIONS.items():
            if sub in method and kind in ("full", "freeze", "lora", "qlora") and kind not in kinds:
                issues.append(
                    Issue(
                        f"method.{sub}",
                        f"`method.{sub}` has no effect with method.type {kind}",
                        f"remove it, or set method.type: {' or '.join(kinds)}",
                    )
                )
    return issues


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or a.startswith(b + "[") or b.startswith(a + ".") or b.startswith(a + "[")


def validate_loaded(loaded: LoadedJob, checks: bool = True) -> ValidatedJob:
    """Validate a loaded job completely; raise JobError listing every problem (with warnings) at once."""
    data = loaded.data
    found: list[Issue] = [loaded.locate(i, _path_parts(i.path)) for i in gate_sections(data)]
    placeholders = find_placeholders(loaded)
    found += placeholders
    blocked = {i.path for i in placeholders} | {i.path for i in found if i.is_error}
    backend = data.get("backend")
    job: JobBase | None = None
    scan: DataScan | None = None
    if isinstance(backend, str) and backend in JOB_MODELS:
        model = JOB_MODELS[backend]
        others = [m for name, m in JOB_MODELS.items() if name != backend]
        try:
            job = model.model_validate(_without(data, [i.path for i in found if i.is_error]))
        except ValidationError as exc:
            for loc, issue in issues_from_validation_error(exc, model, others):
                if not any(_overlaps(issue.path, b) for b in blocked):
                    found.append(loaded.locate(issue, loc))
    if job is not None and not any(i.is_error for i in found if i not in placeholders):
        job = resolve_defaults(job)
        if checks:
            context = CheckContext(base_dirs=(_job_dir(loaded),), backend_check=check_with_backend)
            for issue in run_checks(job, context):
                if not any(_overlaps(issue.path, p.path) for p in placeholders):
                    found.append(loaded.locate(issue, _path_parts(issue.path)))
            scan = next((result for checked, result in context.scans.values() if checked is job), None)
    errors = [i for i in found if i.is_error]
    if errors or job is None:
        raise JobError(sorted(found, key=lambda i: (i.line is None, i.line or 0)))
    return ValidatedJob(job=job, loaded=loaded, warnings=[i for i in found if not i.is_error], data_scan=scan)


def _without(data: dict[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    # Sections already reported by the gate are left out so Pydantic does not report them twice.
    top = {p for p in paths if "." not in p and "[" not in p and p not in ("backend", "stage")}
    return {k: v for k, v in data.items() if k not in top}


def _job_dir(loaded: LoadedJob) -> Path:
    source = Path(loaded.source)
    return source.resolve().parent if source.exists() else Path.cwd()


def load_and_validate(path: str | Path, overrides: Sequence[str] = (), checks: bool = True) -> ValidatedJob:
    """Read a job file, apply overrides, and validate it fully."""
    loaded = apply_overrides(load_job_file(path), overrides)
    return validate_loaded(loaded, checks=checks)
