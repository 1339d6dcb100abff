"""The dataset registry: `datasets_registry/*.yaml` (one dataset per file) plus LlamaFactory `dataset_info.json` files.

An entry is data, not code: where the rows are (a local file or a Hub id) and how to read them (format, columns,
tags, ranking). A LlamaFactory `dataset_info.json` is accepted unchanged, so its entries work as is.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from factory_cli.config.errors import UsageError
from factory_cli.config.load import load_data_yaml
from factory_cli.data.formats import FORMATS, OPENAI_TAGS, FormatSpec
from factory_cli.paths import resource_dir

Stage = Literal["pt", "sft", "dpo", "grpo"]
DATASET_INFO = "dataset_info.json"

# LlamaFactory columns: once an entry lists `columns`, the ones it leaves out are not read (DatasetAttr.join).
_LF_COLUMNS = ("prompt", "query", "response", "history", "messages", "system", "tools", "chosen", "rejected")
_LF_FORMATTING = ("alpaca", "sharegpt", "openai")
_LF_KEYS = {
    "hf_hub_url",
    "ms_hub_url",
    "om_hub_url",
    "script_url",
    "cloud_file_name",
    "file_name",
    "formatting",
    "ranking",
    "subset",
    "split",
    "folder",
    "num_samples",
    "columns",
    "tags",
}


class DatasetRegistryError(UsageError):
    """A registry file or dataset_info.json that cannot be read as datasets: the user's to fix, never a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "fix the file: each dataset is an object such as {file_name, formatting, columns}")


class DatasetEntry(BaseModel):
    """One dataset: its source (file or Hub) and how its rows read (format, columns, tags, ranking)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    stage: Stage | None = None
    file: Path | None = None
    hf_hub_url: str | None = None
    subset: str | None = None
    split: str = "train"
    folder: str | None = None
    format: str = "auto"
    ranking: bool = False
    columns: dict[str, str] = {}
    tags: dict[str, str] = {}
    num_samples: int | None = None

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value != "auto" and value not in FORMATS:
            raise ValueError(f"unknown format `{value}`; known: auto, {', '.join(FORMATS)}")
        return value

    def format_spec(self, system: str | None = None) -> FormatSpec:
        """The rules to convert this dataset's rows; `system` is the default system prompt."""
        return FormatSpec(
            format=self.format,
            columns=dict(self.columns),
            tags=dict(self.tags),
            ranking=self.ranking,
            system=system,
        )


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(entry)"
        parts.append(f"{loc}: {item['msg']}")
    return "; ".join(parts)


def _entry_from_yaml(path: Path) -> DatasetEntry:
    try:
        data = load_data_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DatasetRegistryError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetRegistryError(f"{path}: expected a mapping with `name` and `file` or `hf_hub_url`")
    if isinstance(data.get("file"), str):
        data["file"] = (path.parent / data["file"]).resolve()
    try:
        entry = DatasetEntry(**data)
    except ValidationError as exc:
        raise DatasetRegistryError(f"{path}: {_describe(exc)}") from None
    except TypeError as exc:
        raise DatasetRegistryError(f"{path}: {exc}") from None
    if entry.file is None and entry.hf_hub_url is None:
        raise DatasetRegistryError(f"{path}: dataset `{entry.name}` needs `file` or `hf_hub_url`")
    return entry


