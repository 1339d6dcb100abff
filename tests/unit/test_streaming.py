"""data.streaming: the stream is lazy (no pass before its first sequence), seeded, keeps every token the prepared set
keeps, is sharded by file; `factory check` refuses what a stream cannot do, with the YAML line and a fix."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from factory_cli.config.errors import Issue, JobError
from factory_cli.config.schema import DeepSpeedJob
from factory_cli.config.validate import load_and_validate
from factory_cli.data.pipeline import prepare_data
from factory_cli.data.streaming import STREAM_PACK_ROWS, STREAM_SHUFFLE_BUFFER, stream_dataset
from tests.unit.test_pipeline_scale import pt_job, write_corpus


def sequences(dataset: Any, count: int | None = None) -> list[list[int]]:
    return [row["input_ids"] for row in itertools.islice(dataset, count)]


def test_the_stream_keeps_every_token_of_the_prepared_set(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    write_corpus(tmp_path, 300)
    job = pt_job(max_length=64, streaming=True)
    streamed = sequences(stream_dataset(job, smollm2_tokenizer, None, [tmp_path]))
    assert all(len(ids) <= 64 for ids in streamed) and max(len(ids) for ids in streamed) == 64
    prepared = prepare_data(pt_job(max_length=64), smollm2_tokenizer, None, [tmp_path], tmp_path / "c")
    assert sum(len(ids) for ids in streamed) == prepared.report.datasets[0].tokens  # documents + EOS, none lost
    packed = next(iter(stream_dataset(job, smollm2_tokenizer, None, [tmp_path])))
    assert sum(packed["seq_lengths"]) == len(packed["input_ids"])  # positions restart at each document


def test_the_same_seed_gives_the_same_stream(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    write_corpus(tmp_path, 300)
    first = sequences(stream_dataset(pt_job(max_length=32, streaming=True), smollm2_tokenizer, None, [tmp_path]), 20)
    again = sequences(stream_dataset(pt_job(max_length=32, streaming=True), smollm2_tokenizer, None, [tmp_path]), 20)
    other = stream_dataset(pt_job(max_length=32, streaming=True, seed=7), smollm2_tokenizer, None, [tmp_path])
    assert first == again
    assert sequences(other, 20) != first


def test_the_first_sequence_comes_before_the_corpus_is_read(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    """A line past what the shuffle buffer and one packing group need is broken: the first sequences still come
    (a full pass before step 1 would raise), and reading on reaches it."""
    from factory_cli.data.readers import ReadError

    readahead = STREAM_SHUFFLE_BUFFER + STREAM_PACK_ROWS
    lines = [json.dumps({"text": f"document number {i}"}) for i in range(readahead * 3)]
    lines.insert(readahead * 2, "{broken")
    (tmp_path / "text.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    stream = stream_dataset(pt_job(max_length=32, streaming=True), smollm2_tokenizer, None, [tmp_path])
    assert len(sequences(stream, 5)) == 5
    with pytest.raises(ReadError, match=f":{readahead * 2 + 1}:"):
        sequences(stream)


def test_each_file_is_a_shard(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    from datasets.distributed import split_dataset_by_node

    folder = tmp_path / "corpus"
    folder.mkdir()
    for k in range(4):
        lines = (json.dumps({"text": f"file {k} document {i}"}) for i in range(50))
        (folder / f"part{k}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    job = pt_job(["corpus"], max_length=32, streaming=True, packing=False)
    stream = stream_dataset(job, smollm2_tokenizer, None, [tmp_path])
    assert stream.n_shards == 4
    whole = sorted(map(tuple, sequences(stream)))
    parts = [sequences(split_dataset_by_node(stream, rank=r, world_size=2)) for r in range(2)]
    assert parts[0] and parts[1]
    assert sorted(map(tuple, parts[0] + parts[1])) == whole  # each rank its own files, nothing twice


def sft_job(**data: Any) -> DeepSpeedJob:
    return DeepSpeedJob.model_validate(
        {
            "backend": "deepspeed",
            "stage": "sft",
            "model": {"name_or_path": "tiny"},
            "data": {"train": ["chat.jsonl"], **data},
        }
    )


def write_chats(folder: Path, count: int) -> None:
    """Conversations of one or two turns; every fifth has an empty answer (nothing to learn from: dropped)."""
    lines = []
    for i in range(count):
        messages = [{"role": "user", "content": f"question {i}: " + "word " * (i % 9)}]
        messages.append({"role": "assistant", "content": "" if i % 5 == 4 else f"answer {i} " + "more " * (i % 7)})
        if i % 3 == 0:
            messages += [{"role": "user", "content": "and then?"}, {"role": "assistant", "content": f"then {i}"}]
        lines.append(json.dumps({"messages": messages}))
    (folder / "chat.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_an_sft_stream_carries_the_prepared_rows_tokens_and_masks(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    """Unpacked, the stream's rows are the prepared set's rows (input ids and labels, truncated alike; the rows the
    prepared path drops are dropped), in another order; packed, they fill sequences whole."""
    from datasets import load_from_disk

    write_chats(tmp_path, 120)
    template = smollm2_tokenizer.chat_template
    streamed = stream_dataset(
        sft_job(max_length=48, streaming=True, packing=False), smollm2_tokenizer, template, [tmp_path]
    )
    rows = sorted((tuple(r["input_ids"]), tuple(r["labels"])) for r in streamed)
    prepared = prepare_data(
        sft_job(max_length=48, packing=False), smollm2_tokenizer, template, [tmp_path], tmp_path / "c"
    )
    expected = sorted((tuple(r["input_ids"]), tuple(r["labels"])) for r in load_from_disk(str(prepared.train_path)))
    assert len(expected) < 120  # some rows were dropped (empty answers) and the stream drops the same ones
    assert rows == expected
    assert any(-100 in labels and set(labels) != {-100} for _, labels in rows)  # prompts masked, answers learned

    packed = list(
        stream_dataset(sft_job(max_length=48, streaming=True, packing=True), smollm2_tokenizer, template, [tmp_path])
    )
    assert all(sum(r["seq_lengths"]) == len(r["input_ids"]) == len(r["labels"]) <= 48 for r in packed)
    assert sum(len(r["input_ids"]) for r in packed) == sum(len(ids) for ids, _ in rows)  # whole rows, none lost


# ------------------------------------------------------------------------------------------------ check

PT_STREAM = """\
backend: deepspeed
stage: pt
device: cpu
model:
  name_or_path: smollm2-135m-instruct
