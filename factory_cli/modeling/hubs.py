"""The model hubs factory fetches from: the Hugging Face Hub, ModelScope and Modelers (openMind). Each hub's endpoint,
offline switch and cache layout, read from the environment variables of the hub's own library; whether it can serve a
download now (one short probe, factory_cli/hub.py). Pure: files and one TCP connection, no hub library imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from factory_cli.hub import address_reachable, endpoint_address, hub_offline_configured

HubName = Literal["hf", "modelscope", "modelers"]
HUB_NAMES: tuple[HubName, ...] = ("hf", "modelscope", "modelers")
_TRUE = {"1", "ON", "YES", "TRUE"}
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model", "qwen.tiktoken")


@dataclass(frozen=True)
class Hub:
    """One hub: how users name it, the library that downloads from it, where that library caches."""

    name: HubName
    label: str  # the hub, in a sentence
    short: str  # its name before "cache"
    package: str  # the import name of its download library
    pip: str  # what to install for it
    endpoint_var: str
    default_endpoint: str

    def endpoint(self) -> str:
        """The endpoint the hub's library talks to (a mirror when its variable names one), as a URL."""
        url = (os.environ.get(self.endpoint_var) or self.default_endpoint).strip().rstrip("/")
        return url if "://" in url else f"https://{url}"  # MODELSCOPE_DOMAIN is a bare host

    def offline_reason(self) -> str | None:
        """The hub's own offline switch, when it is on."""
        if self.name == "hf" and hub_offline_configured():
            return "offline mode is on (HF_HUB_OFFLINE)"
        return None

    def installed(self) -> bool:
        """Whether its download library can be imported (judged without importing it)."""
        return importlib.util.find_spec(self.package) is not None

    def unavailable(self) -> str | None:
        """Why nothing can be downloaded from this hub now, or None when a download can start."""
        offline = self.offline_reason()
        if offline is not None:
            return offline
        address = endpoint_address(self.endpoint())
        if not address_reachable(address):
            via = " (through HTTPS_PROXY)" if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") else ""
            return f"{address[0]}:{address[1]}{via} is not reachable from here"
        return None

    def cache_dir(self) -> Path:
        """Where the hub's library keeps its downloads."""
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
        if self.name == "hf":
            explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
            if explicit:
                return Path(explicit).expanduser()
            return Path(os.environ.get("HF_HOME") or home / "huggingface").expanduser() / "hub"
        if self.name == "modelscope":
            return Path(os.environ.get("MODELSCOPE_CACHE") or home / "modelscope").expanduser() / "hub"
        return home / "openmind" / "hub"

    def cached_dirs(self, repo_id: str, revision: str | None) -> list[Path]:
        """The folders of the hub's cache that would hold `repo_id` at `revision` (existing or not)."""
        root = self.cache_dir()
        if self.name == "modelscope":  # <root>/models/<owner>/<name>, older: <root>/<owner>/<name>; '.' may be '___'
            owner, _, name = repo_id.partition("/")
            names = dict.fromkeys([name, name.replace(".", "___")])
            return [base / owner / n for base in (root / "models", root) for n in names]
        repo = root / f"models--{repo_id.replace('/', '--')}"  # the huggingface_hub layout (openmind_hub shares it)
        wanted = revision or "main"
        if _COMMIT.match(wanted):
            return [repo / "snapshots" / wanted]
        try:
            commit = (repo / "refs" / wanted).read_text(encoding="utf-8").strip()
        except OSError:
            return [repo / "snapshots" / "<none>"]
        return [repo / "snapshots" / commit]

    def cached(self, repo_id: str, revision: str | None, gguf_file: str | None = None) -> Path | None:
        """The cached folder that holds everything a run needs of `repo_id`, or None."""
        for folder in self.cached_dirs(repo_id, revision):
            if gguf_file is not None and (folder / gguf_file).is_file():
                return folder
            if gguf_file is None and not missing_model_files(folder):
                return folder
        return None


HUBS: dict[HubName, Hub] = {
    "hf": Hub(
        "hf",
        "the Hugging Face Hub",
        "Hugging Face",
        "huggingface_hub",
        "huggingface_hub",
        "HF_ENDPOINT",
        "https://huggingface.co",
    ),
    "modelscope": Hub(
        "modelscope",
        "ModelScope",
        "ModelScope",
        "modelscope",
        "modelscope",
        "MODELSCOPE_DOMAIN",
        "https://www.modelscope.cn",
    ),
    "modelers": Hub(
        "modelers",
        "Modelers (openMind)",
        "Modelers",
        "openmind_hub",
        "openmind_hub",
        "OPENMIND_HUB_ENDPOINT",
        "https://modelers.cn",
    ),
}

# The switches LlamaFactory users already set to fetch from the hubs in China; `model.source: auto` honours them.
HUB_SWITCHES: tuple[tuple[str, HubName], ...] = (("USE_MODELSCOPE_HUB", "modelscope"), ("USE_OPENMIND_HUB", "modelers"))


def default_hub() -> tuple[HubName, str | None]:
    """The hub `auto` downloads from, and the variable that chose it (None: the Hugging Face Hub by default)."""
    for variable, hub in HUB_SWITCHES:
        if os.environ.get(variable, "").strip().upper() in _TRUE:
            return hub, variable
    return "hf", None


def hub_order(choice: str) -> list[HubName]:
    """The hubs whose caches are searched, in order, for a `model.source` choice (the default hub first)."""
    if choice in HUB_NAMES:
        return [choice]  # type: ignore[list-item]
    first, _ = default_hub()
    return [first, *(name for name in HUB_NAMES if name != first)]


def missing_model_files(folder: Path) -> list[str]:
    """What a checkpoint folder lacks to load (config, every weight shard, a tokenizer); [] when complete."""
    if not (folder / "config.json").is_file():
        return ["config.json"]
    missing: list[str] = []
    indexes = [
        p for p in (folder / "model.safetensors.index.json", folder / "pytorch_model.bin.index.json") if p.is_file()
    ]
    index = indexes[0] if indexes else None
    if index is not None:
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        except (OSError, ValueError, AttributeError):
            shards = []
        missing += [shard for shard in shards if not (folder / shard).is_file()]
    elif not any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir() if p.is_file()):
        missing.append("weights (*.safetensors)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append("tokenizer (tokenizer.json)")
    return missing


def describe_cache(hubs: Sequence[HubName]) -> str:
    """`the Hugging Face cache (~/.cache/huggingface/hub)` and friends, for messages."""
    return ", ".join(f"the {HUBS[h].short} cache ({HUBS[h].cache_dir()})" for h in hubs)


def cached_hub_dataset(repo_id: str) -> Path | None:
    """A Hugging Face dataset already on this machine: its files in the Hub cache (a `factory download --dataset`
    into the cache), or what `datasets` prepared from it (HF_DATASETS_CACHE); None when neither is there."""
    hub_copy = HUBS["hf"].cache_dir() / f"datasets--{repo_id.replace('/', '--')}" / "snapshots"
    snapshots = sorted(hub_copy.iterdir()) if hub_copy.is_dir() else []
    if snapshots:
        return snapshots[-1]
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "huggingface"
    root = Path(os.environ.get("HF_DATASETS_CACHE") or Path(os.environ.get("HF_HOME") or home) / "datasets")
    prepared = root.expanduser() / repo_id.replace("/", "___")
    return prepared if prepared.is_dir() and any(prepared.iterdir()) else None
