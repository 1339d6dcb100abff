"""Evaluation results, the comparison of two models, and the report: a rich table and a stable JSON file.

Pure Python (rich only): the report can be read back and printed without torch.

JSON schema 1::

    {"schema": 1, "created": ISO-8601 UTC,
     "models": [{"model", "kind", "path", "run_dir", "results": [
         {"task", "metric", "value", "stderr", "n", "seconds", "higher_is_better", "details"}]}],
     "deltas": [{"task", "metric", "model", "compare", "delta", "relative", "higher_is_better"}],
     "request": {...the EvalRequest...}, "versions": {library: version}}

`delta` = model - compare (the first model minus the reference it is compared with) and `relative` = delta / |compare|
(null when compare is 0). Values that are not finite are written as null.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
REPORT_KEYS = ("schema", "created", "models", "deltas", "request", "versions")
MODEL_KEYS = ("model", "kind", "path", "run_dir", "results")
RESULT_KEYS = ("task", "metric", "value", "stderr", "n", "seconds", "higher_is_better", "details")
DELTA_KEYS = ("task", "metric", "model", "compare", "delta", "relative", "higher_is_better")


@dataclass
class TaskResult:
    """One metric of one task on one model, with its standard error, sample count and wall time."""

    task: str
    metric: str
    value: float
    stderr: float | None
    n: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    higher_is_better: bool = True


@dataclass
class ModelResults:
    """Every task result of one model; `run_dir` is set when the model came from a run directory."""

    model: str
    kind: str
    results: list[TaskResult] = field(default_factory=list)
    path: str | None = None
    run_dir: str | None = None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class EvalReport:
    """The models evaluated (one, or two with --compare), their deltas, the request and library versions."""

    models: list[ModelResults]
    deltas: list[dict[str, Any]] = field(default_factory=list)
    request: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=dict)
    created: str = field(default_factory=_now)

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form (schema 1)."""
        return {
            "schema": SCHEMA_VERSION,
            "created": self.created,
            "models": [_model_dict(m) for m in self.models],
            "deltas": [{key: _json_value(d.get(key)) for key in DELTA_KEYS} for d in self.deltas],
            "request": _jsonable(self.request),
            "versions": dict(self.versions),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalReport:
        """Read back what to_dict wrote."""
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"unsupported eval report schema {data.get('schema')!r}; expected {SCHEMA_VERSION}")
        models = [
            ModelResults(
                model=m["model"],
                kind=m["kind"],
                path=m.get("path"),
                run_dir=m.get("run_dir"),
                results=[
                    TaskResult(
                        task=r["task"],
                        metric=r["metric"],
                        value=math.nan if r["value"] is None else float(r["value"]),
                        stderr=r.get("stderr"),
                        n=int(r["n"]),
                        seconds=float(r["seconds"]),
                        details=dict(r.get("details") or {}),
                        higher_is_better=bool(r.get("higher_is_better", True)),
                    )
                    for r in m["results"]
                ],
            )
            for m in data["models"]
        ]
        return cls(
            models=models,
            deltas=list(data.get("deltas") or []),
            request=dict(data.get("request") or {}),
            versions=dict(data.get("versions") or {}),
            created=str(data.get("created") or _now()),
        )


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _jsonable(value: Any) -> Any:
    """Paths, tuples and non-finite floats -> what JSON holds."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return _json_value(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _model_dict(model: ModelResults) -> dict[str, Any]:
    return {
        "model": model.model,
        "kind": model.kind,
        "path": model.path,
        "run_dir": model.run_dir,
        "results": [
            {
                "task": r.task,
                "metric": r.metric,
                "value": _json_value(float(r.value)),
                "stderr": _json_value(float(r.stderr)) if r.stderr is not None else None,
                "n": int(r.n),
                "seconds": round(float(r.seconds), 3),
                "higher_is_better": r.higher_is_better,
                "details": _jsonable(r.details),
            }
            for r in model.results
        ],
    }


def compute_deltas(model: ModelResults, compare: ModelResults) -> list[dict[str, Any]]:
    """Per (task, metric) both models have: delta = model - compare, relative = delta / |compare|."""
    reference = {(r.task, r.metric): r for r in compare.results}
    deltas: list[dict[str, Any]] = []
    for result in model.results:
        other = reference.get((result.task, result.metric))
        if other is None:
            continue
        delta = result.value - other.value
        relative = delta / abs(other.value) if other.value != 0 and math.isfinite(other.value) else None
        deltas.append(
            {
                "task": result.task,
                "metric": result.metric,
                "model": result.value,
                "compare": other.value,
                "delta": delta,
                "relative": relative,
                "higher_is_better": result.higher_is_better,
            }
        )
    return deltas


def write_report(report: EvalReport, path: Path) -> None:
    """Write the report as JSON (schema 1), creating the folder; atomic (temp file, then rename)."""
    from factory_cli.runs import write_text_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")


def read_report(path: Path) -> EvalReport:
    """Read a report written by write_report."""
    return EvalReport.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def default_report_path(report: EvalReport) -> Path | None:
    """<run_dir>/eval/<timestamp>.json for the first model that came from a run directory, else None."""
    run_dir = next((m.run_dir for m in report.models if m.run_dir), None)
    if run_dir is None:
        return None
    stamp = report.created.replace("-", "").replace(":", "").replace("T", "-").rstrip("Z")
    return Path(run_dir) / "eval" / f"{stamp}.json"


# ----------------------------------------------------------------------------------------------- printing


def format_value(value: float | None, stderr: float | None = None) -> str:
    """`0.4500 ± 0.0500`, 4 decimals below 100 and 2 above; `-` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    digits = 4 if abs(value) < 100 else 2
    text = f"{value:.{digits}f}"
    if stderr is not None and math.isfinite(stderr):
        text += f" ± {stderr:.{digits}f}"
    return text


