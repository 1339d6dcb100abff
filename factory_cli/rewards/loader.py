"""Load rewards (built-in names or `path/to/file.py:function`) and call them with one batch interface.

Accepted user signatures (detected from parameter names):
* verl:   compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float | {"score": float}
* TRL:    fn(completions, **kwargs) or fn(prompts, completions, **kwargs) -> list[float]  (batch)
* single: fn(completion, **row_fields) -> float                                         (one completion)
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from factory_cli.config.errors import UsageError
from factory_cli.rewards.builtin import BUILTIN_REWARDS

RewardKind = Literal["builtin", "verl", "trl", "single"]
VERL_PARAMS = ("data_source", "solution_str", "ground_truth")
ACCEPTED_SIGNATURES = (
    "compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float  (verl)",
    "fn(completions, **kwargs) -> list[float]  or  fn(prompts, completions, **kwargs)  (TRL, batch)",
    "fn(completion, **kwargs) -> float  (one completion; row fields such as answer arrive as keywords)",
)


class RewardLoadError(UsageError):
    """A reward that cannot be used, with a hint to fix it."""


@dataclass
class LoadedReward:
    """A reward ready to score batches: `score(completions, prompts, columns)` -> one float per completion."""

    label: str
    kind: RewardKind
    function: Callable[..., Any]
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)

    def score(
        self, completions: Sequence[str], prompts: Sequence[Any], columns: dict[str, Sequence[Any]]
    ) -> list[float]:
        """Score a batch; `columns` holds every other dataset column, one value per completion."""
        if self.kind == "trl":
            result = self.function(prompts=list(prompts), completions=list(completions), **columns, **self.kwargs)
            return [float(x) if x is not None else float("nan") for x in result]
        out = []
        for index, completion in enumerate(completions):
            row = {key: values[index] for key, values in columns.items()}
            out.append(self._score_one(completion, row))
        return out

    def _score_one(self, completion: str, row: dict[str, Any]) -> float:
        if self.kind == "verl":
            value = self.function(
                data_source=row.get("data_source"),
                solution_str=completion,
                ground_truth=row.get("answer"),
                extra_info=row.get("extra_info"),
                **self.kwargs,
            )
            if isinstance(value, dict):
                value = value.get("score", 0.0)
            return float(value)
        return float(self.function(completion, **{**row, **self.kwargs}))


def classify_signature(function: Callable[..., Any]) -> RewardKind | None:
    """Which accepted signature a user function has, or None."""
    try:
        params = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return None
    names = list(params)
    if all(name in params for name in VERL_PARAMS):
        return "verl"
    if "completions" in params:
        return "trl"
    positional = [
        p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if (names and names[0] == "completion") or len(positional) == 1:
        return "single"
    return None


def split_reference(reference: str) -> tuple[str, str]:
    """`dir/file.py:fn` -> ('dir/file.py', 'fn'); a bare `file.py` means `compute_score` (verl's default name)."""
    if ":" in reference:
        path, name = reference.rsplit(":", 1)
        return path, name
    return reference, "compute_score"


def find_reward_file(path: str, base_dirs: Sequence[Path]) -> Path | None:
    """The reward file, looked up as given, then relative to each base directory."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    for base in (Path.cwd(), *base_dirs):
        if (base / candidate).is_file():
            return (base / candidate).resolve()
    return None


def import_function(file: Path, name: str) -> Callable[..., Any]:
    """Import `name` from a Python file (the user's own code)."""
    module_name = f"factory_user_reward_{abs(hash(str(file)))}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise RewardLoadError(f"cannot import {file}", "give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise RewardLoadError(
            f"importing {file} failed: {type(exc).__name__}: {exc}", "run `python <file>` to see the full error"
        ) from None
    function = getattr(module, name, None)
    if function is None or not callable(function):
        available = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise RewardLoadError(
            f"{file} has no function `{name}`",
            f"functions found there: {', '.join(available) or 'none'}",
        )
    return function


def load_reward(
    name: str | None,
    function: str | None,
    weight: float = 1.0,
    kwargs: dict[str, Any] | None = None,
    base_dirs: Sequence[Path] = (),
) -> LoadedReward:
    """Resolve one reward spec into a callable; raises RewardLoadError with a hint."""
    extra = dict(kwargs or {})
    if name is not None:
        builtin = BUILTIN_REWARDS.get(name)
        if builtin is None:
            raise RewardLoadError(
                f"no built-in reward named `{name}`",
                f"built-ins: {', '.join(BUILTIN_REWARDS)}; or give your own as function: path/to/file.py:function",
            )
        return LoadedReward(name, "single", builtin.function, weight, extra)
    assert function is not None
    path, attr = split_reference(function)
    file = find_reward_file(path, base_dirs)
    if file is None:
        raise RewardLoadError(f"reward file not found: {path}", "paths are relative to where you run factory")
    fn = import_function(file, attr)
    kind = classify_signature(fn)
    if kind is None:
        raise RewardLoadError(
            f"`{attr}` in {file.name} has an unsupported signature {inspect.signature(fn)}",
            "accepted: " + " | ".join(ACCEPTED_SIGNATURES),
        )
    return LoadedReward(attr, kind, fn, weight, extra)
