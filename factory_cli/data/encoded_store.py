"""Encoded rows on disk while data is prepared: one Arrow file of token columns written batch by batch, and per row
the few numbers the report needs (docs/architecture.md §8).

A row's position in the store (its physical index) is its place among the converted rows of all datasets, in reading
order. The token columns go to `<folder>/encoded.arrow` as they come, so memory holds one batch of tokens, not the
corpus; the per-row numbers (row number in its file, token length, supervised tokens) are kept in compact arrays, and
template errors (rare) by index. dpo / grpo rows are conversations their trainer tokenizes itself: they go to
`<folder>/rows.arrow` as JSON text, batch by batch, and are read back by index (`row`, `rows_at`).
"""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any

from factory_cli.data.encoding import TOKEN_COLUMNS, EncodedBatch, token_schema

ENCODED_FILE = "encoded.arrow"
ROWS_FILE = "rows.arrow"  # dpo / grpo: the canonical rows as JSON text


class EncodedStore:
    """Converted and encoded rows of every dataset, in reading order."""

    def __init__(self, folder: Path, stage: str) -> None:
        self.folder = Path(folder)
        self.stage = stage
        self.numbers = array("q")  # physical index -> row number in its file
        self.lengths = array("q")  # token length before truncation (0 for a row whose template failed)
        self.supervised = array("q")
        self.errors: dict[int, str] = {}
        self.bounds: list[tuple[int, int]] = []  # per dataset: [start, end) of its converted rows
        self._encoded = 0
        self._writer: Any = None
        self._sink: Any = None
        self._rows_writer: Any = None
        self._rows_sink: Any = None
        self._rows_read: Any = None  # (record batches, their first row numbers) once writing is done

    @property
    def has_tokens(self) -> bool:
        return self.stage in TOKEN_COLUMNS

    @property
    def converted(self) -> int:
        """Rows converted so far (read ahead of the rows encoded)."""
        return len(self.numbers)

    def add_converted(self, numbers: list[int], rows: list[dict[str, Any]]) -> None:
        """Record a batch of converted rows (their row numbers; dpo / grpo: the rows themselves)."""
        self.numbers.extend(numbers)
        if not self.has_tokens:
            self._write_rows(rows)

    def _write_rows(self, rows: list[dict[str, Any]]) -> None:
        import json

        import pyarrow as pa

        if self._rows_writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._rows_sink = pa.OSFile(str(self.folder / ROWS_FILE), "wb")
            self._rows_writer = pa.ipc.new_stream(self._rows_sink, pa.schema([("row", pa.large_string())]))
        texts = pa.array([json.dumps(row, ensure_ascii=False) for row in rows], type=pa.large_string())
        self._rows_writer.write_batch(pa.RecordBatch.from_arrays([texts], names=["row"]))

    def rows_at(self, positions: Any) -> list[dict[str, Any]]:
        """dpo / grpo: the canonical rows at these physical indices, in that order (read from disk)."""
        import json

        from factory_cli.data.packing import take_rows

        if self._rows_read is None:
            import mmap

            import numpy as np
            import pyarrow as pa

            if self._rows_writer is not None:
                self._rows_writer.close()
                self._rows_sink.close()
                self._rows_writer = self._rows_sink = None
            with open(self.folder / ROWS_FILE, "rb") as handle:
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            batches = list(pa.ipc.open_stream(pa.py_buffer(mapped)))
            self._rows_read = (batches, np.cumsum([0] + [b.num_rows for b in batches]))
        batches, starts = self._rows_read
        if not len(positions):
            return []
        return [json.loads(text) for text in take_rows(batches, starts, list(positions)).column("row").to_pylist()]

    def row(self, position: int) -> dict[str, Any]:
        """dpo / grpo: one canonical row."""
        return self.rows_at([position])[0]

    def add_encoded(self, batch: EncodedBatch) -> None:
        """Append the next encoded batch: numbers to the arrays, template errors by index, tokens to the file."""
        for offset, error in enumerate(batch.errors):
            if error is not None:
                self.errors[self._encoded + offset] = error
        self.lengths.extend(batch.lengths)
        self.supervised.extend(batch.supervised)
        self._encoded += batch.size
        if batch.tokens is not None:
            self._write(batch.tokens)

    def _write(self, tokens: Any) -> None:
        if self._writer is None:
            import pyarrow as pa

            self.folder.mkdir(parents=True, exist_ok=True)
            self._sink = pa.OSFile(str(self.folder / ENCODED_FILE), "wb")
            self._writer = pa.ipc.new_stream(self._sink, token_schema(self.stage))
        self._writer.write_batch(tokens)

    def file(self) -> Path:
        """The Arrow stream file of the token columns, complete (one row per physical index)."""
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None
        path = self.folder / ENCODED_FILE
        if not path.is_file():  # nothing was encoded: an empty file of the right columns
            self._write(_empty_batch(self.stage))
            return self.file()
        return path

    def dataset(self) -> Any:
        """The token columns as a memory-mapped `datasets.Dataset`, one row per physical index."""
        from datasets import Dataset

        return Dataset.from_file(str(self.file()))


def _empty_batch(stage: str) -> Any:
    import pyarrow as pa

    schema = token_schema(stage)
    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)
