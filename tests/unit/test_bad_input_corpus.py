"""Bad inputs that cannot live as files in broken_jobs/ (a FIFO, an unwritable folder, a file larger than what
check reads, a reward that hangs) or that are about train time (a reward failing inside a batch), each answered
with one message naming the file, key or row."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from factory_cli.config import checks
from factory_cli.config.errors import JobError
from factory_cli.config.load import parse_yaml_text
from factory_cli.config.validate import load_and_validate
from factory_cli.data.formats import FormatSpec, RowError, convert_row
from factory_cli.data.readers import ReadError, list_data_files, scan_file
from factory_cli.rewards.loader import LoadedReward, RewardCallError
from factory_cli.rewards.probe import probe_reward
from tests.unit.word_model import word_model

BROKEN_DIR = Path(__file__).resolve().parent / "broken_jobs"
ROW = '{"instruction": "Add 2 and 3.", "input": "", "output": "5"}\n'


def _job(tmp_path: Path, data: str, extra: str = "") -> Path:
    job = tmp_path / "job.yaml"
    job.write_text(
        "backend: deepspeed\nstage: sft\ndevice: cpu\nmodel:\n  name_or_path: smollm2-135m-instruct\n"
        f"data:\n  train: [{data}]\noutput:\n  dir: {tmp_path / 'run'}\n{extra}",
        encoding="utf-8",
    )
    return job


def _errors(job: Path) -> list[str]:
    with pytest.raises(JobError) as info:
        load_and_validate(job)
    return [f"{i.path}: {i.message}" for i in info.value.errors]


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail instead of hanging when a regression blocks (a FIFO opened for reading waits for a writer)."""

    def fail(*_: Any) -> None:
        raise TimeoutError("blocked")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_fifo_as_data_file_is_refused_without_opening_it(tmp_path: Path, alarm: None) -> None:
    fifo = tmp_path / "rows.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(ReadError, match="not a regular file"):
        list_data_files(fifo)
    assert _errors(_job(tmp_path, str(fifo))) == [
        "data.train[0]: rows.jsonl: not a regular file (a pipe, socket or device)"
    ]


