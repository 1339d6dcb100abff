"""dpo / grpo sets are written from rows kept on disk, a bounded group at a time: a column whose structure varies
between groups keeps one Arrow type (structs gain the fields any group has), one that cannot becomes text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from factory_cli.data import pipeline
from factory_cli.data.encoded_store import EncodedStore
from tests.unit.test_pipeline import make_job, prepare, rows_of, write_jsonl


def test_grpo_rows_written_group_by_group_keep_their_structure(
    smollm2_tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "CONVERSATION_BATCH", 4)
    rows: list[dict[str, Any]] = []
    for i in range(30):
        row: dict[str, Any] = {"prompt": [{"role": "user", "content": f"{i} + 1?"}], "answer": str(i + 1)}
        row["meta"] = {"level": i} if i != 25 else {"level": i, "tag": "late"}  # a field only a late group has
        row["extra"] = i if i < 10 else {"nested": i}  # an int in early groups, a structure later: text
        rows.append(row)
    write_jsonl(tmp_path / "math.jsonl", rows)
    assert not hasattr(EncodedStore(tmp_path, "grpo"), "rows")  # nothing per row in memory but numbers
    prepared = prepare(make_job("grpo", ["math.jsonl"]), smollm2_tokenizer, tmp_path)
    assert prepared.train_path.is_file()  # one Arrow file, memory-mapped
    train, _ = rows_of(prepared)
    by_answer = {row["answer"]: row for row in train}
    assert len(by_answer) == 30
    assert by_answer["26"]["meta"] == {"level": 25, "tag": "late"}
    assert by_answer["1"]["meta"] == {"level": 0, "tag": None}
    assert by_answer["1"]["prompt"] == [{"role": "user", "content": "0 + 1?"}]
    assert by_answer["1"]["extra"] == "0" and json.loads(by_answer["12"]["extra"]) == {"nested": 11}
    assert prepared.sample_prompt and prepared.sample_prompt[0]["role"] == "user"


def test_dpo_rows_come_back_in_training_order(
    smollm2_tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "CONVERSATION_BATCH", 3)
    pairs = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(20)]
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    train, _ = rows_of(prepare(make_job("dpo", ["pairs.jsonl"]), smollm2_tokenizer, tmp_path))
    monkeypatch.setattr(pipeline, "CONVERSATION_BATCH", 1000)
    (tmp_path / "cache").rename(tmp_path / "cache-small-groups")
    whole, _ = rows_of(prepare(make_job("dpo", ["pairs.jsonl"]), smollm2_tokenizer, tmp_path))
    assert train == whole and len(train) == 20
    assert train[0]["chosen"] == [{"role": "assistant", "content": train[0]["chosen"][0]["content"]}]
