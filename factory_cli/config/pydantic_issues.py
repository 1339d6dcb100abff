"""Turn Pydantic's validation errors into Issues that speak the job file's language."""

from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from factory_cli.config.errors import Issue
from factory_cli.config.load import format_path


def _unwrap(annotation: Any) -> Any:
    """Strip Optional / Union-with-None down to the one real type."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation


def model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The section model found at `loc` under `root`, or None if `loc` is not a section."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) in (list, tuple) and isinstance(part, int):
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    if get_origin(current) in (list, tuple):
        current = _unwrap(get_args(current)[0])
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def field_description(root: type[BaseModel], loc: Sequence[str | int]) -> str | None:
    """The one-line documentation of the field at `loc`."""
    names = list(loc)
    while names and isinstance(names[-1], int):
        names.pop()
    if not names:
        return None
    parent = model_at(root, names[:-1])
    field = parent.model_fields.get(str(names[-1])) if parent else None
    return field.description if field else None


def did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    """`did you mean `x`?` for the closest choice, if any is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean `{match[0]}`?" if match else None


def _unknown_key_issue(root: type[BaseModel], loc: tuple[str | int, ...], others: Sequence[type[BaseModel]]) -> Issue:
    key = str(loc[-1])
    parent = model_at(root, loc[:-1])
    allowed = sorted(parent.model_fields) if parent else []
    path = format_path(loc)
    owners = [m for m in others if model_at(m, loc[:-1]) and key in (model_at(m, loc[:-1]) or BaseModel).model_fields]
    if owners:
        names = sorted({str(m.model_fields["backend"].annotation.__args__[0]) for m in owners})  # type: ignore[union-attr]
        here = root.model_fields["backend"].annotation.__args__[0]  # type: ignore[union-attr]
        return Issue(
            path=path,
            message=f"`{key}` is a setting of the {' / '.join(names)} backend, not of {here}",
            hint=f"remove it, or set backend: {names[0]}",
        )
    hint = did_you_mean(key, allowed)
    if hint is None and allowed:
        hint = "allowed here: " + ", ".join(allowed)
    return Issue(path=path, message=f"unknown key `{key}`", hint=hint)


def issues_from_validation_error(
    exc: ValidationError, root: type[BaseModel], others: Sequence[type[BaseModel]] = ()
) -> list[tuple[tuple[str | int, ...], Issue]]:
    """Each Pydantic error as (loc, Issue), with readable message and a hint."""
    out: list[tuple[tuple[str | int, ...], Issue]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        value = err.get("input")
        path = format_path(loc)
        if kind == "extra_forbidden":
            out.append((loc, _unknown_key_issue(root, loc, others)))
            continue
        description = field_description(root, loc)
        if kind == "missing":
            issue = Issue(path=path, message="required, but not given", hint=description)
        elif kind in ("literal_error", "enum"):
            expected = err.get("ctx", {}).get("expected", "")
            choices = [c.strip().strip("'") for c in expected.replace(" or ", ", ").split(",") if c.strip()]
            choices = [{"True": "true", "False": "false"}.get(c, c) for c in choices]
            hint = did_you_mean(str(value), choices) if isinstance(value, str) else None
            if isinstance(value, str) and value.lower() == "gpu" and "cuda" in choices:
                hint = "did you mean `cuda`? (NVIDIA GPUs are `cuda`, Ascend NPUs `npu`)"
            issue = Issue(
                path=path,
                message=f"`{value}` is not allowed; choose one of: {', '.join(choices)}",
                hint=hint or description,
            )
        elif kind.startswith("value_error") or kind == "assertion_error":
            message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            issue = Issue(path=path, message=message, hint=description)
        elif kind == "model_type" or kind == "dict_type":
            issue = Issue(
                path=path,
                message=f"must be a section (key: value pairs), got {type(value).__name__} {value!r}",
                hint=description,
            )
        else:
            message = err["msg"][0].lower() + err["msg"][1:]
            message = message.replace("input should be", "should be")
            shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
            issue = Issue(path=path, message=f"{message} (got {shown})", hint=description)
        out.append((loc, issue))
    return out
