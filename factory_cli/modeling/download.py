"""Getting a model's files onto this machine: `fetch_model`, the one path from `model:` to a folder that
`from_pretrained` loads with no network (train, eval, export and chat all call it), and `download_model`, the model
half of `factory download` (factory_cli/download.py). What a run needs of a repository is decided by `select_files`
(pure); the hub libraries are imported only to download (docs/architecture.md §11).
"""

from __future__ import annotations

import fnmatch
import hashlib
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory_cli.config.errors import UsageError
from factory_cli.config.schema import ModelSection
from factory_cli.modeling.hubs import HUBS, Hub, missing_model_files
from factory_cli.modeling.locate import ModelLocation, locate_model, model_unavailable
from factory_cli.modeling.sources import ModelSource

# What a run reads besides weights: config, generation config, tokenizer (json, sentencepiece, tiktoken, BPE merges),
# chat template, license. Weights are safetensors, else the PyTorch .bin shards; GGUF, ONNX, TF, Flax and the
# `original/` consolidated checkpoints are never fetched.
RUN_FILES = ("*.json", "*.model", "*.tiktoken", "*.txt", "*.jinja", "LICENSE*", "README.md")
REMOTE_CODE_FILES = ("*.py",)
SAFETENSORS = ("*.safetensors",)
TORCH_BIN = ("pytorch_model*.bin",)
HASH_CHUNK = 8 * 2**20

Progress = Callable[[str], None]


def select_files(names: Sequence[str], *, trust_remote_code: bool = False, gguf_file: str | None = None) -> list[str]:
    """The files of a repository a run needs, from its file list: top-level config, tokenizer and chat template, and
    one weight format (safetensors, else .bin); just the one file for a GGUF source. Pure."""
    if gguf_file is not None:
        return [gguf_file] if gguf_file in names else []
    top = [name for name in names if "/" not in name]
    patterns = [*RUN_FILES, *(REMOTE_CODE_FILES if trust_remote_code else ())]
    has_safetensors = any(fnmatch.fnmatch(name, SAFETENSORS[0]) for name in top)
    patterns += SAFETENSORS if has_safetensors else TORCH_BIN
    return sorted(name for name in top if any(fnmatch.fnmatch(name, pattern) for pattern in patterns))


def _patterns(*, trust_remote_code: bool, weights: Sequence[str]) -> list[str]:
    """Glob patterns for a hub library that downloads by pattern (no file list asked first)."""
    return [*RUN_FILES, *(REMOTE_CODE_FILES if trust_remote_code else ()), *weights]


@dataclass
class Fetched:
    """What a download wrote: the folder, each file with its size, and how many were checked against the hub."""

    folder: Path
    files: dict[str, int] = field(default_factory=dict)
    verified: int = 0


def _file_digest(path: Path, algorithm: str, prefix: bytes = b"") -> str:
    digest = hashlib.new(algorithm, prefix)
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(folder: Path, published: Mapping[str, Any], *, hashes: bool) -> int:
    """Check each file against the size (and, with `hashes`, the sha256 of LFS files, the git blob id of the others)
    the hub publishes; raise UsageError naming the first that differs. Returns how many were checked."""
    for name, meta in published.items():
        path = folder / name
        size = getattr(meta, "size", None)
        if size is not None and path.stat().st_size != size:
            raise UsageError(
                f"{path} is {path.stat().st_size} bytes, the hub says {size}", "run the same download again to resume"
            )
        if not hashes:
            continue
        lfs = getattr(meta, "lfs", None)
        expected, got = (None, None)
        if lfs is not None and getattr(lfs, "sha256", None):
            expected, got = lfs.sha256, _file_digest(path, "sha256")
        elif getattr(meta, "blob_id", None):
            prefix = f"blob {path.stat().st_size}\0".encode()
            expected, got = meta.blob_id, _file_digest(path, "sha1", prefix)
        if expected is not None and got != expected:
            path.unlink()
            raise UsageError(f"{path} does not match the hub's hash (removed it)", "run the same download again")
    return len(published)


def _hf_download(
    hub: Hub, source: ModelSource, repo_id: str, revision: str | None, to: Path | None, *, trust: bool, hashes: bool
) -> Fetched:
    """Download through huggingface_hub: list the repository, fetch what a run needs, check it."""
    from huggingface_hub import HfApi, snapshot_download

    info = HfApi(endpoint=hub.endpoint()).model_info(repo_id, revision=revision, files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings or []}
    wanted = select_files(list(siblings), trust_remote_code=trust, gguf_file=source.gguf_file)
    if not wanted:
        raise UsageError(
            f"{repo_id} on {hub.label} has no files a run can load (no config.json with safetensors or .bin weights)",
            "check the id; a GGUF-only repository needs model.gguf_file",
        )
    folder = Path(
        snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=wanted,
            local_dir=to,
            cache_dir=hub.cache_dir(),  # the folder modeling/hubs.py looks in, whenever the library read its variable
            endpoint=hub.endpoint(),
            max_workers=4,
        )
    )
    published = {name: siblings[name] for name in wanted}
    verified = verify_files(folder, published, hashes=hashes)
    return Fetched(folder, {name: (folder / name).stat().st_size for name in wanted}, verified)


