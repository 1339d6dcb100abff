"""What a model reference names: a registry entry, a local directory, a GGUF file or a Hub id. Pure: `factory check`
resolves sources with it (no torch, no transformers). Where its files are or will come from (a local copy, a hub's
cache, a hub) is modeling/locate.py's answer."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from factory_cli.config.errors import UsageError

if TYPE_CHECKING:
    from factory_cli.config.schema import ModelSection

SourceKind = Literal["registry", "local", "hub", "gguf"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelSource:
    """A resolved `model.name_or_path`: what kind of source it is and where its files are."""

    kind: SourceKind
    path: str  # hub id, local dir, or (kind gguf) the .gguf file path
    gguf_file: str | None = None  # a .gguf file inside a Hub repo or local dir
    registry_name: str | None = None
    lora_targets: tuple[str, ...] | None = None  # the registry's default LoRA targets, if known
    hub_ids: tuple[tuple[str, str], ...] = ()  # (hub, id) where the registry names another id than `path`

    def repo_id(self, hub: str) -> str:
        """The model's id on `hub` (hf, modelscope, modelers): the registry's own for that hub, else `path`."""
        return dict(self.hub_ids).get(hub, self.path)

    @property
    def is_gguf(self) -> bool:
        """True when the weights come from a GGUF file and need converting once."""
        return self.kind == "gguf" or self.gguf_file is not None


def local_candidates(raw: str, base_dirs: Sequence[Path]) -> list[Path]:
    """Where a relative path may live: the working directory, then each base dir."""
    path = Path(raw).expanduser()
    if path.is_absolute():
        return [path]
    return [Path.cwd() / path, *(Path(base) / path for base in base_dirs)]


def _find_local(raw: str, base_dirs: Sequence[Path]) -> Path | None:
    """The first existing file or directory `raw` names, resolved; None when there is none."""
    for candidate in local_candidates(raw, base_dirs):
        if candidate.exists():
            return candidate.resolve()
    return None


def _looks_like_path(raw: str) -> bool:
    """Spelled as a filesystem path rather than a Hub id or registry name."""
    return raw.startswith(("/", "./", "../", "~")) or "\\" in raw or raw.lower().endswith(".gguf")


def _registry_hint(raw: str) -> str:
    """`did you mean ...?` from the registry names, else a pointer to the list."""
    from factory_cli.registry.models import load_model_registry

    names = sorted(load_model_registry())
    close = difflib.get_close_matches(raw.lower(), [n.lower() for n in names], n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(f"`{n}`" for n in close) + "? (factory list models)"
    return "use a registry name (factory list models), an existing directory, a .gguf file, or a Hub id owner/name"


def _gguf_in_dir(directory: Path, gguf_file: str) -> Path:
    """`directory/gguf_file`, or a UsageError listing the .gguf files that are there."""
    path = directory / gguf_file
    if path.is_file():
        return path
    present = sorted(p.name for p in directory.glob("*.gguf"))
    listing = ", ".join(present) if present else "none"
    raise UsageError(
        f"model.gguf_file `{gguf_file}` is not in {directory}",
        hint=f".gguf files there: {listing}",
    )


def resolve_model_source(model: ModelSection, base_dirs: Sequence[Path] = ()) -> ModelSource:
    """Resolve `model.name_or_path` (+ `gguf_file`): local path, registry entry, or Hub id. Pure, no torch."""
    from factory_cli.registry.models import find_model, gguf_path

    raw = model.name_or_path.strip()
    local = _find_local(raw, base_dirs)
    spec = find_model(raw)
    if model.gguf_file:
        if local is not None and local.is_dir():
            _gguf_in_dir(local, model.gguf_file)
            return ModelSource("local", str(local), gguf_file=model.gguf_file)
        if spec is not None and spec.gguf is None:
            targets = tuple(spec.lora_targets)
            ids = tuple(sorted(spec.hub_ids.items()))
            return ModelSource("registry", spec.hf_id, model.gguf_file, spec.name, targets, ids)
        if _HUB_ID.match(raw) and local is None:
            return ModelSource("hub", raw, gguf_file=model.gguf_file)
        raise UsageError(
            f"model.gguf_file needs model.name_or_path to be a directory or a Hub id, not `{raw}`",
            hint="or give the .gguf file itself as model.name_or_path and drop gguf_file",
        )
    if local is not None:
        if local.is_dir():
            ggufs = sorted(p.name for p in local.glob("*.gguf"))
            if ggufs and not (local / "config.json").is_file():
                raise UsageError(
                    f"model.name_or_path `{raw}` holds GGUF files but no config.json",
                    hint=f"set model.gguf_file to one of: {', '.join(ggufs)}",
                )
            return ModelSource("local", str(local))
        if local.suffix.lower() == ".gguf":
            return ModelSource("gguf", str(local))
        raise UsageError(
            f"model.name_or_path `{raw}` is a file but not a .gguf file ({local})",
            hint="give the checkpoint directory (with config.json), a .gguf file, a registry name or a Hub id",
        )
    if spec is not None:
        targets = tuple(spec.lora_targets)
        if spec.gguf is not None:
            return ModelSource("gguf", str(gguf_path(spec)), registry_name=spec.name, lora_targets=targets)
        ids = tuple(sorted(spec.hub_ids.items()))
        return ModelSource("registry", spec.hf_id, registry_name=spec.name, lora_targets=targets, hub_ids=ids)
    where = ", ".join(str(c.parent) for c in local_candidates(raw, base_dirs))
    if _looks_like_path(raw):
        raise UsageError(f"model.name_or_path `{raw}` does not exist (looked in {where})", hint=_registry_hint(raw))
    if _HUB_ID.match(raw):
        first = raw.split("/", 1)[0]
        if _find_local(first, base_dirs) is not None:
            # `models/my-run` with `models/` present is a missing local checkpoint, not a Hub repo.
            raise UsageError(
                f"model.name_or_path `{raw}` does not exist, though `{first}/` does (looked in {where})",
                hint="check the directory name; a Hub id would be owner/name with no such local folder",
            )
        return ModelSource("hub", raw)
    raise UsageError(
        f"model.name_or_path `{raw}` is not a registry model, a local path or a Hub id", hint=_registry_hint(raw)
    )


def tokenizer_reference(model: ModelSection, base_dirs: Sequence[Path]) -> str | None:
    """`model.tokenizer` as something from_pretrained takes wherever the loading process runs: a local folder
    (relative to the working directory, then to the job file's folder) as an absolute path, else as given (a Hub
    id); None when the job names no tokenizer of its own."""
    from factory_cli.data.sources import find_local_path

    if not model.tokenizer:
        return None
    local = find_local_path(model.tokenizer, base_dirs)
    return str(local) if local is not None else model.tokenizer
