"""What the engine backends' run steps share: finding the engine without importing it, the child process
environment, the link to the HF checkpoint the engine starts from, and jsonl inputs. torch is never imported here."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from factory_cli.backends.base import Progress
from factory_cli.config.schema import JobBase


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


def child_env(
    env: Mapping[str, str], files: Mapping[str, str] | None = None, python: Path | None = None
) -> dict[str, str]:
    """The step's env, with the bin folder of `python` (an engine's own interpreter; default: this one) first on PATH
    (argv says `python`); writes step files."""
    from factory_cli.runs import write_text_atomic

    for path, text in (files or {}).items():
        write_text_atomic(Path(path), text)
    bin_dir = str((python or Path(sys.executable)).parent)
    return {**env, "PATH": os.pathsep.join([bin_dir, env.get("PATH", os.environ.get("PATH", ""))])}


def with_python(argv: Sequence[str], python: Path) -> list[str]:
    """argv with a leading `python` (plan.PYTHON) replaced by `python`'s path: an engine interpreter named by path
    need not be called `python` (on Ascend the argv is a shell line and PATH, see child_env, picks it)."""
    from factory_cli.backends.common.plan import PYTHON

    return [str(python) if index == 0 and arg == PYTHON else arg for index, arg in enumerate(argv)]


def materialize_model(job: JobBase, target: Path, base_dirs: Sequence[Path], ui: Progress) -> Path:
    """Make `target` a link to the model's HF checkpoint on disk (modeling/download.py `fetch_model`)."""
    from factory_cli.modeling.download import fetch_model

    if target.is_dir() and not target.is_symlink():
        return target
    local = Path(fetch_model(job.model, base_dirs, ui.info))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()
    target.symlink_to(local.resolve(), target_is_directory=True)
    return target


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line, written to a temp file and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
