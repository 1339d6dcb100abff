"""Measure a model: perplexity, generation accuracy, lm-eval harness tasks, and a comparison of two models.

Importing this package is cheap (no torch): the heavy libraries load when a model does.
"""

from factory_cli.evaluation.report import (
    EvalReport,
    ModelResults,
    TaskResult,
    default_report_path,
    print_report,
    read_report,
    write_report,
)
from factory_cli.evaluation.run import EvalRequest, run_eval
from factory_cli.evaluation.tasks import TASKS, TaskSpec, describe_tasks, resolve_task, resolve_tasks

__all__ = [
    "TASKS",
    "EvalReport",
    "EvalRequest",
    "ModelResults",
    "TaskResult",
    "TaskSpec",
    "default_report_path",
    "describe_tasks",
    "print_report",
    "read_report",
    "resolve_task",
    "resolve_tasks",
    "run_eval",
    "write_report",
]
