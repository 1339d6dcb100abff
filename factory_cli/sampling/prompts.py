"""The prompts to sample for: every row of the datasets as a canonical grpo row (prompt messages + the other
columns, such as `answer`), each with a stable id. Invalid rows are counted and reported, never silently dropped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory_cli.config.errors import UsageError
from factory_cli.config.schema import DatasetSpec

ID_KEYS = ("id", "prompt_id", "uid")
INVALID_EXAMPLES = 3


@dataclass(frozen=True)
class Prompt:
    """One prompt: its id (the row's own `id`, else `<dataset>:<row number>`) and its canonical grpo row."""

    prompt_id: str
    row: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.row["prompt"])

    def columns(self) -> dict[str, Any]:
        """What a reward receives besides the completion: every column but the prompt."""
        return {key: value for key, value in self.row.items() if key != "prompt"}


@dataclass
class PromptSet:
    """The prompts read, and the rows that could not be used (with where and why)."""

    prompts: list[Prompt] = field(default_factory=list)
    invalid: int = 0
    invalid_examples: list[str] = field(default_factory=list)


def _prompt_id(raw: dict[str, Any], label: str, number: int) -> str:
    own = next((raw[key] for key in ID_KEYS if isinstance(raw.get(key), str | int) and raw[key] != ""), None)
    return str(own) if own is not None else f"{label}:{number}"


def read_prompts(
    specs: Sequence[DatasetSpec], limit: int | None, dataset_dir: str | None = None, base_dirs: Sequence[Path] = ()
) -> PromptSet:
    """At most `limit` prompts from `specs`, in order; UsageError when a dataset cannot be read or none is usable."""
    from factory_cli.data.formats import RowError, convert_row
    from factory_cli.data.sources import raw_rows, resolve_dataset

    found = PromptSet()
    seen: set[str] = set()
    for spec in specs:
        resolved = resolve_dataset(spec, dataset_dir, base_dirs)
        label = spec.path
        hint = "download it or give a local file (json, jsonl, csv or parquet)"
        for number, raw in raw_rows(resolved.entry, spec.max_samples, hint=hint):
            if limit is not None and len(found.prompts) >= limit:
                return found
            try:
                row = convert_row(raw, resolved.format_spec, "grpo")
            except RowError as exc:
                found.invalid += 1
                if len(found.invalid_examples) < INVALID_EXAMPLES:
                    found.invalid_examples.append(f"{label} row {number}: {exc.message}")
                continue
            prompt_id = _prompt_id(raw, label, number)
            if prompt_id in seen:
                raise UsageError(
                    f"{label} row {number}: prompt id `{prompt_id}` is used twice",
                    f"give each row a unique `{ID_KEYS[0]}` (or drop the column: rows are then named by number)",
                )
            seen.add(prompt_id)
            found.prompts.append(Prompt(prompt_id, row))
    if not found.prompts:
        first = f" (first: {found.invalid_examples[0]})" if found.invalid_examples else ""
        raise UsageError(
            f"no usable prompt in {', '.join(s.path for s in specs)}{first}",
            "sampling reads prompts like stage grpo does: a `prompt` (or messages ending with a user turn), "
            "and the `answer` the rewards compare with",
        )
    return found
