"""prepare_data: every stage's output shape, the counts in the report, packing, mixing, eval split and the cache."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from factory_cli.config.schema import DeepSpeedJob
from factory_cli.data.chat_templates import named_template
from factory_cli.data.masking import IGNORE_INDEX
from factory_cli.data.pipeline import (
    REASON_LONG_PROMPT,
    REASON_NO_ASSISTANT,
    DataError,
    DataReport,
    PreparedData,
    load_prepared,
    prepare_data,
)

REGISTRY = Path(__file__).resolve().parents[2] / "datasets_registry"
CHATML = named_template("chatml")  # no default system prompt: token counts below are easy to reason about
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"]


def make_job(stage: str, train: list[Any], **data: Any) -> DeepSpeedJob:
    job: dict[str, Any] = {
        "backend": "deepspeed",
        "stage": stage,
        "model": {"name_or_path": "tiny"},
        "data": {"train": train, **data},
    }
    if stage == "grpo":
        job["grpo"] = {"rewards": ["accuracy"], **data.pop("grpo", {})}
        job["data"] = {"train": train, **data}
    if stage == "dpo":
        job["dpo"] = {}
    return DeepSpeedJob.model_validate(job)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def words(n: int, start: int = 0) -> str:
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(n))


def prepare(job: DeepSpeedJob, tokenizer: Any, tmp_path: Path, template: str | None = CHATML) -> PreparedData:
    return prepare_data(job, tokenizer, template, [tmp_path], cache_root=tmp_path / "cache")


def rows_of(prepared: PreparedData) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    train, evaluation = load_prepared(
        {"train": str(prepared.train_path), "eval": str(prepared.eval_path) if prepared.eval_path else None}
    )
    return list(train), list(evaluation) if evaluation is not None else None


def supervised_text(tokenizer: Any, row: dict[str, Any]) -> str:
    kept = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != IGNORE_INDEX]
    return str(tokenizer.decode(kept, skip_special_tokens=False))


# ----------------------------------------------------------------------------------------------- sft


def test_sft_rows_masks_and_invalid_rows_with_row_numbers(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(8)]
    del rows[2]["output"], rows[5]["output"]
    write_jsonl(tmp_path / "qa.jsonl", rows)
    prepared = prepare(make_job("sft", ["qa.jsonl"]), smollm2_tokenizer, tmp_path)
    report = prepared.report.datasets[0]
    assert (report.label, report.rows, report.converted, report.invalid) == ("qa.jsonl", 8, 6, 2)
    assert report.invalid_examples[0].startswith("qa.jsonl row 3: ")
    assert "`output`" in report.invalid_examples[0]
    assert report.invalid_examples[1].startswith("qa.jsonl row 6: ")
    assert prepared.report.lines()[0].startswith("qa.jsonl: 8 rows, 6 used, 2 invalid (first: row 3: ")
    assert prepared.sample_prompt == [{"role": "user", "content": "Question 0?"}]

    train, evaluation = rows_of(prepared)
    assert evaluation is None and len(train) == prepared.report.train_rows == 6
    assert set(train[0]) == {"input_ids", "labels"}
    answers = sorted(supervised_text(smollm2_tokenizer, row) for row in train)
    assert answers == sorted(f"Answer {i}.<|im_end|>" for i in (0, 1, 3, 4, 6, 7))
    assert report.tokens == sum(len(row["input_ids"]) for row in train)
    assert report.supervised_tokens == sum(sum(label != IGNORE_INDEX for label in row["labels"]) for row in train)


def test_sft_truncation_is_counted_and_rows_without_assistant_tokens_dropped(
    smollm2_tokenizer: Any, tmp_path: Path
) -> None:
    write_jsonl(
        tmp_path / "long.jsonl",
        [
            {"instruction": "Hi", "output": "Hello"},  # ~12 tokens: fits
            {"instruction": "Hi", "output": words(14)},  # the answer is cut at max_length
            {"instruction": words(14), "output": "Hello"},  # the prompt alone fills max_length
        ],
    )
    prepared = prepare(make_job("sft", ["long.jsonl"], max_length=16), smollm2_tokenizer, tmp_path)
    report = prepared.report.datasets[0]
    assert (report.truncated, report.dropped, report.used) == (1, 1, 2)
    assert report.dropped_reasons == {REASON_NO_ASSISTANT: 1}
    assert "1 truncated" in report.line() and f"1 dropped (1 {REASON_NO_ASSISTANT})" in report.line()
    train, _ = rows_of(prepared)
    assert len(train) == 2 and all(len(row["input_ids"]) <= 16 for row in train)
    assert max(len(row["input_ids"]) for row in train) == 16


def test_train_on_prompt_labels_every_token(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "qa.jsonl", [{"instruction": "Hi", "output": "Hello"}])
    train, _ = rows_of(prepare(make_job("sft", ["qa.jsonl"], train_on_prompt=True), smollm2_tokenizer, tmp_path))
    assert train[0]["labels"] == train[0]["input_ids"]


def test_sft_packing_keeps_labels_aligned_with_input_ids(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    rows = [{"instruction": f"Q{i}: " + words(i % 7 + 1, i), "output": words(i % 5 + 1, i + 3)} for i in range(40)]
    write_jsonl(tmp_path / "qa.jsonl", rows)
    packed = prepare(make_job("sft", ["qa.jsonl"], max_length=64, packing=True), smollm2_tokenizer, tmp_path)
    plain = prepare(make_job("sft", ["qa.jsonl"], max_length=64, packing=False), smollm2_tokenizer, tmp_path)
    assert packed.cache_key != plain.cache_key
    packed_rows, _ = rows_of(packed)
    plain_rows, _ = rows_of(plain)
    assert packed.report.packed_sequences == len(packed_rows) < len(plain_rows) == packed.report.train_rows
    segments = []
    for row in packed_rows:
        assert set(row) == {"input_ids", "labels", "seq_lengths"}
        assert len(row["input_ids"]) == len(row["labels"]) == sum(row["seq_lengths"]) <= 64
        start = 0
        for length in row["seq_lengths"]:
            segments.append((row["input_ids"][start : start + length], row["labels"][start : start + length]))
            start += length
    assert sorted(segments) == sorted((row["input_ids"], row["labels"]) for row in plain_rows)


def test_worker_processes_give_the_same_rows(
    smollm2_tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from factory_cli.data import pipeline

    monkeypatch.setattr(pipeline, "ENCODE_BATCH", 4)  # several batches for the workers (forked: they see it too)
    rows = [{"instruction": f"Q{i} " + words(i % 6 + 1, i), "output": words(i % 4 + 1)} for i in range(18)]
    rows[5]["history"] = "not a list"
    write_jsonl(tmp_path / "qa.jsonl", rows)
    results = []
    for workers in (1, 2):
        job = make_job("sft", ["qa.jsonl"], num_workers=workers, cache_dir=str(tmp_path / f"cache{workers}"))
        prepared = prepare_data(job, smollm2_tokenizer, CHATML, [tmp_path])
        results.append((rows_of(prepared), prepared.report.to_dict()))
    assert results[0] == results[1]
    assert results[0][1]["datasets"][0]["invalid"] == 1


def test_missing_chat_template_is_a_data_error(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "qa.jsonl", [{"instruction": "Hi", "output": "Hello"}])
    with pytest.raises(DataError, match="needs a chat template") as caught:
        prepare(make_job("sft", ["qa.jsonl"]), smollm2_tokenizer, tmp_path, template=None)
    assert caught.value.hint and "model.template" in caught.value.hint


def test_wholly_invalid_or_empty_dataset_is_a_data_error(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "bad.jsonl", [{"question": "no answer column"}, {"instruction": "Hi"}])
    with pytest.raises(DataError, match=r"bad.jsonl: none of its 2 rows is valid for stage sft") as caught:
        prepare(make_job("sft", ["bad.jsonl"], cache_dir=str(tmp_path / "c")), smollm2_tokenizer, tmp_path)
    assert caught.value.hint and "format" in caught.value.hint
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="has no rows"):
        prepare(make_job("sft", ["empty.jsonl"]), smollm2_tokenizer, tmp_path)
    # Nothing half-built is left in the cache.
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "cache" / "data").iterdir())


def test_unknown_dataset_and_offline_hub_dataset(
    smollm2_tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DataError, match="not a file"):
        prepare(make_job("sft", ["nothing_here.jsonl"]), smollm2_tokenizer, tmp_path)

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("offline mode is enabled")

    monkeypatch.setattr("datasets.load_dataset", offline)
    with pytest.raises(DataError, match="some-org/some-data") as caught:
        prepare(make_job("sft", ["some-org/some-data"]), smollm2_tokenizer, tmp_path)
    assert caught.value.hint == "download it or give a local file (json, jsonl, csv or parquet)"


# ----------------------------------------------------------------------------------------------- pt


def test_pt_packing_keeps_every_token(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    texts = [words(n, n) for n in (3, 50, 7, 12, 90, 1, 33, 20)]
    write_jsonl(tmp_path / "text.jsonl", [{"text": t} for t in texts])
    eos = smollm2_tokenizer.eos_token_id
    documents = [smollm2_tokenizer(t)["input_ids"] + [eos] for t in texts]
    long_docs = sum(len(d) > 32 for d in documents)
    assert long_docs >= 2

    packed = prepare(make_job("pt", ["text.jsonl"], max_length=32), smollm2_tokenizer, tmp_path)
    rows, _ = rows_of(packed)
    assert packed.report.datasets[0].long_documents == long_docs
    assert packed.report.datasets[0].tokens == sum(len(d) for d in documents)
    assert packed.report.packed_sequences == len(rows)
    pieces = []
    for row in rows:
        assert set(row) == {"input_ids", "seq_lengths"}
        assert sum(row["seq_lengths"]) == len(row["input_ids"]) <= 32
        start = 0
        for length in row["seq_lengths"]:
            pieces.append(row["input_ids"][start : start + length])
            start += length
    assert Counter(t for p in pieces for t in p) == Counter(t for d in documents for t in d)
    for piece in pieces:  # each packed sequence is a contiguous part of one document
        assert any(d[i : i + len(piece)] == piece for d in documents for i in range(0, len(d) - len(piece) + 1, 32)), (
            piece
        )

    chunked = prepare(make_job("pt", ["text.jsonl"], max_length=32, packing=False), smollm2_tokenizer, tmp_path)
    rows, _ = rows_of(chunked)
    assert chunked.report.packed_sequences is None
    assert all(set(row) == {"input_ids"} and len(row["input_ids"]) <= 32 for row in rows)
    chunks = sorted(d[i : i + 32] for d in documents for i in range(0, len(d), 32))
    assert sorted(r["input_ids"] for r in rows) == chunks


# ----------------------------------------------------------------------------------------------- dpo / grpo


def test_dpo_keeps_conversations_and_counts_truncation(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome."},
            {"prompt": "Say a lot.", "chosen": words(40), "rejected": "No."},
            {"prompt": "Only chosen", "chosen": "Yes."},
        ],
    )
    prepared = prepare(make_job("dpo", ["pairs.jsonl"], max_length=32), smollm2_tokenizer, tmp_path)
    report = prepared.report.datasets[0]
    assert (report.rows, report.used, report.invalid, report.truncated) == (3, 2, 1, 1)
    assert "row 3" in report.invalid_examples[0]
    train, _ = rows_of(prepared)
    assert set(train[0]) == {"prompt", "chosen", "rejected"}
    by_prompt = {row["prompt"][0]["content"]: row for row in train}
    assert by_prompt["Capital of France?"] == {
        "prompt": [{"role": "user", "content": "Capital of France?"}],
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "Rome."}],
    }
    assert prepared.sample_prompt == [{"role": "user", "content": "Capital of France?"}]


def test_grpo_keeps_every_field_and_drops_long_prompts(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "math.jsonl",
        [
            {"prompt": "1 + 1?", "answer": "2", "data_source": "math"},
            {"prompt": "2 + 2?", "answer": 4, "data_source": "math", "level": 3},
            {"prompt": "Read this: " + words(60), "answer": "x", "data_source": "math"},
            {"prompt": "3 + 3?", "solution": "6"},
        ],
    )
    job = make_job("grpo", ["math.jsonl"], grpo={"max_prompt_length": 40})
    prepared = prepare(job, smollm2_tokenizer, tmp_path)
    report = prepared.report.datasets[0]
    assert (report.used, report.dropped, report.dropped_reasons) == (3, 1, {REASON_LONG_PROMPT: 1})
    train, _ = rows_of(prepared)
    assert {"prompt", "answer", "data_source", "level", "solution"} <= set(train[0])
    by_answer = {row["answer"]: row for row in train}
    assert set(by_answer) == {"2", "4", "6"}
    assert by_answer["4"]["level"] == 3 and by_answer["2"]["level"] is None
    assert by_answer["6"]["data_source"] is None
    assert by_answer["2"]["prompt"] == [{"role": "user", "content": "1 + 1?"}]


def test_grpo_dataset_whose_prompts_are_all_too_long(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "long.jsonl", [{"prompt": words(80), "answer": "1"}])
    job = make_job("grpo", ["long.jsonl"], grpo={"max_prompt_length": 16})
    with pytest.raises(DataError, match="no row is left") as caught:
        prepare(job, smollm2_tokenizer, tmp_path)
    assert caught.value.hint and "grpo.max_prompt_length" in caught.value.hint


# ----------------------------------------------------------------------------------------------- mix / eval


def test_interleave_follows_the_weights(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_jsonl(tmp_path / f"{name}.jsonl", [{"prompt": f"{name} {i}?", "data_source": name} for i in range(200)])
    job = make_job(
        "grpo",
        [{"path": "a.jsonl", "weight": 3}, {"path": "b.jsonl", "weight": 1}],
        mix={"strategy": "interleave", "stop": "first_exhausted"},
    )
    train, _ = rows_of(prepare(job, smollm2_tokenizer, tmp_path))
    counts = Counter(row["data_source"] for row in train)
    assert counts["a"] == 200  # first_exhausted: ends when a (drawn 3 times as often) runs out
    assert 0.68 < counts["a"] / len(train) < 0.82


def test_interleave_all_exhausted_uses_every_row_and_repeats_the_smaller_source(
    smollm2_tokenizer: Any, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"a {i}?", "data_source": "a"} for i in range(60)])
    write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"b {i}?", "data_source": "b"} for i in range(10)])
    job = make_job(
        "grpo",
        [{"path": "a.jsonl", "weight": 3}, {"path": "b.jsonl", "weight": 1}],
        mix={"strategy": "interleave", "stop": "all_exhausted"},
    )
    train, _ = rows_of(prepare(job, smollm2_tokenizer, tmp_path))
    counts = Counter(row["data_source"] for row in train)
    distinct = {s: {json.dumps(r["prompt"]) for r in train if r["data_source"] == s} for s in counts}
    # every row of both sources is used; b (drawn a quarter of the time) runs out first and starts over
    assert (len(distinct["a"]), len(distinct["b"])) == (60, 10)
    assert counts["b"] > 10
    assert 0.68 < counts["a"] / len(train) < 0.82


def test_concat_shuffles_and_eval_ratio_holds_out_rows(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "qa.jsonl", [{"instruction": f"Q{i}", "output": f"A{i}"} for i in range(50)])
    prepared = prepare(make_job("sft", ["qa.jsonl"], eval_ratio=0.2), smollm2_tokenizer, tmp_path)
    assert (prepared.report.train_rows, prepared.report.eval_rows) == (40, 10)
    train, evaluation = rows_of(prepared)
    assert evaluation is not None
    train_answers = [supervised_text(smollm2_tokenizer, r) for r in train]
    eval_answers = [supervised_text(smollm2_tokenizer, r) for r in evaluation]
    assert set(train_answers).isdisjoint(eval_answers)
    assert sorted(train_answers + eval_answers) == sorted(f"A{i}<|im_end|>" for i in range(50))
    assert train_answers != sorted(train_answers, key=lambda a: int(a[1:].split("<")[0]))  # shuffled
    assert "eval: 10 rows" in prepared.report.lines()[-1]


def test_the_same_seed_holds_out_the_same_rows_on_deepspeed_and_verl(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    """One split (held_out_rows): prepare_data (deepspeed) and verl's split_rows hold out the same rows."""
    from factory_cli.backends.verl.backend import split_rows
    from factory_cli.config.schema import VerlJob
    from factory_cli.data.pipeline import held_out_rows, read_canonical_rows

    write_jsonl(tmp_path / "a.jsonl", [{"instruction": f"Q{i}", "output": f"A{i}"} for i in range(30)])
    write_jsonl(tmp_path / "b.jsonl", [{"instruction": f"Q{i}", "output": f"A{i}"} for i in range(30, 50)])
    for seed in (7, 42):
        data = {"train": ["a.jsonl", "b.jsonl"], "eval_ratio": 0.2, "seed": seed}
        prepared = prepare(make_job("sft", data["train"], eval_ratio=0.2, seed=seed), smollm2_tokenizer, tmp_path)
        _, evaluation = rows_of(prepared)
        assert evaluation is not None
        deepspeed_held = {supervised_text(smollm2_tokenizer, r).removesuffix("<|im_end|>") for r in evaluation}
        verl_job = VerlJob.model_validate(
            {"backend": "verl", "stage": "sft", "model": {"name_or_path": "tiny"}, "data": data}
        )
        rows = read_canonical_rows(verl_job, verl_job.data.train, [tmp_path])
        train, held = split_rows(verl_job, rows)
        verl_held = {row["messages"][-1]["content"] for row in held}
        assert len(verl_held) == 10 and len(train) == 40
        assert verl_held == deepspeed_held == {f"A{i}" for i in held_out_rows(50, 0.2, seed)}
    with pytest.raises(DataError, match="leaves no training rows"):
        held_out_rows(1, 0.5, 0)


