"""Read dataset rows from json / jsonl / csv / parquet files (or a folder of them), streaming where the format allows.

`scan_file` is what `factory check` uses: every row of a file parsed (up to a size), the first ones kept to convert.
Only regular files are opened (a FIFO would block). pyarrow is imported only when a parquet file is actually read.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from factory_cli.config.errors import UsageError

SUPPORTED_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
_LIST_KEYS = ("data", "train")
_PARQUET_BATCH = 1024
_JSONL_BLOCK = 1000  # lines parsed in one call by scan_file


class ReadError(UsageError):
    """A data file that cannot be read: missing, unsupported, or malformed (with the line when known)."""

    def __init__(
        self, message: str, path: Path | None = None, line: int | None = None, hint: str | None = None
    ) -> None:
        self.detail = message
        self.path = path
        self.line = line
        where = f"{path}:{line}" if path is not None and line is not None else (str(path) if path is not None else "")
        super().__init__(f"{where}: {message}" if where else message, hint)


def list_data_files(path: Path) -> list[Path]:
    """The files `read_rows(path)` reads: the file itself, or a folder's supported files in sorted order."""
    path = Path(path)
    if not path.exists():
        raise ReadError("no such file or directory", path, hint="check the path (relative paths start at the job file)")
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file()
            and p.suffix.lower() in SUPPORTED_SUFFIXES
            and not p.name.startswith(".")
            and p.name != "dataset_info.json"
        )
        if not files:
            raise ReadError("folder holds no data files", path, hint=f"put {', '.join(SUPPORTED_SUFFIXES)} files in it")
        return files
    if not path.is_file():
        # A FIFO, socket or device: opening one for reading can block forever or never end.
        raise ReadError(
            "not a regular file (a pipe, socket or device)", path, hint="give a data file or a folder of them"
        )
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ReadError(
            f"unsupported file type `{path.suffix or '(none)'}`",
            path,
            hint=f'use one of {", ".join(SUPPORTED_SUFFIXES)}; for plain text write a .jsonl of {{"text": ...}} rows',
        )
    return [path]


