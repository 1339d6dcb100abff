"""Where a model's files are, or will come from: a local path first, then a hub's cache, then the hub `model.source`
names (docs/architecture.md §11). Pure (files only) until `model_unavailable`, which probes the hub once with a short
timeout, so `factory check` and a run refuse in seconds, with one message, when nothing can serve the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from factory_cli.config.errors import UsageError
from factory_cli.modeling.hubs import HUBS, HubName, default_hub, describe_cache, hub_order
from factory_cli.modeling.sources import ModelSource, local_candidates, resolve_model_source

if TYPE_CHECKING:
    from factory_cli.config.schema import ModelSection

Where = Literal["local", "cache", "remote", "missing"]


@dataclass(frozen=True)
class ModelLocation:
    """A resolved model reference and where its files are: on disk (`local`, `cache`), to download (`remote`), or
    nowhere this job may look (`missing`, with `model.source: local`)."""

    reference: str
    source: ModelSource
    where: Where
    path: Path | None = None  # the local file or folder (local, cache)
    hub: HubName | None = None  # the hub of the cache, or the one to download from
    repo_id: str | None = None  # the id on that hub
    searched: tuple[HubName, ...] = ()  # the hub caches looked in
    chosen_by: str | None = None  # the variable that made `auto` pick this hub
    local_paths: tuple[str, ...] = ()  # the paths the reference could have named on disk
    revision: str | None = None  # model.revision

    def looked_in(self) -> str:
        """Every place searched, for a message."""
        return ", ".join([*self.local_paths, describe_cache(self.searched)])

    def describe(self) -> str:
        """Where the weights come from, for `factory check`: `from local folder ...`, `from the ... cache ...`,
        `to download: ...`, or `not on this machine ...`."""
        if self.where == "local":
            return f"from local {'file' if self.path is not None and self.path.is_file() else 'folder'} {self.path}"
        if self.where == "cache":
            assert self.hub is not None
            return f"from the {HUBS[self.hub].short} cache {self.path}"
        if self.where == "missing":
            return f"not on this machine (model.source: local; looked in {describe_cache(self.searched)})"
        assert self.hub is not None
        hub = HUBS[self.hub]
        why = f", chosen by {self.chosen_by}" if self.chosen_by else ""
        where = f"{hub.label} ({hub.endpoint()}{why})"
        return f"to download: {self.repo_id} from {where}; not in {describe_cache(self.searched)}"


def sibling_model(model: ModelSection, reference: str) -> ModelSection:
    """Another model of the job (the DPO reference) with the job model's source, revision and trust settings."""
    return model.model_copy(update={"name_or_path": reference, "gguf_file": None})


def locate_model(model: ModelSection, base_dirs: Sequence[Path] = ()) -> ModelLocation:
    """Where `model.name_or_path` is: a local path, a complete copy in a hub's cache, else the hub to download from.

    Raises the UsageError of resolve_model_source for a reference that names nothing (a missing path, a typo)."""
    source = resolve_model_source(model, base_dirs)
    reference, revision = model.name_or_path, model.revision
    if source.kind in ("local", "gguf"):
        return ModelLocation(reference, source, "local", Path(source.path), revision=revision)
    order = tuple(hub_order(model.source))
    for name in order:
        repo_id = source.repo_id(name)
        folder = HUBS[name].cached(repo_id, revision, source.gguf_file)
        if folder is not None:
            return ModelLocation(reference, source, "cache", folder, name, repo_id, order, revision=revision)
    local_paths = tuple(dict.fromkeys(str(path) for path in local_candidates(reference, base_dirs)))
    if model.source == "local":
        return ModelLocation(reference, source, "missing", searched=order, local_paths=local_paths, revision=revision)
    hub, variable = (order[0], None) if model.source != "auto" else default_hub()
    repo_id = source.repo_id(hub)
    return ModelLocation(reference, source, "remote", None, hub, repo_id, order, variable, local_paths, revision)


def _fixes(location: ModelLocation) -> str:
    """How to get the model onto this machine."""
    wanted = location.source.registry_name or location.source.path
    hub = HUBS[location.hub] if location.hub is not None else HUBS["hf"]
    others = [name for name in ("hf", "modelscope", "modelers") if name != location.hub]
    return (
        "use a local checkpoint folder instead (model.name_or_path, or --model); or on a connected machine run "
        f"`factory download {wanted} --to DIR` and copy DIR here; or set {hub.endpoint_var} to a mirror you can "
        f"reach; or set model.source: {' or '.join(others)}"
    )


def model_unavailable(location: ModelLocation) -> UsageError | None:
    """Why the model cannot be had here (missing, hub offline or unreachable, hub library not installed), as the one
    message a user sees; None when its files are on disk or a download can start. Probes the hub at most once."""
    name = location.reference
    if location.where in ("local", "cache"):
        return None
    if location.where == "missing":
        return UsageError(
            f"model `{name}` is not on this machine and model.source is local (looked in {location.looked_in()})",
            _fixes(location),
        )
    assert location.hub is not None
    hub = HUBS[location.hub]
    if not hub.installed():
        return UsageError(
            f"model `{name}` is to come from {hub.label}, but its library `{hub.package}` is not installed",
            f"pip install {hub.pip}; or {_fixes(location)}",
        )
    why = hub.unavailable()
    if why is None:
        return None
    where = f"{location.repo_id} on {hub.label} ({hub.endpoint()})"
    return UsageError(
        f"model `{name}` is not on this machine and cannot be downloaded: {why}. Looked in {location.looked_in()}; "
        f"it would come from {where}",
        _fixes(location),
    )
