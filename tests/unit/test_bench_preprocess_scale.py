"""bench/preprocess_scale.py without preparing anything: the generated corpus and the memory sampler."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import preprocess_scale


def test_the_corpus_is_generated_once_to_its_size_and_the_same_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preprocess_scale, "WORK", tmp_path / "a")
    first = preprocess_scale.corpus(1)
    monkeypatch.setattr(preprocess_scale, "WORK", tmp_path / "b")
    second = preprocess_scale.corpus(1)
    assert first.read_bytes() == second.read_bytes()
    assert 1_000_000 <= first.stat().st_size < 1_100_000
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    assert len(rows) == preprocess_scale.count_lines(first) > 20
    assert all(set(row) == {"text"} and row["text"] for row in rows)


def test_the_memory_of_a_process_tree_is_sampled() -> None:
    script = "import time; block = bytearray(300 * 2**20); time.sleep(1); print('{\"done\": 1}')"
    measured = preprocess_scale.run_tree([sys.executable, "-c", script], {})
    assert measured.returncode == 0 and '{"done": 1}' in measured.output
    assert 300 <= measured.peak_anon_mb <= measured.peak_pss_mb <= measured.peak_rss_mb + 1
