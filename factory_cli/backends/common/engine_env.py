"""An engine's own environment: which interpreter runs it, and what is installed there.

An engine whose pins clash with ours (verl 0.9 keeps transformers<5.11 and antlr4 4.9) runs from an environment of
its own, built by the Makefile (`make setup-verl` -> .venv-verl). The job may name the interpreter
(`engine.python`); otherwise the project's environment is used when it exists, else the interpreter running factory.
The probe runs that interpreter once with a short script that looks packages up without importing them, so
`factory check` stays fast and never imports torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from factory_cli.config.errors import UsageError

PROJECT_ROOT = Path(__file__).resolve().parents[3]
# backend -> its environment folder in the project (the Makefile target that builds it)
PROJECT_ENVS = {"verl": (".venv-verl", "make setup-verl")}
PROBE_TIMEOUT_S = 30.0
_PROBE = """
import importlib.metadata as m, importlib.util as u, json, sys
out = {"python": "%d.%d.%d" % sys.version_info[:3], "packages": {}}
for name, dist in json.loads(sys.argv[1]):
    try:
        found = u.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    version = None
    if found:
        try:
            version = m.version(dist)
        except m.PackageNotFoundError:
            version = ""
    out["packages"][name] = version
print(json.dumps(out))
"""


@dataclass(frozen=True)
class EnginePython:
    """The interpreter an engine runs with, and why that one."""

    path: Path
    origin: str  # "engine.python", "the project's .venv-verl", "the interpreter running factory"

    def describe(self) -> str:
        return f"{self.path} ({self.origin})"


@dataclass(frozen=True)
class EngineProbe:
    """What an engine interpreter has: its Python version and, per module, the installed version ("" when the
    module is there without distribution metadata, None when it is missing)."""

    python: EnginePython
    python_version: str
    packages: dict[str, str | None]

    def missing(self, modules: Sequence[str]) -> list[str]:
        return [m for m in modules if self.packages.get(m) is None]


def engine_python(backend: str, configured: str | None) -> EnginePython:
    """The job's `engine.python`, else the project's environment for `backend` when built, else this interpreter."""
    if configured:
        return EnginePython(Path(configured).expanduser(), "engine.python")
    folder, _ = PROJECT_ENVS.get(backend, ("", ""))
    project = PROJECT_ROOT / folder / "bin" / "python"
    if folder and project.is_file():
        return EnginePython(project, f"the project's {folder}")
    return EnginePython(Path(sys.executable), "the interpreter running factory")


def setup_hint(backend: str) -> str:
    """How to build the backend's environment."""
    folder, target = PROJECT_ENVS.get(backend, ("", ""))
    if target:
        return f"run `{target}` in the factory checkout (builds {folder}), or set engine.python to one with {backend}"
    return f"pip install 'factory-cli[{backend}]'"


def probe_engine(python: EnginePython, modules: Sequence[tuple[str, str]]) -> EngineProbe:
    """Run `python` once: for each (module, distribution) whether the module is importable and the version.
    A missing or broken interpreter is a UsageError naming it."""
    if not python.path.is_file():
        raise UsageError(f"the engine interpreter {python.describe()} does not exist", "set engine.python or build it")
    try:
        done = subprocess.run(
            [str(python.path), "-c", _PROBE, json.dumps([list(m) for m in modules])],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"the engine interpreter {python.describe()} cannot run: {exc}", "set engine.python") from None
    try:
        out = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UsageError(
            f"the engine interpreter {python.describe()} failed to report its packages: {tail[0]}",
            "set engine.python to a working Python 3.10+ interpreter",
        ) from None
    return EngineProbe(python, str(out["python"]), dict(out["packages"]))