def read_rows(path: Path, limit: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based row number, row) for each row; jsonl rows are numbered by line. Raises ReadError."""
    files = list_data_files(path)  # eager: a missing file fails at the call, not at the first next()
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    return _read_files(files, limit)


def _read_files(files: list[Path], limit: int | None) -> Iterator[tuple[int, dict[str, Any]]]:
    left = limit
    for file in files:
        if left == 0:
            return
        for number, row in _read_one(file, left):
            yield number, row
            if left is not None:
                left -= 1


def _read_one(path: Path, limit: int | None) -> Iterator[tuple[int, dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, limit)
    if suffix == ".json":
        return _read_json(path, limit)
    if suffix == ".csv":
        return _read_csv(path, limit)
    return _read_parquet(path, limit)


def _object(value: Any, path: Path, number: int, line: int | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReadError(
            f"row {number} is {type(value).__name__}, expected a JSON object of columns",
            path,
            line,
            hint='each row must be an object such as {"instruction": ..., "output": ...}',
        )
    return value


def _bytes_read(handle: io.TextIOWrapper) -> int:
    """How far into the file a text handle has read (its buffer's position: a block ahead of the current line)."""
    return cast(io.BufferedReader, handle.buffer).tell()


def _too_deep(path: Path, line: int | None) -> ReadError:
    return ReadError(
        "a row is nested too deeply to read (Python's JSON parser stops near 1000 levels)",
        path,
        line,
        hint="rows are objects of texts and lists of messages, a few levels deep",
    )


def _read_jsonl(path: Path, limit: int | None) -> Iterator[tuple[int, dict[str, Any]]]:
    if limit == 0:
        return
    count = 0
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                yield line_no, _jsonl_row(line, path, line_no)
                count += 1
                if limit is not None and count >= limit:
                    return
    except UnicodeDecodeError as exc:
        raise ReadError(f"not UTF-8 text ({exc.reason})", path, hint="save the file as UTF-8") from None


def _jsonl_row(line: str, path: Path, line_no: int) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ReadError(
            f"invalid JSON at column {exc.colno}: {exc.msg}",
            path,
            line_no,
            hint="a .jsonl file holds one JSON object per line",
        ) from None
    except RecursionError:
        raise _too_deep(path, line_no) from None
    return _object(value, path, line_no, line_no)


def _read_json(path: Path, limit: int | None) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReadError(f"not UTF-8 text ({exc.reason})", path, hint="save the file as UTF-8") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise _too_deep(path, None) from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            yield from _read_jsonl(path, limit)  # JSON Lines saved as .json, as the Hub often does
            return
        raise ReadError(
            f"invalid JSON at column {exc.colno}: {exc.msg}",
            path,
            exc.lineno,
            hint="a .json file holds a list of row objects; use .jsonl for one object per line",
        ) from None
    if isinstance(data, dict):
        key = next((k for k in _LIST_KEYS if isinstance(data.get(k), list)), None)
        if key is None:
            raise ReadError(
                "expected a list of rows, got a single object",
                path,
                hint=f"write [ {{...}}, {{...}} ] or put the list under one of {list(_LIST_KEYS)}",
            )
        data = data[key]
    if not isinstance(data, list):
        raise ReadError(f"expected a list of rows, got {type(data).__name__}", path, hint="write [ {...}, {...} ]")
    for number, value in enumerate(data[:limit] if limit is not None else data, start=1):
        yield number, _object(value, path, number)


def _read_csv(path: Path, limit: int | None, stop_at_byte: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    if limit == 0:
        return
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long texts in one cell
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            for number, record in enumerate(reader, start=1):
                if None in record:
                    raise ReadError(
                        f"row {number} has more cells than the header has columns",
                        path,
                        reader.line_num,
                        hint="quote cells that contain commas",
                    )
                yield number, dict(record)
                if limit is not None and number >= limit:
                    return
                if stop_at_byte is not None and _bytes_read(handle) >= stop_at_byte:
                    return
    except csv.Error as exc:
        raise ReadError(f"malformed CSV: {exc}", path, hint="check quoting") from None
    except UnicodeDecodeError as exc:
        raise ReadError(f"not UTF-8 text ({exc.reason})", path, hint="save the file as UTF-8") from None


def _read_parquet(path: Path, limit: int | None) -> Iterator[tuple[int, dict[str, Any]]]:
    if limit == 0:
        return
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ReadError("reading parquet needs pyarrow", path, hint="pip install pyarrow") from None
    try:
        parquet = pq.ParquetFile(path)
        batch_size = min(limit, _PARQUET_BATCH) if limit is not None else _PARQUET_BATCH
        number = 0
        for batch in parquet.iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                number += 1
                yield number, row
                if limit is not None and number >= limit:
                    return
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid / ArrowIOError derive from these
        raise ReadError(f"cannot read parquet: {exc}", path, hint="is it a complete parquet file?") from None


def count_rows(path: Path) -> int:
    """How many rows `read_rows(path)` yields (parquet from its metadata, jsonl without parsing)."""
    total = 0
    for file in list_data_files(path):
        suffix = file.suffix.lower()
        if suffix == ".jsonl":
            with file.open(encoding="utf-8-sig") as handle:
                total += sum(1 for line in handle if line.strip())
        elif suffix == ".parquet":
            try:
                import pyarrow.parquet as pq

                total += pq.ParquetFile(file).metadata.num_rows
            except ImportError:
                raise ReadError("reading parquet needs pyarrow", file, hint="pip install pyarrow") from None
            except (OSError, ValueError) as exc:
                raise ReadError(f"cannot read parquet: {exc}", file) from None
        else:
            total += sum(1 for _ in _read_one(file, None))
    return total


@dataclass
class FileScan:
    """What `scan_file` saw of one file: its rows (the first `keep` of them kept), and how much of it was read."""

    path: Path
    size: int
    rows: int = 0
    first: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    bytes_checked: int = 0
    rows_counted: bool = True  # False: a .json too large to load, so its rows are unknown
    marked: int = 0  # rows the scan's `mark` said yes to
    first_marked: int | None = None  # the row number (a .jsonl's line) of the first of them
    seconds: float = 0.0  # how long the scan took

    @property
    def complete(self) -> bool:
        return self.rows_counted and self.bytes_checked >= self.size

    def _mark(self, number: int, count: int = 1) -> None:
        self.marked += count
        if self.first_marked is None:
            self.first_marked = number


RowMark = Callable[[dict[str, Any]], bool]


def scan_file(path: Path, keep: int, max_bytes: int, mark: RowMark | None = None) -> FileScan:
    """Read one data file at the syntax level, as far as `max_bytes`: every row of a jsonl or csv parsed (stopping
    at the first row past max_bytes), a .json document loaded whole when it is no larger, a parquet file's row count
    from its metadata. Raises ReadError with the file and line of the first malformed row. `mark` is asked about
    every row parsed (a parquet file's first `keep` rows), and the rows it says yes to are counted.

    A generated 500 MB alpaca .jsonl (1.7 M rows) scans at 100-130 MB/s on 2 shared cores (40 MB/s line by line)."""
    started = time.perf_counter()
    scan = _scan(path, keep, max_bytes, mark)
    scan.seconds = time.perf_counter() - started
    return scan


def _scan(path: Path, keep: int, max_bytes: int, mark: RowMark | None) -> FileScan:
    scan = FileScan(path=path, size=path.stat().st_size)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        scan.rows, scan.bytes_checked = count_rows(path), scan.size
        scan.first = list(_read_parquet(path, keep))
        for number, row in scan.first:
            if mark is not None and mark(row):
                scan._mark(number)
        return scan
    if suffix == ".json" and scan.size > max_bytes:
        scan.rows_counted = False  # one JSON document: nothing of it can be checked without loading all of it
        return scan
    if suffix == ".jsonl":
        _scan_jsonl(path, scan, keep, max_bytes, mark)
    else:
        rows = _read_csv(path, None, max_bytes) if suffix == ".csv" else _read_json(path, None)
        for number, row in rows:
            scan.rows += 1
            if len(scan.first) < keep:
                scan.first.append((number, row))
            if mark is not None and mark(row):
                scan._mark(number)
    scan.bytes_checked = min(scan.size, max_bytes)
    return scan


def _scan_jsonl(path: Path, scan: FileScan, keep: int, max_bytes: int, mark: RowMark | None) -> None:
    # Blocks of lines parsed as one JSON array: one call into the C decoder instead of one per line, twice as fast.
    # A block that does not parse as one object per line is read line by line, which names the bad line.
    line_no = 0
    try:
        with path.open(encoding="utf-8-sig") as handle:
            while block := list(itertools.islice(handle, _JSONL_BLOCK)):
                texts = [line for line in block if not line.isspace()]
                values = None if len(scan.first) < keep else _objects_only(texts)
                if values is None:
                    for offset, line in enumerate(block, start=line_no + 1):
                        if line.isspace():
                            continue
                        row = _jsonl_row(line, path, offset)
                        if len(scan.first) < keep:
                            scan.first.append((offset, row))
                        if mark is not None and mark(row):
                            scan._mark(offset)
                elif mark is not None:
                    hits = [index for index, value in enumerate(values) if mark(value)]
                    if hits:
                        lines = [offset for offset, line in enumerate(block, start=line_no + 1) if not line.isspace()]
                        scan._mark(lines[hits[0]], len(hits))
                scan.rows += len(texts)
                line_no += len(block)
                if _bytes_read(handle) >= max_bytes:
                    return
    except UnicodeDecodeError as exc:
        raise ReadError(
            f"not UTF-8 text ({exc.reason}){_where_not_utf8(path)}", path, hint="save the file as UTF-8"
        ) from None


def _where_not_utf8(path: Path, limit: int = 1 << 30) -> str:
    """at line L, byte B: where the first byte that is not UTF-8 is (read again in binary, up to `limit` bytes)."""
    offset = 0
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f" at line {line_no}, byte {offset + exc.start}"
            offset += len(line)
            if offset > limit:
                break
    return ""


def _objects_only(texts: list[str]) -> list[dict[str, Any]] | None:
    """The lines parsed in one call when each is one JSON object, else None (read them one by one to say where)."""
    try:
        values = json.loads("[" + ",".join(texts) + "]")
    except (json.JSONDecodeError, RecursionError):
        return None
    if len(values) == len(texts) and all(type(value) is dict for value in values):
        return cast(list[dict[str, Any]], values)
    return None
