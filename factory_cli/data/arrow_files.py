"""Reading a prepared set's Arrow files front to back in bounded memory (docs/architecture.md §8).

A prepared set is one Arrow stream file (packed, data/packing.py) or a `save_to_disk` folder of them. `record_batches`
maps each file and yields its record batches without copying; once the caller has taken a batch, the pages it
touched leave the process (`madvise(MADV_DONTNEED)`; the page cache keeps them), so RSS stays flat whatever the size.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def set_files(path: Path) -> list[Path]:
    """The Arrow files of a prepared set, in row order."""
    path = Path(path)
    return [path] if path.is_file() else sorted(path.glob("data-*.arrow"))


def record_batches(path: Path) -> Iterator[Any]:
    """Every record batch of a prepared set, in row order; a batch is valid until the next one is asked for."""
    import pyarrow as pa

    for file in set_files(path):
        with open(file, "rb") as handle:
            # Not closed here: the mapping lives as long as the last batch the caller holds (it is freed with it).
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        for batch in pa.ipc.open_stream(pa.py_buffer(mapped)):
            yield batch
            del batch
            mapped.madvise(mmap.MADV_DONTNEED)
        del mapped
