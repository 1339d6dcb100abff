"""A stand-in for the Hugging Face Hub on 127.0.0.1: serves one folder as a model repository through the parts of the
Hub's HTTP interface that huggingface_hub's `model_info` and `snapshot_download` use (the model API with file
metadata, and `resolve/` with commit, etag and size headers). Tests point HF_ENDPOINT at it; nothing leaves the
machine."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pth")


@dataclass
class StandIn:
    """The running stand-in: its URL, the repository it serves, and the paths it was asked for."""

    url: str
    repo_id: str
    requests: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=256)
def _sibling(path: Path, name: str) -> dict[str, object]:
    data = path.read_bytes()
    entry: dict[str, object] = {
        "rfilename": name,
        "size": len(data),
        "blobId": hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest(),
    }
    if name.endswith(LFS_SUFFIXES):
        entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry


def _tree_entry(path: Path, name: str) -> dict[str, object]:
    sibling = _sibling(path, name)
    entry = {"type": "file", "path": name, "size": sibling["size"], "oid": sibling["blobId"]}
    if "lfs" in sibling:
        lfs = sibling["lfs"]
        assert isinstance(lfs, dict)
        entry["lfs"] = {"oid": lfs["sha256"], "size": lfs["size"], "pointerSize": lfs["pointerSize"]}
    return entry


def _etag(path: Path, name: str) -> str:
    sibling = _sibling(path, name)
    lfs = sibling.get("lfs")
    return str(lfs["sha256"]) if isinstance(lfs, dict) else str(sibling["blobId"])


@contextmanager
def serve_repo(folder: Path, repo_id: str = "stand-in/tiny-model", kind: str = "model") -> Iterator[StandIn]:
    """Serve `folder` (files and sub-folders) as repository `repo_id` of `kind` (model, dataset) until the block
    ends."""
    api = f"/api/{kind}s/{repo_id}"
    resolve = f"/{repo_id}/resolve/" if kind == "model" else f"/{kind}s/{repo_id}/resolve/"
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    state = StandIn("", repo_id)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

        def _file(self) -> tuple[str, Path] | None:
            prefix = resolve
            path = unquote(urlparse(self.path).path)
            if not path.startswith(prefix):
                return None
            _, _, name = path[len(prefix) :].partition("/")
            return (name, files[name]) if name in files else None

        def _not_found(self) -> None:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound" if repo_id not in self.path else "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _headers(self, name: str, path: Path) -> None:
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{_etag(path, name)}"')
            self.send_header("Content-Length", str(path.stat().st_size))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()

        def do_HEAD(self) -> None:
            state.requests.append(f"HEAD {self.path}")
            found = self._file()
            if found is None:
                self._not_found()
                return
            self._headers(*found)

        def do_GET(self) -> None:
            state.requests.append(f"GET {self.path}")
            path = urlparse(self.path).path
            if path in (api, *(f"{api}/revision/{r}" for r in ("main", COMMIT))):
                siblings = [_sibling(p, name) for name, p in files.items()]
                self._json({"id": repo_id, "sha": COMMIT, "private": False, "siblings": siblings})
                return
            if path.startswith(f"{api}/tree/"):
                self._json([_tree_entry(p, name) for name, p in files.items()])
                return
            found = self._file()
            if found is None:
                self._not_found()
                return
            self._headers(*found)
            self.wfile.write(found[1].read_bytes())

        def _json(self, data: object) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# Hub settings a test must not inherit from the shell that runs it.
HUB_VARIABLES = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_ENDPOINT",
    "HF_HOME",
    "HUGGINGFACE_HUB_CACHE",
    "HTTPS_PROXY",
    "https_proxy",
    "MODELSCOPE_DOMAIN",
    "OPENMIND_HUB_ENDPOINT",
    "USE_MODELSCOPE_HUB",
    "USE_OPENMIND_HUB",
)


def isolate_hubs(tmp_path: Path, monkeypatch: Any) -> None:
    """Empty hub caches under tmp_path, no hub variables from the calling shell, no remembered reachability probe,
    and tmp_path as the working directory."""
    from factory_cli.hub import _reachable

    for name in HUB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    _reachable.cache_clear()


# A safetensors file holding no tensor: its 8-byte header length (2) and the header `{}` (modeling/integrity.py).
EMPTY_SAFETENSORS = "\x02" + "\x00" * 7 + "{}"


def cache_snapshot(cache_root: Path, repo_id: str, files: dict[str, str] | None = None) -> Path:
    """A copy of `repo_id` in a Hugging Face cache laid out as huggingface_hub writes it (refs/main -> a snapshot),
    holding what `factory check` looks for (config, weights, tokenizer) unless `files` says otherwise."""
    repo = cache_root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    wanted = (
        {"config.json": "{}", "model.safetensors": EMPTY_SAFETENSORS, "tokenizer.json": "{}"}
        if files is None
        else files
    )
    for name, text in wanted.items():
        (snapshot / name).write_text(text)
    return snapshot


def cached_registry_models(cache_root: Path, names: tuple[str, ...]) -> dict[str, str]:
    """The environment of a subprocess that finds the registry models `names` in a Hugging Face cache at
    `cache_root` (so `factory check` needs no hub), for tests that run the real CLI."""
    from factory_cli.registry.models import find_model

    for name in names:
        spec = find_model(name)
        assert spec is not None, name
        cache_snapshot(cache_root, spec.hf_id)
    return {"HF_HUB_CACHE": str(cache_root)}
