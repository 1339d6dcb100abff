"""Where a dataset named in a job comes from: a local file, a registry entry, a dataset_info.json entry or the Hub."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory_cli.config.errors import UsageError
from factory_cli.config.schema import DatasetSpec
from factory_cli.data.formats import FormatSpec
from factory_cli.data.readers import SUPPORTED_SUFFIXES, read_rows
from factory_cli.registry.datasets import DatasetEntry, find_dataset, load_dataset_registry


class DatasetNotFound(UsageError):
    """A dataset reference that resolves to nothing, with a hint."""


@dataclass(frozen=True)
class ResolvedDataset:
    """A dataset reference resolved to a concrete source and the rules to read its rows."""

    spec: DatasetSpec
    entry: DatasetEntry
    format_spec: FormatSpec

    @property
    def file(self) -> Path | None:
        return self.entry.file

    @property
    def label(self) -> str:
        return str(self.entry.file) if self.entry.file else (self.entry.hf_hub_url or self.entry.name)


def find_local_path(path: str, base_dirs: Sequence[Path]) -> Path | None:
    """`path` as given, else relative to each base directory (the job file's folder)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return candidate if candidate.exists() else None
    for base in (Path.cwd(), *base_dirs):
        if (base / candidate).exists():
            return (base / candidate).resolve()
    return None


def _looks_like_hub_id(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not path.endswith(SUPPORTED_SUFFIXES) and not path.startswith(".")


def resolve_dataset(
    spec: DatasetSpec, dataset_dir: str | None = None, base_dirs: Sequence[Path] = ()
) -> ResolvedDataset:
    """Resolve one `data.train` / `data.eval` item; raises DatasetNotFound."""
    info_dir = find_local_path(dataset_dir, base_dirs) if dataset_dir else None
    if dataset_dir and info_dir is None:
        raise DatasetNotFound(f"data.dataset_dir not found: {dataset_dir}", "give the folder with dataset_info.json")
    local = find_local_path(spec.path, base_dirs)
    if local is not None:
        entry = DatasetEntry(name=local.name, file=local, split=spec.split, format=spec.format)
    else:
        found = find_dataset(spec.path, info_dir)
        if found is not None:
            entry = found
        elif _looks_like_hub_id(spec.path):
            entry = DatasetEntry(name=spec.path, hf_hub_url=spec.path, split=spec.split, format=spec.format)
        else:
            names = list(load_dataset_registry())
            close = difflib.get_close_matches(spec.path, names, n=1, cutoff=0.5)
            hint = f"did you mean `{close[0]}`?" if close else "see `factory list datasets`, or give a file path"
            raise DatasetNotFound(f"dataset `{spec.path}` is not a file, a registry name or a Hub id", hint)
    entry = _apply_spec(entry, spec)
    return ResolvedDataset(spec=spec, entry=entry, format_spec=entry.format_spec(system=spec.system))


def _apply_spec(entry: DatasetEntry, spec: DatasetSpec) -> DatasetEntry:
    """What the job says about a dataset wins over what the registry says."""
    update: dict[str, object] = {}
    if spec.format != "auto":
        update["format"] = spec.format
    if spec.columns:
        update["columns"] = {**entry.columns, **spec.columns}
    if spec.tags:
        update["tags"] = {**entry.tags, **spec.tags}
    if spec.ranking:
        update["ranking"] = True
    if "split" in spec.model_fields_set:
        update["split"] = spec.split
    return entry.model_copy(update=update) if update else entry


def raw_rows(
    entry: DatasetEntry, limit: int | None, *, hint: str, error: type[UsageError] = UsageError
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number from 1, raw row) of a local file (read lazily) or a Hub dataset, at most `limit` of them.

    A Hub dataset loads in offline mode when the Hub is unreachable (the cache, or a quick failure instead of
    minutes of retries); a load failure raises `error` with `hint`. A bad local file raises the reader's ReadError.
    """
    if entry.file is not None:
        yield from read_rows(entry.file, limit)
        return
    from factory_cli.hub import offline_unless_reachable

    try:
        from datasets import load_dataset

        with offline_unless_reachable():
            hub = load_dataset(entry.hf_hub_url, entry.subset, split=entry.split, data_dir=entry.folder)
    except Exception as exc:  # offline, missing, private: all the user's to fix
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"cannot load the Hub dataset `{entry.hf_hub_url}` (split {entry.split}): {reason}", hint) from None
    for number, row in enumerate(hub, start=1):
        if limit is not None and number > limit:
            return
        yield number, dict(row)