def _lf_entry(name: str, attr: Any, base: Path, source: Path) -> DatasetEntry:
    """One LlamaFactory dataset_info.json entry -> DatasetEntry (LlamaFactory's own precedence and defaults)."""
    if not isinstance(attr, dict):
        raise DatasetRegistryError(f"{source}: dataset `{name}`: expected an object, got {type(attr).__name__}")
    unknown = sorted(set(attr) - _LF_KEYS)
    if unknown:
        raise DatasetRegistryError(
            f"{source}: dataset `{name}`: unknown key(s) {unknown}; LlamaFactory keys: {sorted(_LF_KEYS)}"
        )
    notes = []
    file = hub = None
    if attr.get("hf_hub_url"):  # LlamaFactory: a hub url wins over script_url / file_name
        hub = str(attr["hf_hub_url"])
    elif attr.get("file_name"):
        file = (base / str(attr["file_name"])).resolve()
    for key in ("ms_hub_url", "om_hub_url", "script_url", "cloud_file_name"):
        if attr.get(key):
            notes.append(f"{key}={attr[key]} is not supported and was ignored")
    if file is None and hub is None:
        notes.append("no hf_hub_url or file_name: nothing to load")

    formatting = attr.get("formatting", "alpaca")
    if formatting not in _LF_FORMATTING:
        raise DatasetRegistryError(
            f"{source}: dataset `{name}`: formatting `{formatting}` is not one of {list(_LF_FORMATTING)}"
        )
    columns = attr.get("columns") or {}
    tags = attr.get("tags") or {}
    if not isinstance(columns, dict) or not isinstance(tags, dict):
        raise DatasetRegistryError(f"{source}: dataset `{name}`: `columns` and `tags` must be objects")
    given = {str(k): str(v) if v is not None else "" for k, v in columns.items()}
    if given:
        given = {**{col: "" for col in _LF_COLUMNS}, **given}
    for media in ("images", "videos", "audios", "kto_tag"):
        if given.get(media):
            notes.append(f"column `{media}` is not supported and is ignored")
    tag_map = {str(k): str(v) for k, v in tags.items() if v is not None}
    if formatting == "openai":
        tag_map = {**OPENAI_TAGS, **tag_map}
    ranking = bool(attr.get("ranking", False))
    if ranking:
        stage: Stage = "dpo"
    elif formatting == "alpaca" and given.get("prompt") and not given.get("response") and not given.get("query"):
        stage = "pt"  # LlamaFactory's pre-training entries map only `prompt` (to the text column)
    else:
        stage = "sft"
    fmt = "alpaca" if formatting == "alpaca" else "sharegpt"
    description = f"LlamaFactory dataset_info.json entry ({source.name})"
    if notes:
        description += "; " + "; ".join(notes)
    try:
        return DatasetEntry(
            name=name,
            description=description,
            stage=stage,
            file=file,
            hf_hub_url=hub,
            subset=attr.get("subset"),
            split=attr.get("split") or "train",
            folder=attr.get("folder"),
            format=fmt,
            ranking=ranking,
            columns=given,
            tags=tag_map,
            num_samples=attr.get("num_samples"),
        )
    except ValidationError as exc:
        raise DatasetRegistryError(f"{source}: dataset `{name}`: {_describe(exc)}") from None


def entries_from_dataset_info(path: Path) -> dict[str, DatasetEntry]:
    """Every entry of a LlamaFactory dataset_info.json; file names resolve against its folder."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetRegistryError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise DatasetRegistryError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise DatasetRegistryError(f"{path}: expected an object of dataset_name -> description")
    return {str(name): _lf_entry(str(name), attr, path.parent, path) for name, attr in data.items()}


def _load(directory: Path) -> dict[str, DatasetEntry]:
    if not directory.is_dir():
        raise DatasetRegistryError(f"dataset registry folder not found: {directory}")
    entries: dict[str, DatasetEntry] = {}
    origin: dict[str, Path] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        entry = _entry_from_yaml(path)
        if entry.name in entries:
            raise DatasetRegistryError(f"{path}: dataset `{entry.name}` is already defined in {origin[entry.name]}")
        entries[entry.name] = entry
        origin[entry.name] = path
    info = directory / DATASET_INFO
    if info.is_file():
        for name, entry in entries_from_dataset_info(info).items():
            if name in entries:
                raise DatasetRegistryError(f"{info}: dataset `{name}` is already defined in {origin[name]}")
            entries[name] = entry
    return entries


@functools.lru_cache(maxsize=1)
def _load_default() -> dict[str, DatasetEntry]:
    return _load(resource_dir("datasets_registry"))


def load_dataset_registry(directory: Path | None = None) -> dict[str, DatasetEntry]:
    """Every dataset in the registry folder (default: the project's datasets_registry/, cached)."""
    if directory is None:
        return dict(_load_default())
    return _load(Path(directory))


def find_dataset(name: str, dataset_dir: Path | None = None) -> DatasetEntry | None:
    """A dataset by name: `dataset_dir`/dataset_info.json first (when given), then the registry; None if unknown."""
    if dataset_dir is not None:
        info = Path(dataset_dir) / DATASET_INFO
        if info.is_file():
            found = entries_from_dataset_info(info).get(name)
            if found is not None:
                return found
    return load_dataset_registry().get(name)
