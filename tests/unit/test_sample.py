"""`factory sample` without a model: selection, the request's checks, the rows and their resumable writing, the
prompts, the scoring through the GRPO rewards, the command line's messages and the job's `sample:` section."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from factory_cli.config.errors import UsageError
from factory_cli.config.schema import DatasetSpec, RewardSpec
from factory_cli.data.formats import FormatSpec, convert_row
from factory_cli.sampling.output import RowWriter, pair_row, sft_row, state_dir
from factory_cli.sampling.prompts import Prompt, read_prompts
from factory_cli.sampling.request import SampleRequest, parse_rewards, validate_request
from factory_cli.sampling.scoring import Scorer
from factory_cli.sampling.selection import Pair, accepted, pair, select
from tests.unit.test_cli import REPO_ROOT, run_cli

ANSWERS = ["a", "b", "c", "d", "e"]


def _request(tmp_path: Path, **changes: Any) -> SampleRequest:
    base: dict[str, Any] = {
        "model": "some-model",
        "datasets": (DatasetSpec(path="demo-grpo-math"),),
        "rewards": (RewardSpec(name="math_answer"),),
        "output": tmp_path / "rft.jsonl",
    }
    return SampleRequest(**{**base, **changes})


# ------------------------------------------------------------------------------------------------ selection


def test_best_keeps_the_highest_accepted_answer_and_ties_keep_the_earlier() -> None:
    scores = [0.0, 1.0, 1.2, 1.2, 0.5]
    assert select(ANSWERS, scores, "best", 2, 1.0) == [2]
    assert select(ANSWERS, scores, "top-k", 2, 1.0) == [2, 3]
    assert select(ANSWERS, scores, "all", 2, 1.0) == [2, 3, 1]
    assert select(ANSWERS, scores, "all", 2, 0.5) == [2, 3, 1, 4]


def test_nothing_is_kept_below_the_threshold() -> None:
    assert select(ANSWERS, [0.0, 0.9, 0.2, 0.0, 0.1], "all", 2, 1.0) == []
    assert accepted(ANSWERS, [0.0, 0.9, 0.2, 0.0, 0.1], 0.9) == [1]


def test_the_same_answer_twice_is_kept_once_and_empty_answers_never() -> None:
    answers = ["42", " 42 ", "", "41", "42"]
    scores = [1.0, 1.0, 1.0, 1.0, 1.0]
    assert select(answers, scores, "all", 2, 1.0) == [0, 3]


def test_pair_is_best_accepted_against_the_worst_lower_answer() -> None:
    assert pair(ANSWERS, [0.0, 1.0, 0.3, 1.1, 0.0], 1.0) == Pair(chosen=3, rejected=0)
    # nothing accepted: no pair, even though the scores differ
    assert pair(ANSWERS, [0.0, 0.5, 0.3, 0.9, 0.0], 1.0) is None
    # every answer scores the same: nothing to prefer
    assert pair(ANSWERS, [1.0] * 5, 1.0) is None
    # the rejected answer must be a real one (an empty completion is no assistant message)
    assert pair(["right", "", "wrong"], [1.0, 0.0, 0.5], 1.0) == Pair(chosen=0, rejected=2)


# ------------------------------------------------------------------------------------------------ request


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"n": 0}, "--n must be at least 1"),
        ({"temperature": 0.0}, "--temperature 0 is greedy"),
        ({"pairs": True, "n": 1, "temperature": 1.0}, "--pairs needs at least 2 answers"),
        ({"pairs_output": Path("p.jsonl"), "n": 1, "temperature": 1.0}, "--pairs-output needs at least 2 answers"),
        ({"pairs_output": Path("p.jsonl"), "pairs": True}, "--pairs writes the pairs to -o; --pairs-output"),
        ({"pairs_output": Path("pairs.json")}, "--pairs-output pairs.json: the pairs are written as JSON lines"),
        ({"keep": "most"}, "unknown --keep `most`"),
        ({"k": 0}, "--k must be at least 1"),
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"engine": "sglang"}, "unknown --engine `sglang`"),
        ({"output": Path("rows.json")}, "written as JSON lines"),
        ({"datasets": ()}, "no prompts to sample for"),
    ],
)
def test_request_mistakes_are_named_with_a_fix(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(UsageError) as caught:
        validate_request(_request(tmp_path, **changes))
    assert expected in caught.value.message and caught.value.hint


def test_greedy_with_one_answer_is_allowed(tmp_path: Path) -> None:
    validate_request(_request(tmp_path, temperature=0.0, n=1))


def test_rewards_option_takes_builtins_and_files() -> None:
    specs = parse_rewards("math_answer, my_rewards.py:score")
    assert [(s.name, s.function) for s in specs] == [("math_answer", None), (None, "my_rewards.py:score")]
    with pytest.raises(UsageError, match="no reward"):
        parse_rewards(" , ")


def test_fingerprint_covers_what_decides_the_rows(tmp_path: Path) -> None:
    one = _request(tmp_path).fingerprint()
    assert one == _request(tmp_path, device="cpu", force=True).fingerprint()  # where it runs does not decide rows
    for change in (
        {"seed": 1},
        {"n": 4},
        {"keep": "all"},
        {"min_score": 0.5},
        {"pairs": True},
        {"limit": 3},
        {"pairs_output": Path("p.jsonl")},
    ):
        assert _request(tmp_path, **change).fingerprint() != one, change


# ------------------------------------------------------------------------------------------------ rows


PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]


def test_sft_rows_are_what_stage_sft_reads() -> None:
    row = sft_row("demo:1", PROMPT, "5", 1.0, "runs/grpo/final")
    assert convert_row(row, FormatSpec("auto"), "sft") == {"messages": [*PROMPT, {"role": "assistant", "content": "5"}]}
    assert (row["prompt_id"], row["score"], row["model"]) == ("demo:1", 1.0, "runs/grpo/final")


def test_pair_rows_are_what_stage_dpo_reads() -> None:
    row = pair_row("demo:1", PROMPT, ("5", 1.1), ("6", 0.0), "m")
    assert convert_row(row, FormatSpec("auto"), "dpo") == {
        "prompt": PROMPT,
        "chosen": [{"role": "assistant", "content": "5"}],
        "rejected": [{"role": "assistant", "content": "6"}],
    }
    assert (row["score"], row["rejected_score"], row["model"]) == (1.1, 0.0, "m")


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_killed_run_continues_after_its_last_recorded_batch(tmp_path: Path) -> None:
    output = tmp_path / "data" / "rft.jsonl"
    fingerprint = {"seed": 1}
    writer = RowWriter(output, fingerprint, force=False)
    assert writer.open().batches == 0
    writer.write_batch(0, [{"messages": 0}], [{"prompt_id": "p0"}])
    writer.write_batch(1, [{"messages": 1}, {"messages": 2}], [{"prompt_id": "p1"}])
    # a kill after batch 2's rows were written, and in the middle of its progress line
    with open(output, "a") as handle:
        handle.write('{"messages": 3}\n{"messa')
    with open(writer.progress, "a") as handle:
        handle.write('{"batch": 2, "end": 9')
    resumed = RowWriter(output, fingerprint, force=False).open()
    assert resumed.batches == 2 and [g["prompt_id"] for g in resumed.groups] == ["p0", "p1"]
    assert _lines(output) == [{"messages": 0}, {"messages": 1}, {"messages": 2}]
    assert len(_lines(writer.progress)) == 3  # the fingerprint and two batches; the cut line is gone
    RowWriter(output, fingerprint, force=False).write_batch(2, [{"messages": 3}], [{"prompt_id": "p2"}])
    assert [r["messages"] for r in _lines(output)] == [0, 1, 2, 3]


def test_pairs_beside_the_sft_rows_are_cut_back_with_them(tmp_path: Path) -> None:
    """--pairs-output: a kill after a batch's SFT rows and pairs were written, before its progress line, takes both
    back to the last recorded batch."""
    output, pairs = tmp_path / "rft.jsonl", tmp_path / "pairs.jsonl"
    writer = RowWriter(output, {"seed": 1}, force=False, pairs=pairs)
    assert writer.open().batches == 0 and pairs.read_bytes() == b""
    writer.write_batch(0, [{"messages": 0}], [{"prompt_id": "p0"}], [{"chosen": 0}])
    writer.write_batch(1, [{"messages": 1}], [{"prompt_id": "p1"}], [])  # a batch that gave no pair
    line = _lines(writer.progress)[-1]
    assert (line["end"], line["pairs_end"]) == (output.stat().st_size, pairs.stat().st_size)
    with open(output, "a") as handle:
        handle.write('{"messages": 2}\n')
    with open(pairs, "a") as handle:
        handle.write('{"chosen": 2}\n{"cho')
    resumed = RowWriter(output, {"seed": 1}, force=False, pairs=pairs).open()
    assert resumed.batches == 2
    assert _lines(output) == [{"messages": 0}, {"messages": 1}] and _lines(pairs) == [{"chosen": 0}]


def test_a_pairs_output_not_written_by_sample_is_never_overwritten(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"mine": 1}\n')
    with pytest.raises(UsageError, match=r"pairs\.jsonl exists and was not written by `factory sample`"):
        RowWriter(tmp_path / "rft.jsonl", {}, force=False, pairs=pairs).open()
    assert pairs.read_text() == '{"mine": 1}\n'


def test_an_output_of_another_request_is_refused_unless_forced(tmp_path: Path) -> None:
    output = tmp_path / "rft.jsonl"
    RowWriter(output, {"seed": 1}, force=False).open()
    RowWriter(output, {"seed": 1}, force=False).write_batch(0, [{"x": 1}], [])
    with pytest.raises(UsageError, match="different `factory sample` request") as caught:
        RowWriter(output, {"seed": 2}, force=False).open()
    assert "--force" in str(caught.value.hint)
    assert RowWriter(output, {"seed": 2}, force=True).open().batches == 0
    assert output.read_text() == ""


def test_a_run_that_wrote_no_batch_does_not_hold_the_output(tmp_path: Path) -> None:
    output = tmp_path / "rft.jsonl"
    RowWriter(output, {"model": "typo"}, force=False).open()  # then the model failed to load
    assert RowWriter(output, {"model": "fixed"}, force=False).open().batches == 0
    assert _lines(RowWriter(output, {}, force=False).progress) == [{"fingerprint": {"model": "fixed"}}]


def test_a_file_not_written_by_sample_is_never_overwritten(tmp_path: Path) -> None:
    output = tmp_path / "mine.jsonl"
    output.write_text('{"messages": []}\n')
    with pytest.raises(UsageError, match="was not written by `factory sample`"):
        RowWriter(output, {}, force=False).open()
    assert output.read_text() == '{"messages": []}\n'


def test_state_lives_in_a_dotted_folder_a_dataset_folder_skips(tmp_path: Path) -> None:
    from factory_cli.data.readers import list_data_files

    output = tmp_path / "data" / "rft.jsonl"
    writer = RowWriter(output, {}, force=False)
    writer.open()
    writer.write_batch(0, [{"messages": 1}], [])
    assert state_dir(output).name == ".rft.jsonl.sample"
    assert list_data_files(output.parent) == [output]


# ------------------------------------------------------------------------------------------------ prompts


def test_prompts_are_named_by_dataset_and_row_number() -> None:
    found = read_prompts([DatasetSpec(path="demo-grpo-math")], limit=3)
    assert [p.prompt_id for p in found.prompts] == ["demo-grpo-math:1", "demo-grpo-math:2", "demo-grpo-math:3"]
    first = found.prompts[0]
    assert first.messages == [{"role": "user", "content": first.row["prompt"][0]["content"]}]
    assert first.columns()["answer"] == "91" and first.columns()["data_source"] == "demo_math"


def test_a_row_id_names_the_prompt_and_bad_rows_are_counted(tmp_path: Path) -> None:
    data = tmp_path / "q.jsonl"
    rows = [{"id": "q-7", "prompt": "1+1?", "answer": "2"}, {"prompt": ""}, {"question": "2+2?", "answer": 4}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    found = read_prompts([DatasetSpec(path=str(data))], limit=None)
    assert [p.prompt_id for p in found.prompts] == ["q-7", f"{data}:3"]
    assert found.invalid == 1 and "row 2" in found.invalid_examples[0]


def test_repeated_ids_and_no_usable_prompt_are_refused(tmp_path: Path) -> None:
    twice = tmp_path / "twice.jsonl"
    twice.write_text('{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n')
    with pytest.raises(UsageError, match="prompt id `1` is used twice"):
        read_prompts([DatasetSpec(path=str(twice))], limit=None)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"prompt": ""}\n')
    with pytest.raises(UsageError, match="no usable prompt"):
        read_prompts([DatasetSpec(path=str(empty))], limit=None)


# ------------------------------------------------------------------------------------------------ scoring


def test_rewards_combine_as_grpo_combines_them(tmp_path: Path) -> None:
    rewards_file = tmp_path / "my_rewards.py"
    rewards_file.write_text(
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
        "    return {'score': 0.5 if data_source == 'demo_math' else 0.0}\n"
        "def only_short(completions, **kwargs):\n"
        "    return [None if len(c) > 3 else 1.0 for c in completions]\n"
    )
    specs = [
        RewardSpec(name="math_answer"),
        RewardSpec(function=f"{rewards_file}:compute_score", weight=2.0),
        RewardSpec(function=f"{rewards_file}:only_short", weight=0.1),
    ]
    prompt = Prompt("p", {"prompt": PROMPT, "answer": "5", "data_source": "demo_math"})
    scorer = Scorer.load(specs, [tmp_path], probe=[prompt])
    scores = scorer.score(prompt, ["The answer is 5.", "6", "5"])
    assert scores.by_reward["math_answer"] == [1.0, 0.0, 1.0]
    assert scores.by_reward["compute_score"] == [0.5, 0.5, 0.5]
    assert scores.by_reward["only_short"] == [0.0, 1.0, 1.0]  # None: does not apply, counts 0
    assert scores.totals == pytest.approx([2.0, 1.1, 2.1])
    assert all(math.isfinite(t) for t in scores.totals)


def test_a_reward_that_cannot_score_the_data_is_refused_before_any_model_loads() -> None:
    prompt = Prompt("p", {"prompt": PROMPT})
    with pytest.raises(UsageError, match="compares with each row's `answer`"):
        Scorer.load([RewardSpec(name="math_answer")], [], probe=[prompt])
    with pytest.raises(UsageError, match="no built-in reward named `math`"):
        Scorer.load([RewardSpec(name="math")], [], probe=[prompt])


# ------------------------------------------------------------------------------------------------ command line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sample", "--data", "demo-grpo-math", "-o", "x.jsonl"], "missing --model"),
        (["sample", "-m", "m", "--data", "demo-grpo-math", "--rewards", "math_answer"], "missing -o"),
        (["sample", "-m", "m", "--data", "demo-grpo-math", "-o", "x.jsonl"], "no reward to score the answers"),
        (["sample", "-m", "m", "--data", "nope-data", "--rewards", "math_answer", "-o", "x.jsonl"], "nope-data"),
        (["sample", "-m", "m", "--data", "demo-grpo-math", "--rewards", "math", "-o", "x.jsonl"], "no built-in"),
        (["sample", "-m", "m", "--data", "demo-grpo-math", "--rewards", "math_answer", "-o", "x.json"], "JSON lines"),
    ],
)
def test_user_mistakes_are_one_message(args: list[str], expected: str, tmp_path: Path) -> None:
    code, _, err = run_cli([*args[:-1], str(tmp_path / args[-1])] if args[-2] == "-o" else args)
    assert code == 2, err
    assert expected in " ".join(err.split()) and "Traceback" not in err


def test_a_mistake_is_reported_without_importing_torch(tmp_path: Path) -> None:
    script = (
        "import sys\nfrom factory_cli.cli import app\n"
        "try:\n    app(['sample', '-m', 'm', '--data', 'demo-grpo-math', '--rewards', 'math_answer', '--n', '0',"
        f" '-o', {str(tmp_path / 'x.jsonl')!r}])\n"
        "except SystemExit as exc:\n    assert exc.code == 2, exc.code\n"
        "print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "--n must be at least 1" in " ".join(done.stderr.split())


def _job(tmp_path: Path, sample: dict[str, Any] | None) -> Path:
    job: dict[str, Any] = {
        "backend": "deepspeed",
        "stage": "grpo",
        "device": "cpu",
        "model": {"name_or_path": "smollm2-135m-instruct-gguf"},
        "data": {"train": ["demo-grpo-math"]},
        "grpo": {"rewards": ["math_answer", {"name": "length", "weight": 0.1}]},
        "output": {"dir": str(tmp_path / "run")},
    }
    if sample is not None:
        job["sample"] = sample
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_a_job_section_defaults_to_the_run_its_data_and_its_rewards(tmp_path: Path) -> None:
    from factory_cli.sampling.from_job import request_from_job

    job = _job(tmp_path, {"output": str(tmp_path / "rft.jsonl"), "n": 4, "keep": "top-k", "k": 3})
    with pytest.raises(UsageError, match="has not finished training yet"):
        request_from_job(job, [], None, "auto", force=False)
    (tmp_path / "run" / "final").mkdir(parents=True)
    request = request_from_job(job, ["sample.seed=7"], None, "auto", force=False)
    assert request.model == str(tmp_path / "run" / "final")
    assert [d.path for d in request.datasets] == ["demo-grpo-math"]
    assert [(r.name, r.weight) for r in request.rewards] == [("math_answer", 1.0), ("length", 0.1)]
    assert (request.n, request.keep, request.k, request.seed, request.device) == (4, "top-k", 3, 7, "cpu")
    assert request.pairs_output is None
    request = request_from_job(job, ["sample.pairs_output=data/pairs.jsonl"], None, "auto", force=False)
    assert request.pairs_output == Path("data/pairs.jsonl") and not request.pairs


def test_a_job_without_a_sample_section_or_with_options_is_one_message(tmp_path: Path) -> None:
    job = _job(tmp_path, None)
    code, _, err = run_cli(["sample", str(job)])
    assert code == 2 and "has no `sample:` section" in err
    job = _job(tmp_path, {"output": "rft.jsonl"})
    code, _, err = run_cli(["sample", str(job), "--n", "4"])
    assert code == 2 and "--n does not apply with a job file" in " ".join(err.split())
    assert "sample.n=" in " ".join(err.split())
    code, _, err = run_cli(["sample", str(job), "sample.keep=most"])
    assert code == 2 and "sample.keep" in err


# ------------------------------------------------------------------------------------------------ the run


class _ScriptedEngine:
    """Answers from a list instead of a model; Ctrl-C at the batch named."""

    name = "transformers"

    def __init__(self, stop_at: int | None) -> None:
        self.stop_at = stop_at

    def generate(self, prompts: list[Prompt], sampling: Any, batch: int) -> list[list[str]]:
        if batch == self.stop_at:
            raise KeyboardInterrupt
        return [[str(p.row["answer"]), "no idea", "12345"][: sampling.n] for p in prompts]

    def close(self) -> None:
        pass


def test_ctrl_c_keeps_the_written_batches_and_says_how_to_continue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from factory_cli.sampling import run

    request = _request(tmp_path, model="scripted", n=3, limit=4, batch_size=2, engine="transformers")
    monkeypatch.setattr(run, "open_engine", lambda name, request: _ScriptedEngine(stop_at=1))
    notes: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run.run_sample(request, say=notes.append, show_progress=False)
    assert notes[-1] == "stopped after 2 of 4 prompts; the same command continues from there"
    assert [r["prompt_id"] for r in _lines(request.output)] == ["demo-grpo-math:1", "demo-grpo-math:2"]

    monkeypatch.setattr(run, "open_engine", lambda name, request: _ScriptedEngine(stop_at=None))
    summary = run.run_sample(request, say=notes.append, show_progress=False)
    rows = _lines(request.output)
    assert [r["prompt_id"] for r in rows] == [f"demo-grpo-math:{i}" for i in range(1, 5)]
    assert all(r["score"] == 1.0 and r["model"] == "scripted" for r in rows)
    assert (summary.resumed_batches, summary.generated_now, summary.samples) == (1, 6, 12)
    assert (summary.accepted_samples, summary.groups_accepted, summary.groups_without) == (4, 4, 0)
    assert summary.acceptance_rate == pytest.approx(4 / 12)
