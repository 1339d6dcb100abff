"""YAML -> plain dict with the source line of every key; `key.path=value` overrides; `***` detection.

Never imports torch. Only `yaml.SafeLoader` (through a subclass that adds two resolvers) is used.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from factory_cli.config.errors import Issue, JobError, UsageError

PLACEHOLDER = "***"

PathKey = tuple[str | int, ...]


class FactoryLoader(yaml.SafeLoader):
    """SafeLoader that also reads `2e-5` (no dot) as a float, as every user expects."""


FactoryLoader.yaml_implicit_resolvers = {
    key: list(value) for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
FactoryLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


_FAST_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_data_yaml(text: str) -> Any:
    """Safe-load a data file (registries) with libyaml when present: 10x faster than the pure-Python parser."""
    return yaml.load(text, Loader=_FAST_SAFE_LOADER)


def format_path(path: Sequence[str | int]) -> str:
    """('data', 'train', 0, 'path') -> 'data.train[0].path'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class LoadedJob:
    """A job as plain data, plus where each key came from (file line or command line)."""

    data: dict[str, Any]
    source: str
    lines: dict[PathKey, int] = field(default_factory=dict)
    comments: dict[PathKey, str] = field(default_factory=dict)
    overridden: set[PathKey] = field(default_factory=set)

    def from_command_line(self, path: Sequence[str | int]) -> bool:
        """Whether an override set `path`, one of its parents, or something inside it."""
        key = tuple(path)
        return any(o[: len(key)] == key or key[: len(o)] == o for o in self.overridden)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of `path`, or of its nearest ancestor present in the file (None for command-line values)."""
        if self.from_command_line(path):
            return None
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return None

    def source_of(self, path: Sequence[str | int]) -> str:
        """The file for file keys, `command line` for overridden ones."""
        return "command line" if self.from_command_line(path) else self.source

    def locate(self, issue: Issue, path: Sequence[str | int]) -> Issue:
        """Attach file and line to an issue about `path`."""
        return issue.located(self.source_of(path), self.line_of(path))


def parse_yaml_text(text: str, source: str) -> LoadedJob:
    """Parse a job's YAML text; raise JobError on syntax errors or duplicate keys."""
    try:
        node = yaml.compose(text, Loader=FactoryLoader)
        if node is not None:
            _refuse_alias_expansion(node, source)
        data = yaml.load(text, Loader=FactoryLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise JobError(
            [
                Issue(
                    path="",
                    message=f"not valid YAML: {problem}",
                    hint="check indentation (spaces, not tabs) and that every `key: value` has a space after the colon",
                    line=line,
                    source=source,
                )
            ]
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise JobError(
            [
                Issue(
                    path="",
                    message=f"a job must be a mapping of sections, got {type(data).__name__}",
                    hint="start from `factory config --backend deepspeed --stage sft -o job.yaml`",
                    line=node.start_mark.line + 1 if node is not None else 1,
                    source=source,
                )
            ]
        )
    loaded = LoadedJob(data=data, source=source)
    issues: list[Issue] = []
    if node is not None:
        _walk_lines(node, (), loaded, text.splitlines(), issues)
    if issues:
        raise JobError(issues)
    return loaded


MAX_EXPANDED_NODES = 10_000  # a full job has a few hundred values; anchors and aliases may repeat some of them


def _refuse_alias_expansion(root: yaml.Node, source: str) -> None:
    """Raise JobError when aliases (`*name`) expand the document beyond MAX_EXPANDED_NODES values or into itself.

    The composed graph shares aliased nodes, so it stays small; everything after it (line map, placeholders, schema)
    walks the expanded tree, which a few hundred bytes of nested aliases make exponential (a "billion laughs").
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _Expansion(node, "an alias refers to a node that contains it")
        open_nodes.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_EXPANDED_NODES:
                raise _Expansion(node, f"anchors and aliases expand it to more than {MAX_EXPANDED_NODES} values")
        open_nodes.discard(key)
        sizes[key] = total
        return total

    try:
        size(root)
    except _Expansion as exc:
        raise JobError(
            [
                Issue(
                    path="",
                    message=f"the YAML is refused: {exc.reason}",
                    hint="write the values out instead of nesting aliases (`*name`) of anchors (`&name`)",
                    line=exc.node.start_mark.line + 1,
                    source=source,
                )
            ]
        ) from None
    except RecursionError:
        raise JobError(
            [Issue(path="", message="the YAML is nested too deeply", hint="a job is a few levels deep", source=source)]
        ) from None


class _Expansion(Exception):
    def __init__(self, node: yaml.Node, reason: str) -> None:
        super().__init__(reason)
        self.node = node
        self.reason = reason


def load_job_file(path: str | Path) -> LoadedJob:
    """Read a job file; a missing or unreadable file is a usage error."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(
            f"job file not found: {file}",
            hint="create one with `factory config --backend deepspeed --stage sft -o job.yaml`",
        )
    return parse_yaml_text(file.read_text(encoding="utf-8"), str(file))


def _comment_on(line_text: str) -> str | None:
    # A trailing `# ...` after the value: the template's one-line explanation of the field.
    match = re.search(r"\s#\s?(.*)$", line_text)
    return match.group(1).strip() if match else None


def _walk_lines(
    node: yaml.Node,
    path: PathKey,
    loaded: LoadedJob,
    text_lines: list[str],
    issues: list[Issue],
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            child = (*path, key)
            line = key_node.start_mark.line + 1
            if key in seen:
                issues.append(
                    Issue(
                        path=format_path(child),
                        message="key given twice in the same section; the second would silently win",
                        hint="keep one of them",
                        line=line,
                        source=loaded.source,
                    )
                )
            seen.add(key)
            loaded.lines[child] = line
            comment = _comment_on(text_lines[line - 1]) if line - 1 < len(text_lines) else None
            if comment:
                loaded.comments[child] = comment
            _walk_lines(value_node, child, loaded, text_lines, issues)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            line = item.start_mark.line + 1
            loaded.lines[child] = line
            comment = _comment_on(text_lines[line - 1]) if line - 1 < len(text_lines) else None
            if comment and not isinstance(item, yaml.MappingNode | yaml.SequenceNode):
                loaded.comments[child] = comment
            _walk_lines(item, child, loaded, text_lines, issues)


def parse_override(text: str) -> tuple[PathKey, Any]:
    """`train.learning_rate=2e-5` -> (('train', 'learning_rate'), 2e-05). Values are YAML."""
    if "=" not in text:
        raise UsageError(
            f"override `{text}` is not of the form key.path=value",
            hint="for example: train.learning_rate=2e-5 or data.max_length=1024",
        )
    key, raw_value = text.split("=", 1)
    parts: list[str | int] = []
    for part in key.strip().split("."):
        if not part:
            raise UsageError(f"override `{text}` has an empty key segment", hint="write key.path=value")
        parts.append(int(part) if part.isdigit() else part)
    if not isinstance(parts[0], str):
        raise UsageError(f"override `{text}` must start with a section name", hint="e.g. train.epochs=1")
    try:
        value = yaml.load(raw_value, Loader=FactoryLoader) if raw_value.strip() else ""
    except yaml.YAMLError:
        value = raw_value
    return tuple(parts), value


def apply_overrides(loaded: LoadedJob, overrides: Sequence[str]) -> LoadedJob:
    """Apply `key.path=value` overrides in order; they are validated later exactly like the file."""
    for text in overrides:
        path, value = parse_override(text)
        _set_path(loaded.data, path, value, text)
        loaded.overridden.add(path)
    return loaded


def _set_path(data: dict[str, Any], path: PathKey, value: Any, text: str) -> None:
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        nxt = path[depth + 1]
        if isinstance(node, dict):
            if part not in node or node[part] is None:
                node[part] = [] if isinstance(nxt, int) else {}
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int):
            if part >= len(node):
                raise UsageError(
                    f"override `{text}`: index {part} is past the end of {format_path(path[:depth])}",
                    hint=f"the list has {len(node)} item(s)",
                )
            node = node[part]
        else:
            raise UsageError(
                f"override `{text}`: {format_path(path[: depth + 1])} is not a section",
                hint="only mappings and lists can be descended into",
            )
    last = path[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list) and isinstance(last, int):
        if last == len(node):
            node.append(value)
        elif last < len(node):
            node[last] = value
        else:
            raise UsageError(
                f"override `{text}`: index {last} is out of range", hint=f"the list has {len(node)} item(s)"
            )
    else:
        raise UsageError(f"override `{text}`: {format_path(path[:-1])} is not a section", hint="check the key path")


def iter_values(data: Any, path: PathKey = ()) -> Iterator[tuple[PathKey, Any]]:
    """Every leaf value of a nested dict/list with its path."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from iter_values(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from iter_values(value, (*path, index))
    else:
        yield path, data


def find_placeholders(loaded: LoadedJob) -> list[Issue]:
    """Every value still holding `***`: one error each, naming the field and what to put there."""
    issues = []
    for path, value in iter_values(loaded.data):
        if isinstance(value, str) and PLACEHOLDER in value:
            comment = loaded.comments.get(path)
            hint = comment.replace(PLACEHOLDER, "").strip(" :-") if comment else None
            issues.append(
                loaded.locate(
                    Issue(
                        path=format_path(path),
                        message=f"still holds the placeholder `{PLACEHOLDER}`: this field must be set",
                        hint=hint or "replace *** with your value",
                    ),
                    path,
                )
            )
    return issues
