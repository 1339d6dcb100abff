"""The registry of backends: the only place that names a backend class. Imports are lazy (no torch)."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from functools import cache

from factory_cli.backends.base import Backend
from factory_cli.config.checks import CheckContext
from factory_cli.config.errors import Issue
from factory_cli.config.schema import JobBase

BACKENDS: dict[str, str] = {
    "deepspeed": "factory_cli.backends.deepspeed.backend:DeepSpeedBackend",
    "megatron": "factory_cli.backends.megatron.backend:MegatronBackend",
    "verl": "factory_cli.backends.verl.backend:VerlBackend",
}


@cache
def get_backend(name: str) -> Backend:
    """The backend registered under `name`."""
    module_name, class_name = BACKENDS[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = cls()
    return backend


def backend_names() -> list[str]:
    """Registered backend names."""
    return list(BACKENDS)


def check_with_backend(job: JobBase, ctx: CheckContext) -> Iterable[Issue]:
    """The job's backend's own checks; config/validate.py hands this to config/checks.py through the CheckContext."""
    return get_backend(job.backend).check(job, ctx)


def probe_engine_environment(job: JobBase) -> tuple[list[str], list[Issue]]:
    """(notes, warnings) on the engine environment the job would launch here, for backends that run their engine
    from an environment of their own (verl); nothing for the others."""
    probe = getattr(get_backend(job.backend), "probe", None)
    if probe is None:
        return [], []
    notes, warnings = probe(job)
    return list(notes), list(warnings)
