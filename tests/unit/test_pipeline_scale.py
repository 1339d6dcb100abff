"""prepare_data at corpus scale: encoding reads a bounded number of batches ahead, tokens go to disk batch by batch,
a stopped preparation leaves no half-built cache entry, and a changed tokenizer is a new entry."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from factory_cli.config.schema import DeepSpeedJob
from factory_cli.data import pipeline
from factory_cli.data.encoding import IN_FLIGHT_PER_WORKER, StageEncoder, encode_batches
from factory_cli.data.pipeline import load_prepared, prepare_data

ROOT = Path(__file__).resolve().parents[2]


def pt_job(train: list[Any] | None = None, **data: Any) -> DeepSpeedJob:
    return DeepSpeedJob.model_validate(
        {
            "backend": "deepspeed",
            "stage": "pt",
            "model": {"name_or_path": "tiny"},
            "data": {"train": train or ["text.jsonl"], **data},
        }
    )


def write_corpus(folder: Path, documents: int) -> Path:
    path = folder / "text.jsonl"
    lines = (
        json.dumps({"text": " ".join(f"word{(i * 7 + j) % 50}" for j in range(i % 40 + 1))}) for i in range(documents)
    )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class CountingBatches:
    """Row batches that record how many have been taken."""

    def __init__(self, batches: int) -> None:
        self.taken = 0
        self.total = batches

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        for i in range(self.total):
            self.taken += 1
            yield [{"text": f"document {i} row {j}"} for j in range(3)]


@pytest.mark.parametrize("workers", [1, 2])
def test_encoding_reads_only_a_few_batches_ahead(smollm2_tokenizer: Any, workers: int) -> None:
    encoder = StageEncoder(pt_job(), smollm2_tokenizer, None)
    batches = CountingBatches(40)
    ahead = []
    for done, encoded in enumerate(encode_batches(encoder, iter(batches), workers), start=1):
        assert encoded.size == 3 and encoded.tokens is not None and encoded.tokens.num_rows == 3
        ahead.append(batches.taken - done)
    assert len(ahead) == 40
    # here: the batch being rendered while the previous one tokenizes; workers: a window of batches per worker
    bound = 1 if workers == 1 else IN_FLIGHT_PER_WORKER * workers
    assert 0 < max(ahead) <= bound


def test_a_cache_entry_holds_only_the_prepared_sets(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    write_corpus(tmp_path, 300)
    prepared = prepare_data(pt_job(max_length=64, eval_ratio=0.1), smollm2_tokenizer, None, [tmp_path], tmp_path / "c")
    entry = prepared.train_path.parent
    assert sorted(p.name for p in entry.iterdir()) == [
        "eval.arrow",
        "meta.json",
        "train.arrow",
    ]  # packed: one file each
    assert not [p for p in (tmp_path / "c" / "data").iterdir() if p != entry]
    train, evaluation = load_prepared({"train": str(prepared.train_path), "eval": str(prepared.eval_path)})
    assert sum(len(ids) for ids in train["input_ids"]) + sum(len(ids) for ids in evaluation["input_ids"]) == sum(
        report.tokens for report in prepared.report.datasets
    )


def test_a_changed_tokenizer_is_a_new_entry(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    write_corpus(tmp_path, 20)
    job = pt_job(max_length=32)
    first = prepare_data(job, smollm2_tokenizer, None, [tmp_path], tmp_path / "c")
    changed = copy.deepcopy(smollm2_tokenizer)
    changed.add_tokens(["<|brand_new|>"], special_tokens=True)
    second = prepare_data(job, changed, None, [tmp_path], tmp_path / "c")
    assert second.cache_key != first.cache_key and not second.from_cache
    assert prepare_data(job, smollm2_tokenizer, None, [tmp_path], tmp_path / "c").from_cache


STOP_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from transformers import PreTrainedTokenizerFast
    from factory_cli.config.schema import DeepSpeedJob
    from factory_cli.data import encoded_store, pipeline

    folder, tokenizer_dir, how = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    pipeline.ENCODE_BATCH = 50
    written = encoded_store.EncodedStore._write

    def stop_after_first_batch(self, tokens):
        written(self, tokens)
        print("staging:", self.folder.parent, flush=True)
        os.kill(os.getpid(), getattr(signal, how))

    encoded_store.EncodedStore._write = stop_after_first_batch
    job = DeepSpeedJob.model_validate(
        {"backend": "deepspeed", "stage": "pt", "model": {"name_or_path": "tiny"},
         "data": {"train": ["text.jsonl"], "max_length": 32, "num_workers": int(sys.argv[4])}}
    )
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    pipeline.prepare_data(job, tokenizer, None, [folder], folder / "cache")
    print("finished", flush=True)
    """
)


