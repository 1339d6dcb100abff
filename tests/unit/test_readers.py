"""Reading rows from json / jsonl / csv / parquet files and folders, streaming and error reporting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory_cli.data.readers import SUPPORTED_SUFFIXES, ReadError, count_rows, list_data_files, read_rows

ROWS = [{"instruction": "a", "output": "A"}, {"instruction": "b", "output": "B"}, {"instruction": "c", "output": "C"}]


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_supported_suffixes() -> None:
    assert SUPPORTED_SUFFIXES == (".json", ".jsonl", ".csv", ".parquet")


class TestJsonl:
    def test_rows_are_numbered_by_line_and_blank_lines_skipped(self, tmp_path: Path) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", [json.dumps(ROWS[0]), "", "   ", json.dumps(ROWS[1])])
        assert list(read_rows(path)) == [(1, ROWS[0]), (4, ROWS[1])]
        assert count_rows(path) == 2

    def test_bad_json_reports_the_line(self, tmp_path: Path) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", [json.dumps(ROWS[0]), json.dumps(ROWS[1]), '{"instruction": "c",'])
        with pytest.raises(ReadError) as info:
            list(read_rows(path))
        assert info.value.line == 3 and info.value.path == path
        assert f"{path}:3" in str(info.value) and "hint" in str(info.value)

    def test_limit_stops_before_a_corrupt_line(self, tmp_path: Path) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", [json.dumps(ROWS[0]), json.dumps(ROWS[1]), "{corrupt"])
        assert [n for n, _ in read_rows(path, limit=2)] == [1, 2]
        assert list(read_rows(path, limit=0)) == []

    def test_limit_reads_only_what_it_needs(self, tmp_path: Path) -> None:
        # a huge file whose tail is garbage: with a limit, it is never reached
        path = tmp_path / "big.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps(ROWS[0]) + "\n")
            handle.write("x" * 5_000_000 + "\n")
        assert list(read_rows(path, limit=1)) == [(1, ROWS[0])]

    def test_non_object_row(self, tmp_path: Path) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", ["[1, 2]"])
        with pytest.raises(ReadError, match="row 1 is list"):
            list(read_rows(path))

    def test_utf8_bom_is_accepted(self, tmp_path: Path) -> None:
        path = tmp_path / "bom.jsonl"
        path.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS[0]).encode() + b"\n")
        assert list(read_rows(path)) == [(1, ROWS[0])]


class TestJson:
    def test_list_of_objects(self, tmp_path: Path) -> None:
        path = tmp_path / "d.json"
        path.write_text(json.dumps(ROWS), encoding="utf-8")
        assert list(read_rows(path)) == [(1, ROWS[0]), (2, ROWS[1]), (3, ROWS[2])]
        assert list(read_rows(path, limit=2)) == [(1, ROWS[0]), (2, ROWS[1])]
        assert count_rows(path) == 3

    @pytest.mark.parametrize("key", ["data", "train"])
    def test_list_under_a_key(self, tmp_path: Path, key: str) -> None:
        path = tmp_path / "d.json"
        path.write_text(json.dumps({key: ROWS, "version": 1}), encoding="utf-8")
        assert [row for _, row in read_rows(path)] == ROWS

    def test_single_object_is_an_error(self, tmp_path: Path) -> None:
        path = tmp_path / "d.json"
        path.write_text(json.dumps(ROWS[0]), encoding="utf-8")
        with pytest.raises(ReadError, match="single object"):
            list(read_rows(path))

    def test_bad_json_reports_the_line(self, tmp_path: Path) -> None:
        path = tmp_path / "d.json"
        path.write_text('[\n  {"a": 1},\n  {"a": 2,,}\n]\n', encoding="utf-8")
        with pytest.raises(ReadError) as info:
            list(read_rows(path))
        assert info.value.line == 3

    def test_json_lines_saved_as_json(self, tmp_path: Path) -> None:
        path = write_jsonl(tmp_path / "d.json", [json.dumps(r) for r in ROWS])
        assert [row for _, row in read_rows(path)] == ROWS


class TestCsv:
    def test_rows_and_limit(self, tmp_path: Path) -> None:
        path = tmp_path / "d.csv"
        path.write_text('instruction,output\na,A\n"b, with comma","multi\nline"\nc,C\n', encoding="utf-8")
        rows = list(read_rows(path))
        assert rows[0] == (1, {"instruction": "a", "output": "A"})
        assert rows[1] == (2, {"instruction": "b, with comma", "output": "multi\nline"})
        assert [n for n, _ in read_rows(path, limit=2)] == [1, 2]
        assert count_rows(path) == 3

    def test_extra_cells(self, tmp_path: Path) -> None:
        path = tmp_path / "d.csv"
        path.write_text("a,b\n1,2,3\n", encoding="utf-8")
        with pytest.raises(ReadError, match="more cells"):
            list(read_rows(path))


class TestParquet:
    def test_rows_limit_and_count(self, tmp_path: Path) -> None:
        rows = [{"text": f"row {i}", "n": i} for i in range(2500)]
        path = tmp_path / "d.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000)
        got = list(read_rows(path))
        assert len(got) == 2500 and got[0] == (1, rows[0]) and got[-1] == (2500, rows[-1])
        assert list(read_rows(path, limit=3)) == [(1, rows[0]), (2, rows[1]), (3, rows[2])]
        assert count_rows(path) == 2500

    def test_broken_file(self, tmp_path: Path) -> None:
        path = tmp_path / "d.parquet"
        path.write_bytes(b"not a parquet file")
        with pytest.raises(ReadError, match="parquet"):
            list(read_rows(path))


class TestFolderAndErrors:
    def test_directory_reads_supported_files_in_sorted_order(self, tmp_path: Path) -> None:
        write_jsonl(tmp_path / "b.jsonl", [json.dumps(ROWS[1]), json.dumps(ROWS[2])])
        (tmp_path / "a.json").write_text(json.dumps([ROWS[0]]), encoding="utf-8")
        (tmp_path / "notes.txt").write_text("ignored", encoding="utf-8")
        (tmp_path / "dataset_info.json").write_text("{}", encoding="utf-8")
        assert [p.name for p in list_data_files(tmp_path)] == ["a.json", "b.jsonl"]
        assert list(read_rows(tmp_path)) == [(1, ROWS[0]), (1, ROWS[1]), (2, ROWS[2])]
        assert [row for _, row in read_rows(tmp_path, limit=2)] == ROWS[:2]
        assert count_rows(tmp_path) == 3

    def test_empty_directory(self, tmp_path: Path) -> None:
        with pytest.raises(ReadError, match="no data files"):
            read_rows(tmp_path)

    def test_missing_file_fails_at_the_call(self, tmp_path: Path) -> None:
        with pytest.raises(ReadError) as info:
            read_rows(tmp_path / "nope.jsonl")
        assert "nope.jsonl" in str(info.value) and info.value.hint

    def test_unsupported_suffix_has_a_hint(self, tmp_path: Path) -> None:
        path = tmp_path / "corpus.txt"
        path.write_text("hello", encoding="utf-8")
        with pytest.raises(ReadError) as info:
            read_rows(path)
        assert ".txt" in info.value.message and ".jsonl" in (info.value.hint or "")

    def test_read_error_is_a_value_error(self) -> None:
        assert issubclass(ReadError, ValueError)


def test_data_modules_import_no_heavy_packages() -> None:
    code = (
        "import sys\n"
        "import factory_cli.data.readers, factory_cli.data.formats, factory_cli.data.chat_templates\n"
        "import factory_cli.registry.datasets\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'pyarrow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_check_scan_names_where_a_file_stops_being_utf8(tmp_path: Path) -> None:
    """The scan `factory check` runs reads lines in blocks; the error names the line and byte of the first bad byte."""
    from factory_cli.data.readers import scan_file

    first = json.dumps({"text": "fine"}).encode() + b"\n"
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(first + b'{"text": "caf\xe9"}\n')
    with pytest.raises(ReadError) as refused:
        scan_file(path, keep=5, max_bytes=1 << 20)
    assert f"not UTF-8 text (invalid continuation byte) at line 2, byte {len(first) + 13}" in str(refused.value)