def _signed(value: float | None, percent: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value * 100:+.1f}%" if percent else f"{value:+.4f}" if abs(value) < 100 else f"{value:+.2f}"


def _label(model: ModelResults) -> str:
    parts = Path(model.model).parts
    return "/".join(parts[-2:]) if len(parts) > 2 else model.model


def print_report(report: EvalReport) -> None:
    """A rich table: task, metric, value ± stderr, n, time; with a comparison, both models and the deltas."""
    from factory_cli.ui import print_table

    if not report.models:
        return
    first = report.models[0]
    if len(report.models) == 1 or not report.deltas:
        for model in report.models:
            single = [
                (r.task, r.metric, format_value(r.value, r.stderr), r.n, f"{r.seconds:.1f}s") for r in model.results
            ]
            print_table(f"eval: {_label(model)} ({model.kind})", ("task", "metric", "value", "n", "time"), single)
        return
    second = report.models[1]
    by_key = {(r.task, r.metric): r for r in second.results}
    deltas = {(d["task"], d["metric"]): d for d in report.deltas}
    rows: list[tuple[str, str, str, str, str, int]] = []
    for result in first.results:
        other = by_key.get((result.task, result.metric))
        delta = deltas.get((result.task, result.metric))
        change = "-"
        if delta is not None:
            change = f"{_signed(delta['delta'])} ({_signed(delta['relative'], percent=True)})"
            if delta["delta"]:
                change += " better" if (delta["delta"] > 0) == result.higher_is_better else " worse"
        rows.append(
            (
                result.task,
                result.metric + ("" if result.higher_is_better else " (lower is better)"),
                format_value(result.value, result.stderr),
                format_value(other.value, other.stderr) if other else "-",
                change,
                result.n,
            )
        )
    print_table(
        f"eval: {_label(first)} vs {_label(second)} (delta = first - second)",
        ("task", "metric", _label(first), _label(second), "delta (relative)", "n"),
        rows,
    )