data:
  train: [demo-pt]
  streaming: true
train:
  max_steps: 10
"""


def errors_of(text: str, tmp_path: Path) -> list[Issue]:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(text, encoding="utf-8")
    with pytest.raises(JobError) as info:
        load_and_validate(job_file, ())
    return [issue for issue in info.value.errors if issue.path.startswith("data.")]


def test_a_streaming_job_is_valid(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(PT_STREAM, encoding="utf-8")
    assert load_and_validate(tmp_path / "job.yaml", ()).job.data.streaming


@pytest.mark.parametrize(
    ("change", "line", "words"),
    [
        (("train:\n  max_steps: 10\n", ""), 8, "needs train.max_steps"),
        (("stage: pt", "stage: dpo"), 8, "not stage dpo"),
        (("  streaming: true\n", "  streaming: true\n  eval_ratio: 0.1\n"), 9, "no eval set"),
    ],
)
def test_check_refuses_what_a_stream_cannot_do(tmp_path: Path, change: tuple[str, str], line: int, words: str) -> None:
    text = PT_STREAM.replace(*change).replace("demo-pt", "demo-dpo" if "dpo" in change[1] else "demo-pt")
    (issue,) = errors_of(text, tmp_path)
    assert issue.line == line and words in issue.message
    assert issue.hint


def test_check_refuses_streaming_on_megatron(tmp_path: Path) -> None:
    text = PT_STREAM.replace("backend: deepspeed", "backend: megatron").replace("device: cpu", "device: cuda")
    issues = errors_of(text, tmp_path)
    assert any("megatron backend does not stream" in issue.message and issue.line == 8 for issue in issues)
