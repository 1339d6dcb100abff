"""Packing pt / sft rows into max_length sequences group by group, with TRL's packer, in bounded memory
(docs/architecture.md §8).

The rows to pack (indices into the memory-mapped encoded rows, in training order) are cut into groups of at most
PACK_BATCH rows and PACK_TOKENS tokens; each group is taken from disk, packed by `trl.data_utils.pack_dataset` (best
fit decreasing; pt splits a long document so that no token is lost, the pieces restart their positions through
`seq_lengths`) and appended to an Arrow file. Memory holds one group, whatever the corpus size.

The encoded rows are mapped from their file here (not through `datasets`), and the pages a group touched leave the
process once the group is written (`madvise(MADV_DONTNEED)`: the kernel's page cache keeps them, this process's RSS
does not), so RSS stays flat however large the file is. The packed file is the prepared set itself (pipeline.py loads
it memory-mapped), not copied again.

With `data.num_workers` > 1 the rows are first cut into that many contiguous shards, as `datasets.Dataset.map` with
`num_proc` cuts them, so a job packs the same sequences as it always has.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACK_BATCH = 10_000  # rows per packing group
PACK_TOKENS = 4_000_000  # tokens per packing group (32 MB per int64 column): bounds the memory of long documents


def contiguous_shards(count: int, shards: int) -> list[range]:
    """`datasets` contiguous sharding of `count` rows into `shards` parts (Dataset.shard(contiguous=True))."""
    div, mod = divmod(count, shards)
    parts = []
    for index in range(shards):
        start = div * index + min(index, mod)
        parts.append(range(start, start + div + (1 if index < mod else 0)))
    return parts


def pack_groups(lengths: Sequence[int], shards: int) -> Iterator[range]:
    """Positions of the rows to pack, group by group: per shard, at most PACK_BATCH rows and (past the first row)
    PACK_TOKENS tokens each."""
    for shard in contiguous_shards(len(lengths), shards):
        start, tokens = shard.start, 0
        for position in shard:
            size = position - start
            if size and (size >= PACK_BATCH or tokens + lengths[position] > PACK_TOKENS):
                yield range(start, position)
                start, tokens = position, 0
            tokens += lengths[position]
        if start < shard.stop:
            yield range(start, shard.stop)


def take_rows(batches: Sequence[Any], starts: Any, rows: Sequence[int], source: FileSource | None = None) -> Any:
    """The rows `rows` (in that order) of a table given as its record batches and their first row numbers, taken
    batch by batch: pyarrow's Table.take concatenates every chunk of a memory-mapped table into memory first. With
    `source` (the batches map that file), token rows are read from the file, not through the mapping."""
    import numpy as np
    import pyarrow as pa

    wanted = np.asarray(rows, dtype=np.int64)
    order = np.argsort(wanted, kind="stable")
    ascending = wanted[order]
    owner = np.searchsorted(starts, ascending, side="right") - 1
    pieces = []
    for batch in np.unique(owner):
        local = ascending[owner == batch] - starts[batch]
        taken = batches[batch]
        columns = [_take_column(taken.column(i), local, source) for i in range(taken.num_columns)]
        pieces.append(pa.RecordBatch.from_arrays(columns, schema=taken.schema))
    gathered = pa.Table.from_batches(pieces).combine_chunks()
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return gathered.take(pa.array(inverse, type=pa.int64()))


@dataclass
class FileSource:
    """The open file an Arrow stream was mapped from, and the mapping's address: a buffer's file position is its
    address less the mapping's."""

    fd: int
    base: int

    def read_int64(self, address: int, begins: Any, sizes: Any) -> Any:
        """The int64 runs [begin, begin + size) of the buffer at `address`, read with pread (no page is mapped)."""
        import numpy as np

        position = address - self.base
        runs = [os.pread(self.fd, int(n) * 8, position + int(b) * 8) for b, n in zip(begins, sizes, strict=True)]
        return np.frombuffer(b"".join(runs), dtype=np.int64)


def _take_column(column: Any, local: Any, source: FileSource | None) -> Any:
    """The rows `local` (ascending) of one column. A list of int64 column (token ids) is read row by row from the
    file when `source` is given, else gathered with numpy: through the mapping, each row would map the kernel's
    whole page-cache folio around it (megabytes), and Arrow's take reads the whole batch."""
    import numpy as np
    import pyarrow as pa

    if not pa.types.is_list(column.type) or column.null_count or column.type.value_type != pa.int64():
        return column.take(pa.array(local, type=pa.int64()))
    offsets = column.offsets.to_numpy()
    begins, sizes = offsets[local], offsets[local + 1] - offsets[local]
    new_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    values = column.values
    if source is not None:
        address = values.buffers()[1].address + values.offset * 8
        gathered = source.read_int64(address, begins, sizes)
    else:
        gather = np.arange(int(new_offsets[-1]), dtype=np.int64) + np.repeat(begins - new_offsets[:-1], sizes)
        gathered = values.to_numpy(zero_copy_only=True)[gather]
    return pa.ListArray.from_arrays(pa.array(new_offsets), pa.array(gathered), type=column.type)


def write_packed(
    encoded: Path, rows: Sequence[int], lengths: Sequence[int], strategy: str, seq_length: int, workers: int, path: Path
) -> int:
    """Pack the rows `rows` of the Arrow stream file `encoded` (their token counts `lengths`) into an Arrow stream
    file at `path`; returns the number of packed sequences."""
    import mmap

    import numpy as np
    import pyarrow as pa
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    handle = open(encoded, "rb")  # noqa: SIM115 - read with pread until the end
    # Not closed here: the mapping lives as long as the batches over it (an error's traceback may hold one).
    mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    whole = pa.py_buffer(mapped)
    source = FileSource(fd=handle.fileno(), base=whole.address)
    batches = list(pa.ipc.open_stream(whole))  # zero copy: record batches over the mapping
    starts = np.cumsum([0] + [batch.num_rows for batch in batches])
    shards = min(workers, len(rows)) if workers > 1 else 1
    writer: Any = None
    sequences = 0
    with handle, pa.OSFile(str(path), "wb") as sink:
        for group in pack_groups(lengths, shards):
            table = take_rows(batches, starts, rows[group.start : group.stop], source)
            packed = pack_dataset(
                Dataset(table), seq_length=seq_length, strategy=strategy, map_kwargs={"batch_size": len(group)}
            )
            result = packed.data.table
            if writer is None:
                writer = pa.ipc.new_stream(sink, result.schema)
            writer.write_table(result)
            sequences += result.num_rows
            del table, packed, result
            mapped.madvise(mmap.MADV_DONTNEED)  # the group's pages leave this process (the page cache keeps them)
        if writer is not None:
            writer.close()
    return sequences
