"""The catalog of evaluation tasks: names, what they measure, and name resolution with a did-you-mean.

Pure Python (no torch, no lm-eval import): `factory list tasks` and the CLI's validation of `--tasks` use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from factory_cli.config.errors import UsageError

TaskKind = Literal["perplexity", "generation", "harness"]
HARNESS_PREFIX = "lm:"
LOCAL_HARNESS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"


@dataclass(frozen=True)
class TaskSpec:
    """One evaluation task: its name, how it runs, its headline metric, and (harness tasks) the lm-eval task."""

    name: str
    kind: TaskKind
    metric: str
    description: str
    harness_task: str | None = None  # lm-eval task/group name, or a YAML file path
    local_yaml: Path | None = None  # our own lm-eval task definition (lm_eval_tasks/*.yaml)
    higher_is_better: bool = True


def _local(name: str, metric: str, description: str) -> TaskSpec:
    return TaskSpec(name, "harness", metric, description, name, LOCAL_HARNESS_DIR / f"{name}.yaml")


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "ppl",
            "perplexity",
            "perplexity",
            "token perplexity on a dataset, masked like training (default: the run's eval data, else demo-sft-alpaca)",
            higher_is_better=False,
        ),
        TaskSpec(
            "gsm8k_demo",
            "generation",
            "accuracy",
            "greedy chat generation on demo-eval-math, scored by the math_answer reward",
        ),
        _local("arc_demo", "acc", "multiple choice on demo-arc-mc (lm-eval, local YAML task, offline)"),
        _local(
            "math_demo_harness",
            "exact_match",
            "generation on demo-eval-math, exact match on the last number (lm-eval, local YAML task, offline)",
        ),
    )
}
LM_TASK_DESCRIPTION = "any lm-evaluation-harness task or group, e.g. lm:hellaswag (its data from the Hub)"


def _harness_spec(target: str, name: str) -> TaskSpec:
    """`lm:<target>`: one of our local tasks, a YAML file of the user's, or a built-in lm-eval task."""
    local = TASKS.get(target)
    if local is not None and local.local_yaml is not None:
        return local
    if target.endswith((".yaml", ".yml")):
        path = Path(target).expanduser()
        if not path.is_file():
            raise UsageError(f"lm-eval task file not found: {target}", "give the path of a task YAML file")
        return TaskSpec(name, "harness", "acc", f"lm-eval task from {path}", str(path), path.resolve())
    return TaskSpec(name, "harness", "acc", f"lm-eval harness task `{target}`", target)


def resolve_task(name: str) -> TaskSpec:
    """A task name -> its TaskSpec; `lm:<task>` for any lm-eval task; UsageError with a did-you-mean otherwise."""
    cleaned = name.strip()
    if cleaned.startswith(HARNESS_PREFIX):
        target = cleaned[len(HARNESS_PREFIX) :].strip()
        if not target:
            raise UsageError("`lm:` needs an lm-eval task name", "e.g. lm:hellaswag, or lm:arc_demo (offline)")
        return _harness_spec(target, cleaned)
    spec = TASKS.get(cleaned)
    if spec is not None:
        return spec
    close = difflib.get_close_matches(cleaned, list(TASKS), n=1, cutoff=0.5)
    hint = f"did you mean `{close[0]}`?" if close else "see `factory list tasks`"
    raise UsageError(
        f"unknown eval task `{name}`; known: {', '.join(TASKS)}, or lm:<task> for any lm-eval task",
        f"{hint} (lm-eval harness tasks are written lm:<task>, e.g. lm:{cleaned or 'hellaswag'})",
    )


def resolve_tasks(names: Iterable[str]) -> list[TaskSpec]:
    """Several task names (comma-separated items allowed), de-duplicated in order; at least one."""
    specs: list[TaskSpec] = []
    for item in names:
        for part in item.split(","):
            if part.strip():
                spec = resolve_task(part)
                if spec not in specs:
                    specs.append(spec)
    if not specs:
        raise UsageError("no eval task given", f"e.g. --tasks {','.join(TASKS)}")
    return specs


def describe_tasks() -> list[tuple[str, str, str, str]]:
    """(name, kind, metric, description) rows for `factory list tasks`."""
    rows: list[tuple[str, str, str, str]] = [(s.name, s.kind, s.metric, s.description) for s in TASKS.values()]
    rows.append((f"{HARNESS_PREFIX}<task>", "harness", "acc / acc_norm / exact_match", LM_TASK_DESCRIPTION))
    return rows