def test_eval_datasets_are_reported_separately(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"instruction": f"Q{i}", "output": f"A{i}"} for i in range(6)])
    write_jsonl(tmp_path / "dev.jsonl", [{"instruction": "Qx", "output": "Ax"}, {"instruction": "Qy"}])
    prepared = prepare(make_job("sft", ["train.jsonl"], eval=["dev.jsonl"]), smollm2_tokenizer, tmp_path)
    train_report, eval_report = prepared.report.datasets
    assert (train_report.role, eval_report.role, eval_report.invalid) == ("train", "eval", 1)
    assert prepared.report.lines()[1].startswith("dev.jsonl (eval): 2 rows, 1 used, 1 invalid")
    _, evaluation = rows_of(prepared)
    assert evaluation is not None and [supervised_text(smollm2_tokenizer, r) for r in evaluation] == ["Ax<|im_end|>"]


# ----------------------------------------------------------------------------------------------- cache


class _RefusesToTokenize:
    """The same tokenizer (same fingerprint) that fails the test if asked to tokenize anything."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __len__(self) -> int:
        return len(self._inner)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cache hit must not tokenize")


def test_cache_hit_returns_the_stored_data_without_tokenizing(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [{"instruction": f"Q{i}", "output": f"A{i}"} for i in range(5)])
    job = make_job("sft", ["qa.jsonl"], eval_ratio=0.2)
    first = prepare(job, smollm2_tokenizer, tmp_path)
    again = prepare(job, _RefusesToTokenize(smollm2_tokenizer), tmp_path)
    assert (first.from_cache, again.from_cache) == (False, True)
    assert (again.cache_key, again.train_path, again.eval_path) == (first.cache_key, first.train_path, first.eval_path)
    assert again.report.to_dict() == first.report.to_dict()
    assert again.sample_prompt == first.sample_prompt
    assert rows_of(again) == rows_of(first)

    write_jsonl(path, [{"instruction": f"Q{i}", "output": f"B{i}"} for i in range(5)])  # same name, new content
    changed = prepare(job, smollm2_tokenizer, tmp_path)
    assert changed.cache_key != first.cache_key and not changed.from_cache
    other_settings = prepare(make_job("sft", ["qa.jsonl"], eval_ratio=0.4), smollm2_tokenizer, tmp_path)
    assert other_settings.cache_key not in (first.cache_key, changed.cache_key)


def test_report_round_trips_through_a_dict(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "qa.jsonl", [{"instruction": "Hi", "output": "Hello"}, {"instruction": "No answer"}])
    report = prepare(make_job("sft", ["qa.jsonl"]), smollm2_tokenizer, tmp_path).report
    data = json.loads(json.dumps(report.to_dict()))
    assert DataReport.from_dict(data) == report


# ----------------------------------------------------------------------------------------------- demo data


def _demo_entries() -> list[tuple[str, str]]:
    entries = []
    for path in sorted(REGISTRY.glob("*.yaml")):
        entry = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(entry, dict) and entry.get("stage") and entry.get("file"):
            entries.append((entry["name"], entry["stage"]))
    return entries


@pytest.mark.skipif(not _demo_entries(), reason="no demo datasets in datasets_registry/")
def test_demo_datasets_prepare_with_no_invalid_rows(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    template = smollm2_tokenizer.chat_template
    for name, stage in _demo_entries():
        prepared = prepare(make_job(stage, [name], max_length=512), smollm2_tokenizer, tmp_path, template)
        (report,) = prepared.report.datasets
        assert report.rows > 0 and report.invalid == 0, (name, report.invalid_examples)
        assert report.dropped == 0, (name, report.dropped_reasons)
        assert prepared.report.train_rows == report.used
