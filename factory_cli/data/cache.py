"""Content-hash cache of prepared (tokenized, masked, packed) data: `<root>/data/<key>/`.

The key covers everything the prepared rows depend on: the pipeline version, the stage, each dataset's bytes (or Hub
id and split), its format, the tokenizer, the chat template and the data settings. An entry is built in a temporary
folder beside its final place and renamed into place, so a reader never sees half an entry, and two runs preparing the
same data at once both end with one complete entry.

A build that fails or is stopped removes its staging folder (`building`): an exception, Ctrl-C or a SIGTERM (turned
into an exception while the build runs, then delivered again); one killed outright (SIGKILL, power loss) leaves a
folder tagged with its pid that the next preparation on this host removes (`remove_abandoned`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from factory_cli.cache import content_hash

# Bump whenever the prepared rows change for the same inputs (tokenization, masking, packing, report fields).
PIPELINE_VERSION = 2
META_FILE = "meta.json"
# A staging folder's name carries its builder: .<key16>.<pid>@<host>.<random>.partial
STAGING_NAME = re.compile(r"^\.[0-9a-f]{16}\.(?:(\d+)@(.+)\.)?[^.]+\.partial$")
# An untagged staging folder (from before the tag) this old was left by a stopped run.
UNTAGGED_STAGING_MAX_AGE_S = 24 * 3600


def file_digest(path: Path) -> str:
    """The content hash of a data file (whole, never sampled), or of a folder's data files (names and hashes)."""
    path = Path(path)
    if not path.is_dir():
        return content_hash(path)
    from factory_cli.data.readers import list_data_files

    digest = hashlib.sha256()
    for file in list_data_files(path):
        digest.update(file.name.encode("utf-8") + b"\0" + content_hash(file).encode("ascii"))
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """What identifies a tokenizer: its name, vocabulary size, special tokens and its full serialized form."""
    fingerprint: dict[str, Any] = {
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
        "vocab_size": len(tokenizer),
        "bos": getattr(tokenizer, "bos_token", None),
        "eos": getattr(tokenizer, "eos_token", None),
        "pad": getattr(tokenizer, "pad_token", None),
    }
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        fingerprint["sha256"] = hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest()
    return fingerprint


def _canonical(value: Any) -> Any:
    """JSON-able form with stable key order (paths as strings, dataclasses and mappings as dicts)."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return _canonical(dataclasses.asdict(value))
    if hasattr(value, "items"):
        return _canonical(dict(value.items()))
    return value


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 over a canonical JSON of the pipeline version and `parts` (stage, data hashes, tokenizer, settings)."""
    payload = json.dumps(
        {"pipeline_version": PIPELINE_VERSION, **_canonical(parts)},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def entry_dir(root: Path, key: str) -> Path:
    """Where the entry of `key` lives (whether or not it exists yet)."""
    return Path(root) / "data" / key


def lookup(root: Path, key: str) -> Path | None:
    """The complete entry of `key`, or None (an entry exists only once it has been renamed into place)."""
    folder = entry_dir(root, key)
    return folder if (folder / META_FILE).is_file() else None


def read_meta(folder: Path) -> dict[str, Any]:
    """An entry's metadata (report, sample prompt, paths of its splits)."""
    data: dict[str, Any] = json.loads((Path(folder) / META_FILE).read_text(encoding="utf-8"))
    return data


def staging_dir(root: Path, key: str) -> Path:
    """A fresh temporary folder on the cache's file system to build the entry of `key` in."""
    parent = Path(root) / "data"
    parent.mkdir(parents=True, exist_ok=True)
    owner = f"{os.getpid()}@{socket.gethostname()}"
    return Path(tempfile.mkdtemp(prefix=f".{key[:16]}.{owner}.", suffix=".partial", dir=parent))


def remove_abandoned(root: Path) -> list[Path]:
    """Remove the staging folders of stopped runs: built by a process of this host that is gone (or, untagged, older
    than a day). A folder another live run is still building is left alone."""
    parent = Path(root) / "data"
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    host = socket.gethostname()
    for child in parent.iterdir():
        match = STAGING_NAME.match(child.name)
        if not match or not child.is_dir():
            continue
        pid, owner_host = match.groups()
        if pid is None:
            abandoned = time.time() - child.stat().st_mtime > UNTAGGED_STAGING_MAX_AGE_S
        else:
            abandoned = owner_host == host and not _process_alive(int(pid))
        if abandoned:
            discard(child)
            removed.append(child)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def commit(staging: Path, root: Path, key: str, meta: dict[str, Any]) -> Path:
    """Write the metadata, then rename the staging folder into place; a concurrent winner's entry is kept."""
    (Path(staging) / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    final = entry_dir(root, key)
    try:
        os.replace(staging, final)
    except OSError:
        if lookup(root, key) is None:  # an incomplete leftover (not ours to keep): replace it
            shutil.rmtree(final, ignore_errors=True)
            try:
                os.replace(staging, final)
                return final
            except OSError:
                pass
        discard(staging)
    return final


def discard(staging: Path) -> None:
    """Remove a staging folder (after a failure, or when another run committed the same entry first)."""
    with contextlib.suppress(OSError):
        shutil.rmtree(staging)


class BuildTerminated(BaseException):
    """SIGTERM arrived while an entry was being built (raised so that the staging folder is removed)."""


def _terminate_handler(builder: int) -> Any:
    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != builder:  # a process forked by the build (tokenizing, packing): end as SIGTERM would
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise BuildTerminated

    return handler


@contextlib.contextmanager
def building(root: Path, key: str) -> Iterator[Path]:
    """A staging folder for the entry of `key`, removed if the block does not complete: on an exception, Ctrl-C or
    a SIGTERM, which is delivered again once the folder is gone. Staging folders of dead processes go first."""
    remove_abandoned(root)
    staging = staging_dir(root, key)
    installed = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate_handler(os.getpid())) if installed else None
    try:
        yield staging
    except BuildTerminated:
        discard(staging)
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        installed = False
        os.kill(os.getpid(), signal.SIGTERM)
        raise
    except BaseException:
        discard(staging)
        raise
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
