"""The factory cache: where it lives and the content hash that keys its entries (converted models, prepared data,
compiled kernels). Pure: nothing here imports torch."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK_BYTES = 1 << 20
# Sampled hashing: a file over the limit is keyed by its size plus this many evenly spaced 1 MB chunks.
HASH_SAMPLES = 64


def cache_root(configured: str | Path | None = None) -> Path:
    """The cache folder: `configured` (a job's data.cache_dir), else $FACTORY_CACHE, else ~/.cache/factory."""
    chosen = configured or os.environ.get("FACTORY_CACHE") or Path.home() / ".cache" / "factory"
    return Path(chosen).expanduser().resolve()


def content_hash(path: Path, sample_above: int | None = None) -> str:
    """sha256 (hex) of a file's size and bytes, read in 1 MB chunks.

    With `sample_above`, a file bigger than that many bytes is hashed by its size plus HASH_SAMPLES evenly spaced
    chunks instead (a 4 GB GGUF must not cost seconds on every run just to find its cached conversion). Data files
    are hashed whole: an edit anywhere must change the key of their prepared rows.
    """
    size = path.stat().st_size
    digest = hashlib.sha256(f"{size}:".encode())
    with path.open("rb") as handle:
        if sample_above is None or size <= sample_above:
            while chunk := handle.read(8 * CHUNK_BYTES):
                digest.update(chunk)
        else:
            step = (size - CHUNK_BYTES) // (HASH_SAMPLES - 1)
            for index in range(HASH_SAMPLES):
                handle.seek(index * step)
                digest.update(handle.read(CHUNK_BYTES))
    return digest.hexdigest()
