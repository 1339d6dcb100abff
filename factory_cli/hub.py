"""Is a hub reachable? One bounded probe (modeling/hubs.py asks it for every hub), and Hugging Face offline mode when
the Hub is not, so that nothing waits on retries.

Without a network, huggingface_hub retries each request with backoff (~25 s per file) before it fails. One TCP
connection to the Hub (or the HTTPS proxy) tells at once whether a download can even start; when it cannot, loads run
in offline mode: what is in the cache still loads, and what is not fails immediately. Pure Python until a load.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlparse

HUB_PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_offline_configured() -> bool:
    """Whether the user already put Hugging Face in offline mode (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(name, "").strip().upper() in _TRUE for name in names)


def endpoint_address(url: str) -> tuple[str, int]:
    """(host, port) a request to `url` connects to first: the HTTPS proxy when one is set, else the url's host."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    parsed = urlparse(proxy or (url if "://" in url else f"https://{url}"))
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.hostname or "localhost", port


def hub_address() -> tuple[str, int]:
    """(host, port) a Hugging Face Hub request connects to first (HF_ENDPOINT, or the proxy)."""
    return endpoint_address(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")


def _connect(address: tuple[str, int], timeout: float) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:  # no DNS, refused, unreachable, timed out
        return False


@functools.lru_cache(maxsize=16)
def _reachable(address: tuple[str, int], timeout: float) -> bool:
    # A thread bounds the whole probe: name resolution has no timeout of its own and may hang for many seconds.
    answer: list[bool] = []
    probe = threading.Thread(target=lambda: answer.append(_connect(address, timeout)), daemon=True)
    probe.start()
    probe.join(timeout + 0.5)
    return bool(answer and answer[0])


def address_reachable(address: tuple[str, int], timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One TCP connection to `address`, remembered for the process: can a download even start?"""
    return _reachable(address, timeout)


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One TCP connection to the Hub (or the proxy), remembered for the process: can a download even start?"""
    return address_reachable(hub_address(), timeout)


def hub_unavailable() -> str | None:
    """Why nothing can come from the Hub now (offline mode set, or no connection), or None when it may."""
    if hub_offline_configured():
        return "offline mode is on (HF_HUB_OFFLINE)"
    if not hub_reachable():
        host, port = hub_address()
        return f"{host}:{port} is not reachable from here"
    return None


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face offline mode for the block: the env vars, and the flags huggingface_hub and datasets read once."""
    from unittest import mock

    import datasets.config
    import huggingface_hub.constants

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}))
        stack.enter_context(mock.patch.object(huggingface_hub.constants, "HF_HUB_OFFLINE", True))
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            if hasattr(datasets.config, name):
                stack.enter_context(mock.patch.object(datasets.config, name, True))
        yield


@contextlib.contextmanager
def offline_unless_reachable() -> Iterator[str | None]:
    """Offline mode for the block when the Hub is unavailable; yields why (None: online as usual)."""
    why = hub_unavailable()
    with hub_offline() if why else contextlib.nullcontext():
        yield why