def _sdk_download(hub: Hub, repo_id: str, revision: str | None, to: Path | None, *, trust: bool) -> Fetched:
    """Download through the hub's own library (modelscope, openmind_hub), which selects by pattern."""
    module: Any = __import__(hub.package)
    kwargs: dict[str, Any] = {"local_dir": str(to)} if to is not None else {}
    if revision is not None:
        kwargs["revision"] = revision
    folder = Path(
        module.snapshot_download(
            repo_id, allow_patterns=_patterns(trust_remote_code=trust, weights=SAFETENSORS), **kwargs
        )
    )
    if any("weights" in item for item in missing_model_files(folder)):  # no safetensors: the .bin shards
        folder = Path(module.snapshot_download(repo_id, allow_patterns=list(TORCH_BIN), **kwargs))
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    return Fetched(folder, files)


def download_from_hub(
    location: ModelLocation, to: Path | None, *, trust_remote_code: bool, hashes: bool, progress: Progress
) -> Fetched:
    """Download a `remote` location into `to` (None: the hub's cache); a failure is one UsageError."""
    assert location.hub is not None and location.repo_id is not None
    hub = HUBS[location.hub]
    progress(f"model: downloading {location.repo_id} from {hub.label} ({hub.endpoint()})")
    revision, trust = location.revision, trust_remote_code
    try:
        if hub.name == "hf":
            fetched = _hf_download(hub, location.source, location.repo_id, revision, to, trust=trust, hashes=hashes)
        else:
            fetched = _sdk_download(hub, location.repo_id, revision, to, trust=trust)
    except UsageError:
        raise
    except Exception as exc:  # not found, gated, cut off: the hub's message is the user's to act on
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"downloading {location.repo_id} from {hub.label} failed: {reason}",
            "check the id and your access (a gated model needs a token: HF_TOKEN); the same command resumes",
        ) from None
    if location.source.gguf_file is None:
        missing = missing_model_files(fetched.folder)
        if missing:
            raise UsageError(
                f"{location.repo_id} from {hub.label} lacks {', '.join(missing)}", "a run needs a full checkpoint"
            )
    return fetched


def fetch_model(model: ModelSection, base_dirs: Sequence[Path] = (), progress: Progress | None = None) -> str:
    """A local path `from_pretrained` loads with no network: the model's own folder or file, its copy in a hub's
    cache, or a download into that cache; a GGUF converted once. Refuses fast, with one message, when nothing can
    serve it (model_unavailable)."""
    from factory_cli.modeling.gguf import ensure_hf_checkpoint

    location = locate_model(model, base_dirs)
    problem = model_unavailable(location)
    if problem is not None:
        raise problem
    trust = model.trust_remote_code
    if location.where == "local":
        return ensure_hf_checkpoint(location.source, trust_remote_code=trust)
    folder = location.path
    if location.where == "remote":
        say = progress or (lambda message: None)
        folder = download_from_hub(location, None, trust_remote_code=trust, hashes=False, progress=say).folder
    assert folder is not None
    if location.source.gguf_file is not None:
        local = ModelSource("local", str(folder), gguf_file=location.source.gguf_file)
        return ensure_hf_checkpoint(local, trust_remote_code=trust)
    return str(folder)


def copy_folder(folder: Path, to: Path) -> Fetched:
    """A cached copy written out as plain files (the cache holds links into its blobs)."""
    to.mkdir(parents=True, exist_ok=True)
    files: dict[str, int] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file():
            shutil.copyfile(path.resolve(), to / path.name)
            files[path.name] = (to / path.name).stat().st_size
    return Fetched(to, files)


def download_model(
    model: ModelSection, to: Path | None, base_dirs: Sequence[Path] = (), progress: Progress | None = None
) -> tuple[ModelLocation, Fetched]:
    """`factory download`: every file a run needs of `model`, into `to` (None: the hub's cache), sizes and hashes
    checked against the hub; a copy already in a cache is written out without a network."""
    say = progress or (lambda message: None)
    location = locate_model(model, base_dirs)
    if location.where == "local":
        raise UsageError(
            f"`{model.name_or_path}` is already on this machine: {location.path}", "use it as model.name_or_path"
        )
    if location.where == "cache":
        assert location.path is not None
        if to is None:
            files = {p.name: p.stat().st_size for p in sorted(location.path.iterdir()) if p.is_file()}
            return location, Fetched(location.path, files)
        say(f"model: copying {location.repo_id} {location.describe()}")
        return location, copy_folder(location.path, to)
    problem = model_unavailable(location)
    if problem is not None:
        raise problem
    return location, download_from_hub(
        location, to, trust_remote_code=model.trust_remote_code, hashes=True, progress=say
    )
