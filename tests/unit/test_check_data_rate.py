"""`factory check` says how much data its syntax-level scan read and how fast: files, rows, MB, seconds, rows/s
(config/summary.py data_check_line over config/checks.py data_scan's files). The form and the counts are asserted,
never a timing."""

from __future__ import annotations

import json
import re
from pathlib import Path

from factory_cli.config.summary import data_check_line
from factory_cli.data.readers import FileScan
from tests.unit.test_cli import run_cli

JOB = """\
backend: deepspeed
stage: pt
device: cpu
model:
  name_or_path: smollm2-135m-instruct
data:
  train: [{{path: {corpus}}}]
train:
  epochs: 1
output:
  dir: {run_dir}
"""
LINE = re.compile(r"data check +│ (\d+) files parsed: ([\d,]+) rows, ([\d.]+) MB in ([\d.]+) s \(([\d,]+) rows/s\)")


def test_check_prints_what_its_data_scan_read_and_its_rate(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, rows in (("a.jsonl", 30), ("b.jsonl", 20)):
        lines = [json.dumps({"text": f"document {i} of {name}, " + "words " * i}) for i in range(rows)]
        (corpus / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    size = sum(f.stat().st_size for f in corpus.iterdir())
    job = tmp_path / "job.yaml"
    job.write_text(JOB.format(corpus=corpus, run_dir=tmp_path / "run"), encoding="utf-8")

    code, out, err = run_cli(["check", str(job)])
    assert code == 0, err
    found = LINE.search(out)
    assert found is not None, out
    files, rows, megabytes, seconds, rate = found.groups()
    assert (files, rows, megabytes) == ("2", "50", f"{size / 1e6:.2f}")
    assert float(seconds) >= 0 and int(rate.replace(",", "")) > 0


def scan(rows: int, size: int, seconds: float, read: int | None = None, counted: bool = True) -> FileScan:
    return FileScan(
        path=Path("f.jsonl"), size=size, rows=rows, bytes_checked=size if read is None else read,
        rows_counted=counted, seconds=seconds,
    )  # fmt: skip


def test_the_line_sums_the_files_read() -> None:
    line = data_check_line([scan(1000, 2_000_000, 0.25), scan(500, 1_000_000, 0.5)])
    assert line == "2 files parsed: 1,500 rows, 3.00 MB in 0.750 s (2,000 rows/s)"
    # A file read only up to the limit says so; a .json too large to load has no rows to count and is left out.
    parts = [scan(10, 5_000_000, 0.1, read=1_000_000), scan(0, 9_000_000, 0.0, read=0, counted=False)]
    assert data_check_line(parts) == "1 file (1 read in part) parsed: 10 rows, 1.00 MB in 0.100 s (100 rows/s)"
    assert data_check_line([scan(3, 10, 0.0)]) == "1 file parsed: 3 rows, 0.00 MB in 0.000 s (too fast to time)"
    assert data_check_line([]) is None and data_check_line(parts[1:]) is None
