"""The registry of backends: the only place that names a backend class. Imports are lazy (no torch)."""

from __future__ import annotations

import importlib
from functools import cache

from factory_cli.backends.base import Backend

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