def test_unwritable_output_dir(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        target = Path("/sys/factory-run")  # root writes anywhere but on a read-only file system
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "run"
    job = _job(tmp_path, str(BROKEN_DIR / "data" / "alpaca_rows.jsonl"))
    job.write_text(job.read_text().replace(str(tmp_path / "run"), str(target)))
    (error,) = _errors(job)
    assert error.startswith(f"output.dir: {target} cannot be created in {target.parent}")


def test_alias_bomb_is_refused_fast() -> None:
    text = (BROKEN_DIR / "yaml_alias_bomb.yaml").read_text()
    assert len(text.encode()) < 600
    started = time.perf_counter()
    with pytest.raises(JobError, match="expand it to more than"):
        parse_yaml_text(text, "bomb.yaml")
    assert time.perf_counter() - started < 1.0


def test_anchors_and_aliases_within_the_limit_still_load() -> None:
    loaded = parse_yaml_text("defaults: &d {lr: 1}\na: *d\nb: *d\n", "job.yaml")
    assert loaded.data["b"] == {"lr": 1}


def test_micro_batch_larger_than_the_data_is_a_warning_with_the_numbers(tmp_path: Path) -> None:
    job = _job(tmp_path, str(BROKEN_DIR / "data" / "alpaca_rows.jsonl"), "train:\n  micro_batch_size: 1000000\n")
    warnings = [f"{w.path}: {w.message}" for w in load_and_validate(job).warnings]
    assert any(
        w.startswith("train.micro_batch_size: micro 1000000 x data-parallel 1 = 1000000 samples") and "has 2 rows" in w
        for w in warnings
    ), warnings


def test_a_file_beyond_the_full_check_size_is_read_up_to_it_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.jsonl"
    big.write_text(ROW * 20_000 + "not json\n")  # ~1.2 MB, broken at its very end
    monkeypatch.setattr(checks, "FULL_CHECK_BYTES", 100_000)
    warnings = [f"{w.path}: {w.message}" for w in load_and_validate(_job(tmp_path, str(big))).warnings]
    assert any(
        "big.jsonl is 1 MB: check read its first 100 kB" in w and "the rest is read at train time" in w
        for w in warnings
    ), warnings
    monkeypatch.setattr(checks, "FULL_CHECK_BYTES", 10_000_000)
    assert _errors(_job(tmp_path, str(big))) == [
        "data.train[0]: big.jsonl:20001: invalid JSON at column 1: Expecting value"
    ]


def test_scan_counts_every_row(tmp_path: Path) -> None:
    file = tmp_path / "rows.jsonl"
    file.write_text(ROW * 12 + "\n")
    scan = scan_file(file, keep=5, max_bytes=1 << 30)
    assert (scan.rows, len(scan.first), scan.complete) == (12, 5, True)


def test_lone_surrogate_is_a_bad_row() -> None:
    row = {"instruction": "Say \ud800 hi.", "output": "hi"}
    with pytest.raises(RowError, match=r"lone surrogate \\ud800 at character 4") as info:
        convert_row(row, FormatSpec(format="alpaca"), "sft")
    assert info.value.field == "messages[0].content"


def _reward(function: Any, kind: str = "single") -> LoadedReward:
    return LoadedReward(getattr(function, "__name__", "reward"), kind, function)  # type: ignore[arg-type]


ROWS = [{"prompt": [{"role": "user", "content": "2+3?"}], "answer": "5"}]


def test_probe_stops_a_reward_that_hangs() -> None:
    def sleepy(completion: str, **_: Any) -> float:
        time.sleep(5)
        return 1.0

    started = time.perf_counter()
    with pytest.raises(RewardCallError, match=r"reward `sleepy` did not return within 0.2 s on 1 rows"):
        probe_reward(_reward(sleepy), ROWS, seconds=0.2)
    assert time.perf_counter() - started < 2


def test_verl_dict_uses_its_score() -> None:
    def compute_score(data_source: Any, solution_str: str, ground_truth: str, extra_info: Any = None) -> Any:
        return {"score": 0.75, "acc": 1.0}

    assert _reward(compute_score, "verl").score(["5"], [None], {"answer": ["5"]}) == [0.75]


def test_failing_reward_at_train_time_names_itself_the_row_and_the_users_line() -> None:
    def picky(completion: str, answer: str, **_: Any) -> float:
        return float(int(answer) / len(completion))

    with pytest.raises(RewardCallError) as info:
        _reward(picky).score(["5", ""], [None, None], {"answer": ["5", "7"]})
    assert info.value.message.startswith(
        "reward `picky` raised ZeroDivisionError: division by zero on row 1 of the batch"
    )
    assert "answer='7'" in info.value.message
    assert (
        info.value.hint is not None and "test_bad_input_corpus.py" in info.value.hint and "in picky" in info.value.hint
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf"), None, "1", True])
def test_unusable_reward_values_are_errors(value: Any) -> None:
    with pytest.raises(RewardCallError, match="reward `constant` returned"):
        LoadedReward("constant", "single", lambda completion, **_: value).score(["x"], [None], {})


def test_batch_reward_none_means_not_applicable() -> None:
    reward = LoadedReward("batch", "trl", lambda completions, **_: [None, 1])
    result = reward.score(["a", "b"], [None, None], {})
    assert result[1] == 1.0 and result[0] != result[0]


def test_scan_past_the_first_block_names_the_line_of_a_non_object(tmp_path: Path) -> None:
    file = tmp_path / "rows.jsonl"
    file.write_text(ROW * 1500 + "\n\n" + ROW * 997 + '["a", "b"]\n' + ROW * 10)
    with pytest.raises(ReadError, match="row 2500 is list") as info:
        scan_file(file, keep=5, max_bytes=1 << 30)
    assert info.value.line == 2500
    file.write_text(ROW * 1500 + "\n\n" + ROW * 1000)
    assert scan_file(file, keep=5, max_bytes=1 << 30).rows == 2500


def test_columns_named_like_our_parameters_reach_the_reward() -> None:
    reward = LoadedReward("cols", "single", lambda completion, index, columns, **_: float(index + columns))
    assert reward.score(["x"], [None], {"index": [1], "columns": [2]}) == [3.0]


def test_a_json_document_beyond_the_full_check_size_is_not_loaded_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.json"
    big.write_text("[" + ",".join([ROW.strip()] * 5000) + "]")
    monkeypatch.setattr(checks, "FULL_CHECK_BYTES", 100_000)
    warnings = [f"{w.path}: {w.message}" for w in load_and_validate(_job(tmp_path, str(big))).warnings]
    assert (
        "data.train[0]: big.json is 300 kB: check read none of it (one JSON document); the rest is read at train time"
        in warnings
    )


def test_parquet_rows_come_from_its_metadata(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"instruction": ["a"] * 7, "output": ["b"] * 7}), file)
    scan = scan_file(file, keep=2, max_bytes=1)
    assert (scan.rows, [n for n, _ in scan.first], scan.complete) == (7, [1, 2], True)


