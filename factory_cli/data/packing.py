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

from collections.abc import Iterator, Sequence
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


def take_rows(batches: Sequence[Any], starts: Any, rows: Sequence[int]) -> Any:
    """The rows `rows` (in that order) of a table given as its record batches and their first row numbers, taken
    batch by batch: pyarrow's Table.take concatenates every chunk of a memory-mapped table into memory first."""
    import numpy as np
    import pyarrow as pa

    wanted = np.asarray(rows, dtype=np.int64)
    order = np.argsort(wanted, kind="stable")
    ascending = wanted[order]
    owner = np.searchsorted(starts, ascending, side="right") - 1
    pieces = []
    for batch in np.unique(owner):
        local = ascending[owner == batch] - starts[batch]
        source = batches[batch]
        columns = [_take_column(source.column(i), local) for i in range(source.num_columns)]
        pieces.append(pa.RecordBatch.from_arrays(columns, schema=source.schema))
    gathered = pa.Table.from_batches(pieces).combine_chunks()
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return gathered.take(pa.array(inverse, type=pa.int64()))


def _take_column(column: Any, local: Any) -> Any:
    """The rows `local` (ascending) of one column. A list column (token ids) is gathered from its offsets and values
    with numpy, which reads only those rows' values: Arrow's take reads the whole batch of a memory-mapped file."""
    import numpy as np
    import pyarrow as pa

    if not pa.types.is_list(column.type) or column.null_count:
        return column.take(pa.array(local, type=pa.int64()))
    offsets = column.offsets.to_numpy()
    values = column.values.to_numpy(zero_copy_only=True)
    begins, sizes = offsets[local], offsets[local + 1] - offsets[local]
    new_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    gather = np.arange(int(new_offsets[-1]), dtype=np.int64) + np.repeat(begins - new_offsets[:-1], sizes)
    return pa.ListArray.from_arrays(pa.array(new_offsets), pa.array(values[gather]), type=column.type)


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

    with open(encoded, "rb") as handle:
        # Not closed here: the mapping lives as long as the batches over it (an error's traceback may hold one).
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    batches = list(pa.ipc.open_stream(pa.py_buffer(mapped)))  # zero copy: record batches over the mapping
    starts = np.cumsum([0] + [batch.num_rows for batch in batches])
    shards = min(workers, len(rows)) if workers > 1 else 1
    writer: Any = None
    sequences = 0
    with pa.OSFile(str(path), "wb") as sink:
        for group in pack_groups(lengths, shards):
            table = take_rows(batches, starts, rows[group.start : group.stop])
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
