"""Load rewards (built-in names or `path/to/file.py:function`) and call them with one batch interface.

Accepted user signatures (detected from parameter names):
* verl:   compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float | {"score": float}
* TRL:    fn(completions, **kwargs) or fn(prompts, completions, **kwargs) -> list[float]  (batch)
* single: fn(completion, **row_fields) -> float                                         (one completion)
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
import sysconfig
import traceback
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


BATCH = -1  # the row index of a failure that concerns a whole batch (TRL-style rewards)


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
        self,
        completions: Sequence[Any],
        prompts: Sequence[Any],
        columns: dict[str, Sequence[Any]],
        extra: dict[str, Any] | None = None,
    ) -> list[float]:
        """Score a batch; `columns` holds every other dataset column, one value per completion; `extra` what a
        TRL-signature function gets besides them (TRL's completion_ids, trainer_state, ...).

        Raises RewardCallError (the reward's name, the row, the user's own frame) when the function raises, returns
        something that is not a number per completion, or a number that is not finite."""
        if self.kind == "trl":
            result = self._call(
                BATCH,
                columns,
                self.function,
                prompts=list(prompts),
                completions=list(completions),
                **columns,
                **(extra or {}),
                **self.kwargs,
            )
            if not isinstance(result, list | tuple) or len(result) != len(completions):
                shown = f"a list of {len(result)}" if isinstance(result, list | tuple) else _shown(result)
                raise RewardCallError(
                    f"reward `{self.label}` returned {shown} for a batch of {len(completions)} completions",
                    "a batch reward returns one float per completion (None for 'not applicable' is allowed)",
                )
            return [self._number(x, index, columns, allow_none=True) for index, x in enumerate(result)]
        out = []
        for index, completion in enumerate(completions):
            row = {key: values[index] for key, values in columns.items()}
            out.append(self._number(self._score_one(index, completion, row, columns), index, columns))
        return out

    def trl_function(self) -> Callable[..., list[float]]:
        """The reward as TRL's GRPOTrainer calls it: `(prompts, completions, completion_ids, **dataset columns,
        trainer_state, ...)`. A TRL-signature function gets TRL's arguments as they are; the others get the text of
        each completion and its row. Either way every call is checked as `score` checks it (the probe in
        rewards/probe.py makes the same call in `factory check`), so a failing reward stops training with its name,
        the batch or row, and the user's own line, never a silent wrong-length list or a NaN."""

        def reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
            count = len(completions)
            columns: dict[str, Sequence[Any]] = {
                k: v for k, v in kwargs.items() if isinstance(v, list) and len(v) == count
            }
            columns.pop("completion_ids", None)
            if self.kind == "trl":
                extra = {k: v for k, v in kwargs.items() if k not in columns}
                return self.score(completions, prompts, columns, extra)
            texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
            return self.score(texts, prompts, columns)

        reward.__name__ = reward.__qualname__ = self.label  # TRL logs each reward under its function's name
        return reward

    def _score_one(self, index: int, completion: str, row: dict[str, Any], columns: dict[str, Sequence[Any]]) -> Any:
        if self.kind == "verl":
            value = self._call(
                index,
                columns,
                self.function,
                data_source=row.get("data_source"),
                solution_str=completion,
                ground_truth=row.get("answer"),
                extra_info=row.get("extra_info"),
                **self.kwargs,
            )
            if isinstance(value, dict):  # verl accepts {"score": float, ...}; the other keys are extra metrics
                if "score" not in value:
                    raise RewardCallError(
                        f"reward `{self.label}` returned a dict without `score` (keys: {sorted(value)}) on "
                        f"{_row_text(index, columns)}",
                        'return a float, or a dict {"score": float, ...} as verl does',
                    )
                value = value["score"]
            return value
        return self._call(index, columns, self.function, completion, **{**row, **self.kwargs})

    def _call(
        self, index: int, columns: dict[str, Sequence[Any]], function: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Any:  # positional-only: a dataset column may be called `index` or `columns`
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            raise RewardCallError(
                f"reward `{self.label}` raised {type(exc).__name__}: {exc} on {_row_text(index, columns)}",
                _user_frame(exc) or "run the reward on that row by hand to see the full error",
            ) from None

    def _number(self, value: Any, index: int, columns: dict[str, Sequence[Any]], allow_none: bool = False) -> float:
        if value is None and allow_none:
            return float("nan")  # TRL's convention: None is "this reward does not apply"; TRL skips NaN
        number: float | None = None
        if not isinstance(value, bool | str | bytes) and hasattr(value, "__float__"):
            try:  # ints, floats, numpy and torch numbers
                number = float(value)
            except (TypeError, ValueError):  # a tensor of several values
                number = None
        if number is None:
            raise RewardCallError(
                f"reward `{self.label}` returned {_shown(value)} on {_row_text(index, columns)}",
                "a reward returns a float (an int or a 0-d numpy/torch number is fine)",
            )
        if not math.isfinite(number):
            raise RewardCallError(
                f"reward `{self.label}` returned {number} on {_row_text(index, columns)}",
                "a reward must be a finite number; guard divisions and logs in your function",
            )
        return number


class RewardCallError(UsageError):
    """A reward that failed when called: its name, the row, and where in the user's own code."""


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _row_text(index: int, columns: dict[str, Sequence[Any]]) -> str:
    if index == BATCH:
        return f"a batch of {max((len(values) for values in columns.values()), default=0)} rows"
    fields = {key: values[index] for key, values in columns.items() if index < len(values)}
    text = ", ".join(f"{key}={value!r}" for key, value in fields.items())
    return f"row {index} of the batch ({text[:160] + '...' if len(text) > 160 else text or 'no columns'})"


def _user_frame(exc: BaseException) -> str | None:
    """`at file.py:12 in fn: <code>` for the innermost frame of the user's own code (not factory's, the standard
    library's or an installed package's)."""
    libraries = [Path(__file__).resolve().parents[1]]
    libraries += [Path(p).resolve() for k, p in sysconfig.get_paths().items() if k in ("stdlib", "purelib", "platlib")]
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not any(Path(f.filename).resolve().is_relative_to(lib) for lib in libraries)
    ]
    if not frames:
        return None
    frame = frames[-1]
    return f"at {frame.filename}:{frame.lineno} in {frame.name}: {(frame.line or '').strip()}"


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
    except SystemExit as exc:  # sys.exit() at import would end factory itself, silently
        sys.modules.pop(module_name, None)
        raise RewardLoadError(
            f"importing {file} called sys.exit({exc.code!r})",
            'a reward file is imported, not run: put script code under `if __name__ == "__main__":`',
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