def test_rows_that_would_be_dropped_are_counted(tmp_path: Path) -> None:
    file = tmp_path / "rows.jsonl"
    file.write_text(ROW * 6 + '{"instruction": "no output"}\n' + ROW * 3 + '{"text": "plain"}\n')
    warnings = [f"{w.path}: {w.message}" for w in load_and_validate(_job(tmp_path, str(file))).warnings]
    assert any(
        w.startswith("data.train[0]: 2 of its 11 rows would be dropped at train time (first: row 7") for w in warnings
    ), warnings


def test_a_failing_batch_reward_names_the_batch() -> None:
    def batch(completions: list[str], **_: Any) -> list[float]:
        raise KeyError("answer")

    with pytest.raises(RewardCallError, match=r"reward `batch` raised KeyError: 'answer' on a batch of 2 rows"):
        LoadedReward("batch", "trl", batch).score(["a", "b"], [None, None], {"x": [1, 2]})


def test_preference_pairs_past_the_converted_rows_are_counted_by_the_scan(tmp_path: Path) -> None:
    file = tmp_path / "rows.jsonl"
    pair = '{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}\n'
    file.write_text(ROW * 1500 + "\n" + ROW * 600 + pair + ROW * 10 + pair)
    mark = checks._preference_mark(_sft_job(tmp_path), FormatSpec(format="auto"))
    assert mark is not None
    scan = scan_file(file, keep=5, max_bytes=1 << 30, mark=mark)
    assert (scan.rows, scan.marked, scan.first_marked) == (2112, 2, 2102)
    assert checks._preference_mark(_sft_job(tmp_path), FormatSpec(format="preference")) is None


def test_an_sft_dataset_of_pairs_only_is_a_warning_unless_declared(tmp_path: Path) -> None:
    file = tmp_path / "pairs.jsonl"
    file.write_text('{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}\n' * 3)
    job = load_and_validate(_job(tmp_path, str(file)))
    assert [w.message for w in job.warnings if w.path == "data.train[0]"] == [
        "every row is a preference pair (chosen/rejected): stage sft trains on the chosen answers only"
    ]
    declared = load_and_validate(_job(tmp_path, f"{{path: {file}, format: preference}}"))
    assert not [w for w in declared.warnings if w.path == "data.train[0]"]


def _sft_job(tmp_path: Path) -> Any:
    return load_and_validate(_job(tmp_path, str(BROKEN_DIR / "data" / "alpaca_rows.jsonl"))).job


def _long_prompt_job(tmp_path: Path, stage: str, rows: list[str], data_extra: str = "", extra: str = "") -> Path:
    tmp_path.mkdir(exist_ok=True)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(rows))
    job = tmp_path / "job.yaml"
    job.write_text(
        f"backend: deepspeed\nstage: {stage}\ndevice: cpu\nmodel:\n  name_or_path: {word_model(tmp_path / 'model')}\n"
        f"data:\n  train: [{data}]\n  max_length: 64\n{data_extra}output:\n  dir: {tmp_path / 'run'}\n{extra}",
        encoding="utf-8",
    )
    return job


LONG = "word " * 80  # 80 tokens, more than max_length 64
SFT_LONG = json.dumps({"instruction": LONG, "output": "5"}) + "\n"
SFT_SHORT = json.dumps({"instruction": "word word", "output": "5"}) + "\n"