def stopped_preparation(folder: Path, tokenizer_dir: Path, how: str, workers: int = 1) -> tuple[int, Path]:
    """Run a preparation in a child that sends itself `how` after its first batch is on disk; (exit code, staging)."""
    out = subprocess.run(
        [sys.executable, "-c", STOP_SCRIPT, str(folder), str(tokenizer_dir), how, str(workers)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
        check=False,
    )
    assert "finished" not in out.stdout, out.stdout
    staging = [line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("staging: ")]
    assert staging, out.stdout + out.stderr
    return out.returncode, Path(staging[0])


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_during_preparation_leaves_no_staging_folder(
    smollm2_tokenizer_dir: Path, tmp_path: Path, workers: int
) -> None:
    write_corpus(tmp_path, 400)
    code, staging = stopped_preparation(tmp_path, smollm2_tokenizer_dir, "SIGTERM", workers)
    assert code == -signal.SIGTERM
    assert staging.name.endswith(".partial") and not staging.exists()
    assert list((tmp_path / "cache" / "data").iterdir()) == []


def test_a_killed_preparation_is_cleaned_by_the_next_one(
    smollm2_tokenizer: Any, smollm2_tokenizer_dir: Path, tmp_path: Path
) -> None:
    write_corpus(tmp_path, 400)
    code, staging = stopped_preparation(tmp_path, smollm2_tokenizer_dir, "SIGKILL")
    assert code == -signal.SIGKILL and staging.is_dir()  # nothing runs after SIGKILL
    prepared = prepare_data(pt_job(max_length=32), smollm2_tokenizer, None, [tmp_path], tmp_path / "cache")
    assert not staging.exists()
    assert [p.name for p in (tmp_path / "cache" / "data").iterdir()] == [prepared.cache_key]


def test_the_encode_batch_size_does_not_change_the_prepared_rows(
    smollm2_tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_corpus(tmp_path, 250)
    results = []
    for size in (7, 1000):
        monkeypatch.setattr(pipeline, "ENCODE_BATCH", size)
        job = pt_job(max_length=48, eval_ratio=0.1, cache_dir=str(tmp_path / f"cache{size}"))
        prepared = prepare_data(job, smollm2_tokenizer, None, [tmp_path])
        train, evaluation = load_prepared({"train": str(prepared.train_path), "eval": str(prepared.eval_path)})
        results.append((list(train), list(evaluation), prepared.report.to_dict()))
    assert results[0] == results[1]


def test_interleave_weights_that_would_repeat_the_data_without_end_are_refused(
    smollm2_tokenizer: Any, tmp_path: Path
) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text("".join(f'{{"text": "{name} {i}"}}\n' for i in range(50)))
    train = [{"path": "a.jsonl", "weight": 1.0}, {"path": "b.jsonl", "weight": 0.001}]
    job = pt_job(train, max_length=32, mix={"strategy": "interleave"})
    with pytest.raises(pipeline.DataError, match=r"data.train\[1\] \(b.jsonl, weight 0.001\)") as caught:
        prepare_data(job, smollm2_tokenizer, None, [tmp_path], tmp_path / "c")
    assert caught.value.hint and "first_exhausted" in caught.value.hint
    first = pt_job(train, max_length=32, mix={"strategy": "interleave", "stop": "first_exhausted"})
    assert prepare_data(first, smollm2_tokenizer, None, [tmp_path], tmp_path / "c").report.train_rows < 100


def test_packing_groups_are_bounded_by_rows_and_tokens_within_contiguous_shards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from factory_cli.data import packing

    monkeypatch.setattr(packing, "PACK_BATCH", 4)
    monkeypatch.setattr(packing, "PACK_TOKENS", 100)
    lengths = [30, 30, 30, 30, 30, 500, 10, 10, 10, 10, 10]
    groups = list(packing.pack_groups(lengths, shards=1))
    assert [list(g) for g in groups] == [[0, 1, 2], [3, 4], [5], [6, 7, 8, 9], [10]]
    assert packing.contiguous_shards(11, 2) == [range(0, 6), range(6, 11)]
    sharded = list(packing.pack_groups(lengths, shards=2))
    assert [list(g) for g in sharded] == [[0, 1, 2], [3, 4], [5], [6, 7, 8, 9], [10]]
    assert [p for g in sharded for p in g] == list(range(11))


def test_packing_by_token_groups_keeps_every_token(
    smollm2_tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from factory_cli.data import packing

    monkeypatch.setattr(packing, "PACK_TOKENS", 200)  # many groups
    write_corpus(tmp_path, 120)
    prepared = prepare_data(pt_job(max_length=32), smollm2_tokenizer, None, [tmp_path], tmp_path / "c")
    train, _ = load_prepared({"train": str(prepared.train_path)})
    assert all(sum(row["seq_lengths"]) == len(row["input_ids"]) <= 32 for row in train)
    eos = smollm2_tokenizer.eos_token_id
    texts = [json.loads(line)["text"] for line in (tmp_path / "text.jsonl").read_text().splitlines()]
    expected = sorted(t for text in texts for t in smollm2_tokenizer(text)["input_ids"] + [eos])
    assert sorted(t for row in train for t in row["input_ids"]) == expected
    assert prepared.report.packed_sequences == len(train)


def test_rows_are_taken_batch_by_batch_in_the_order_asked() -> None:
    import numpy as np
    import pyarrow as pa

    from factory_cli.data.packing import take_rows

    batches = [pa.RecordBatch.from_pydict({"x": list(range(start, start + 4))}) for start in (0, 4, 8)]
    starts = np.cumsum([0] + [b.num_rows for b in batches])
    rows = [9, 0, 5, 5, 11, 1]  # across batches, out of order, one twice
    assert take_rows(batches, starts, rows).column("x").to_pylist() == rows


def test_num_samples_resamples_rows_and_the_sample_prompt_is_the_first_drawn(
    smollm2_tokenizer: Any, tmp_path: Path
) -> None:
    import random

    from factory_cli.data.chat_templates import named_template

    rows = [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(4)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    info = {"qa": {"file_name": "qa.jsonl", "formatting": "alpaca", "num_samples": 7}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    job = DeepSpeedJob.model_validate(
        {
            "backend": "deepspeed",
            "stage": "sft",
            "model": {"name_or_path": "tiny"},
            "data": {"train": ["qa"], "dataset_dir": str(tmp_path), "seed": 3},
        }
    )
    prepared = prepare_data(job, smollm2_tokenizer, named_template("chatml"), [tmp_path], tmp_path / "c")
    (report,) = prepared.report.datasets
    assert (report.rows, report.converted, prepared.report.train_rows) == (4, 7, 7)
    rng = random.Random(3)  # LlamaFactory's num_samples: a permutation, then draws with replacement
    drawn = rng.sample(range(4), 4) + [rng.randrange(4) for _ in range(3)]
    assert prepared.sample_prompt == [{"role": "user", "content": rows[drawn[0]]["instruction"]}]


def test_token_rows_read_from_the_file_equal_those_taken_through_the_mapping(tmp_path: Path) -> None:
    import mmap

    import numpy as np
    import pyarrow as pa

    from factory_cli.data.encoding import token_schema
    from factory_cli.data.packing import FileSource, take_rows

    schema = token_schema("sft")
    path = tmp_path / "encoded.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for start in (0, 5, 10):
            ids = [list(range(100 * r, 100 * r + r % 7 + 1)) for r in range(start, start + 5)]
            labels = [[-100, *row[1:]] for row in ids]
            writer.write_batch(pa.RecordBatch.from_pydict({"input_ids": ids, "labels": labels}, schema=schema))
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        whole = pa.py_buffer(mapped)
        batches = list(pa.ipc.open_stream(whole))
        starts = np.cumsum([0] + [b.num_rows for b in batches])
        rows = [14, 0, 7, 7, 3, 12]
        read = take_rows(batches, starts, rows, FileSource(fd=handle.fileno(), base=whole.address))
        assert read.equals(take_rows(batches, starts, rows))
        assert read.column("input_ids").to_pylist()[0] == list(range(1400, 1400 + 14 % 7 + 1))
        assert read.column("labels").to_pylist()[1] == [-100]