def test_sft_whose_prompts_all_fill_max_length_is_refused(tmp_path: Path) -> None:
    assert _errors(_long_prompt_job(tmp_path, "sft", [SFT_LONG] * 3)) == [
        "data.train[0]: no row would be left to train on: the prompt of each of its 3 rows fills data.max_length: "
        "64 tokens, and training drops such rows"
    ]


def test_sft_rows_whose_prompt_fills_max_length_are_counted(tmp_path: Path) -> None:
    job = load_and_validate(_long_prompt_job(tmp_path, "sft", [SFT_SHORT, SFT_LONG, SFT_SHORT, SFT_LONG]))
    assert [w.message for w in job.warnings if w.path == "data.train[0]"] == [
        "2 of its 4 rows would be dropped at train time: the prompt alone fills data.max_length: 64 tokens "
        "(first: row 2 of rows.jsonl)"
    ]
    on_prompt = _long_prompt_job(tmp_path / "p", "sft", [SFT_LONG], "  train_on_prompt: true\n")
    assert not [w for w in load_and_validate(on_prompt).warnings if w.path == "data.train[0]"]


def test_dpo_and_grpo_prompts_beyond_their_limit(tmp_path: Path) -> None:
    pair = json.dumps({"prompt": LONG, "chosen": "yes", "rejected": "no"}) + "\n"
    (error,) = _errors(_long_prompt_job(tmp_path / "dpo", "dpo", [pair] * 2))
    assert error.startswith("data.train[0]: no row would be left to train on: the prompt of each of its 2 rows fills")
    grpo = "grpo:\n  rewards: [math_answer]\n  max_prompt_length: 80\n"
    rows = [
        json.dumps({"prompt": LONG, "answer": "5"}) + "\n",
        json.dumps({"prompt": LONG + "word", "answer": "5"}) + "\n",
    ]
    job = load_and_validate(_long_prompt_job(tmp_path / "grpo", "grpo", rows, extra=grpo))
    assert [w.message for w in job.warnings if w.path == "data.train[0]"] == [
        "1 of its 2 rows would be dropped at train time: the prompt alone is longer than grpo.max_prompt_length: "
        "80 tokens (first: row 2 of rows.jsonl)"
    ]


def test_a_dataset_info_entry_whose_file_is_missing_names_the_path() -> None:
    (error,) = _errors(BROKEN_DIR / "data_info_missing_file.yaml")
    missing = BROKEN_DIR / "data" / "info_missing_file" / "rows_v2.jsonl"
    assert error == f"data.train[0]: dataset `mydata` is {missing}, which does not exist"


def test_a_trl_reward_is_probed_with_completions_as_trl_gives_them(tmp_path: Path) -> None:
    """GRPOTrainer hands a TRL-signature reward conversational completions ([{role, content}]); check's call must
    too, or it refuses a reward that works and passes one that fails at train time."""
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(
        "def first_content(completions, **kwargs):\n"
        "    return [float(c[0]['content'] == '5') for c in completions]\n"
        "def as_text(completions, **kwargs):\n"
        "    return [float(c.strip() == '5') for c in completions]\n"
    )
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "2+3?", "answer": "5"}\n' * 3)

    def grpo_job(function: str) -> Path:
        job = _job(tmp_path, str(data), f"grpo:\n  rewards: [{{function: {rewards}:{function}}}]\n")
        job.write_text(job.read_text().replace("stage: sft", "stage: grpo"))
        return job

    assert load_and_validate(grpo_job("first_content")).job.stage == "grpo"
    (error,) = _errors(grpo_job("as_text"))
    assert error.startswith("grpo.rewards[0]: reward `as_text` raised AttributeError: 'list' object has no attribute")


def test_no_row_left_counts_the_invalid_rows_as_dropped_too(tmp_path: Path) -> None:
    invalid = json.dumps({"instruction": "word"}) + "\n"  # no output: dropped as invalid at train time
    (error,) = _errors(_long_prompt_job(tmp_path, "sft", [SFT_LONG] * 6 + [invalid]))
    assert error.startswith("data.train[0]: no row would be left to train on: the prompt of each of its 6 valid rows")
