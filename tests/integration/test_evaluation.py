"""`factory eval` on the tiny random Llama: every task, comparisons, adapters, run directories, offline lm-eval."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from factory_cli.config.errors import UsageError
from factory_cli.evaluation import EvalRequest, default_report_path, read_report, run_eval, write_report
from factory_cli.evaluation.report import MODEL_KEYS, REPORT_KEYS, RESULT_KEYS

pytestmark = pytest.mark.integration

ALL_TASKS = ["ppl", "gsm8k_demo", "arc_demo", "math_demo_harness"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _request(model: str | Path, tasks: list[str], **extra: object) -> EvalRequest:
    options: dict[str, object] = {"limit": 4, "batch_size": 4, "max_new_tokens": 8, "device": "cpu", **extra}
    return EvalRequest(model=str(model), tasks=tasks, **options)  # type: ignore[arg-type]


def test_every_task_runs_and_the_report_round_trips(tiny_llama_dir: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    report = run_eval(_request(tiny_llama_dir, ALL_TASKS), progress=messages.append)
    (model,) = report.models
    assert model.kind == "full" and model.run_dir is None
    by_task: dict[str, list[str]] = {}
    for result in model.results:
        by_task.setdefault(result.task, []).append(result.metric)
        assert math.isfinite(result.value) and result.n == 4 and result.seconds > 0, result
        assert result.stderr is None or math.isfinite(result.stderr)
    assert by_task == {
        "ppl": ["perplexity"],
        "gsm8k_demo": ["accuracy"],
        "arc_demo": ["acc", "acc_norm"],
        "math_demo_harness": ["exact_match"],
    }
    ppl = model.results[0]
    assert ppl.value > 1000  # a random model over a 49k vocabulary is nearly uniform
    assert ppl.details["masking"] == "sft: assistant tokens" and ppl.details["dataset"] == "demo-sft-alpaca"
    gsm = model.results[1]
    assert 0.0 <= gsm.value <= 1.0 and len(gsm.details["examples"]) == 3
    assert any("ppl: done" in m for m in messages)
    assert default_report_path(report) is None

    path = tmp_path / "report.json"
    write_report(report, path)
    data = json.loads(path.read_text())
    assert tuple(data) == REPORT_KEYS
    assert all(tuple(r) == RESULT_KEYS for r in data["models"][0]["results"])
    assert data["request"]["limit"] == 4 and data["versions"]["lm-eval"]
    assert read_report(path).to_dict() == data


def test_compare_a_model_with_itself_gives_zero_deltas(tiny_llama_dir: Path) -> None:
    report = run_eval(_request(tiny_llama_dir, ["ppl", "gsm8k_demo", "arc_demo"], compare=str(tiny_llama_dir)))
    assert len(report.models) == 2
    assert {(d["task"], d["metric"]) for d in report.deltas} == {
        ("ppl", "perplexity"),
        ("gsm8k_demo", "accuracy"),
        ("arc_demo", "acc"),
        ("arc_demo", "acc_norm"),
    }
    for delta in report.deltas:
        assert delta["delta"] == pytest.approx(0.0, abs=1e-9), delta
        assert delta["relative"] in (None, pytest.approx(0.0, abs=1e-9))


def test_adapter_dir_evaluates_on_its_base(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    adapter = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    adapter.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    report = run_eval(_request(tmp_path / "adapter", ["ppl"], compare=str(tiny_llama_dir)))
    assert [m.kind for m in report.models] == ["adapter", "full"]
    # a fresh LoRA adapter (B = 0) changes nothing: the merged model scores exactly like its base
    assert report.deltas[0]["delta"] == pytest.approx(0.0, abs=1e-6)


def test_run_directory_resolves_to_final_and_reports_into_the_run(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    run = tmp_path / "runs" / "exp"
    shutil.copytree(tiny_llama_dir, run / "final")
    job = {
        "backend": "deepspeed",
        "stage": "sft",
        "model": {"name_or_path": str(tiny_llama_dir), "template": "auto"},
        "data": {"train": [{"path": "demo-sft-alpaca"}], "eval": [{"path": "demo-sft-messages"}], "max_length": 96},
    }
    (run / "job.yaml").write_text(yaml.safe_dump(job))
    report = run_eval(_request(run, ["ppl"]))
    (model,) = report.models
    assert model.run_dir == str(run) and model.path == str(run / "final") and model.kind == "full"
    ppl = model.results[0]
    assert ppl.details["dataset"] == "demo-sft-messages (run eval data)" and ppl.details["max_length"] == 96
    path = default_report_path(report)
    assert path is not None and path.parent == run / "eval" and path.suffix == ".json"
    write_report(report, path)
    assert read_report(path).models[0].run_dir == str(run)
    # `final/` itself names the same run; relative references are recorded as absolute paths (reports move)
    monkeypatch.chdir(tmp_path)
    again = run_eval(_request("runs/exp/final", ["ppl"], limit=1)).models[0]
    assert (again.run_dir, again.path) == (str(run), str(run / "final"))


def test_ppl_on_plain_text_scores_every_token(tiny_llama_dir: Path) -> None:
    report = run_eval(_request(tiny_llama_dir, ["ppl"], dataset="demo-pt", limit=2))
    ppl = report.models[0].results[0]
    assert ppl.details["masking"] == "pt: all tokens" and ppl.n == 2 and ppl.details["tokens"] > 20


def _trainer_ppl(loaded: Any, sequences: list[tuple[list[int], list[int]]], batch_size: int, out: Path) -> float:
    """exp(eval_loss) of transformers' Trainer.evaluate over TRL's training collator (what training's eval reports)."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = Dataset.from_dict({"input_ids": [ids for ids, _ in sequences], "labels": [lab for _, lab in sequences]})
    args = TrainingArguments(
        output_dir=str(out), per_device_eval_batch_size=batch_size, report_to=[], use_cpu=True, disable_tqdm=True
    )
    collator = DataCollatorForLanguageModeling(pad_token_id=loaded.tokenizer.pad_token_id)
    trainer = Trainer(model=loaded.model, args=args, eval_dataset=rows, data_collator=collator)
    return math.exp(trainer.evaluate()["eval_loss"])


def test_ppl_is_the_training_loss_on_one_batch_and_does_not_depend_on_batching(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """Why `ppl` keeps its own loop (factory_cli/evaluation/perplexity.py): Trainer.evaluate with the training
    collator gives the same number only when one batch holds every row; its eval_loss averages per-batch means."""
    from factory_cli.config.schema import DatasetSpec
    from factory_cli.data.masking import resolve_chat_template
    from factory_cli.evaluation.perplexity import (
        PplSource,
        encode_rows,
        evaluate_perplexity,
        load_ppl_rows,
    )
    from factory_cli.inference.load import load_for_inference

    loaded = load_for_inference(str(tiny_llama_dir), device="cpu", dtype="fp32")
    template = resolve_chat_template("auto", loaded.tokenizer, None)
    source = PplSource((DatasetSpec(path="demo-sft-alpaca"),), "demo-sft-alpaca")
    rows = load_ppl_rows(source, 12)
    ours = [evaluate_perplexity(loaded, source, template, limit=12, batch_size=b, rows=rows).value for b in (1, 5, 12)]
    assert ours[0] == pytest.approx(ours[1], rel=1e-6) and ours[0] == pytest.approx(ours[2], rel=1e-6)
    sequences = encode_rows(rows.rows, loaded.tokenizer, template, 2048)
    assert _trainer_ppl(loaded, sequences, len(sequences), tmp_path / "one") == pytest.approx(ours[0], rel=1e-5)
    assert _trainer_ppl(loaded, sequences, 5, tmp_path / "five") != pytest.approx(ours[0], rel=1e-5)


def test_num_fewshot_reaches_the_harness(tiny_llama_dir: Path) -> None:
    report = run_eval(_request(tiny_llama_dir, ["arc_demo"], limit=2, num_fewshot=2))
    acc = report.models[0].results[0]
    assert acc.details["num_fewshot"] == 2
    prompt = acc.details["examples"][0]["prompt"]
    assert prompt.count("Question:") == 3 and prompt.endswith("Answer:")  # two solved examples, then the question


def test_a_user_yaml_task_over_local_files(tiny_llama_dir: Path, tmp_path: Path) -> None:
    rows = [{"question": f"Is {i} even?", "choices": ["yes", "no"], "answer": i % 2} for i in range(6)]
    (tmp_path / "even.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "even.yaml").write_text(
        "task: even_demo\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: even.jsonl\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_target: answer\ndoc_to_choice: '{{choices}}'\nmetric_list:\n  - metric: acc\n"
    )
    report = run_eval(_request(tiny_llama_dir, [f"lm:{tmp_path / 'even.yaml'}"]))
    (result,) = report.models[0].results
    assert result.metric == "acc" and result.n == 4 and 0.0 <= result.value <= 1.0


def test_hub_tasks_fail_offline_with_a_hint(tiny_llama_dir: Path) -> None:
    with pytest.raises(UsageError) as caught:
        run_eval(_request(tiny_llama_dir, ["lm:hellaswag"]))
    assert "needs its dataset from the Hugging Face Hub" in caught.value.message
    assert caught.value.hint is not None and "factory_cli/evaluation/lm_eval_tasks/" in caught.value.hint
    with pytest.raises(UsageError, match="lm-eval has no task or group `hellaswagg`") as unknown:
        run_eval(_request(tiny_llama_dir, ["lm:hellaswagg"]))
    assert unknown.value.hint is not None and "lm:hellaswag" in unknown.value.hint


def test_bad_model_reference_fails_before_loading(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="neither a model"):
        run_eval(_request(tmp_path / "empty", ["ppl"]))


# ------------------------------------------------------------------------------------------ the command line

WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def _factory(*args: str) -> tuple[int, str, str]:
    """`factory <args>` in-process through the typer app (user errors: exit 2, message on stderr)."""
    from typer.testing import CliRunner

    from factory_cli.cli import app

    result = CliRunner().invoke(app, list(args), env=WIDE)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_cli_eval_writes_a_json_report(tiny_llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    code, stdout, stderr = _factory(
        "eval", "--model", str(tiny_llama_dir), "--tasks", "ppl", "--limit", "3", "--device", "cpu", "-o", str(out)
    )
    assert code == 0, stderr
    assert "eval:" in stdout and "perplexity" in stdout and f"report: {out}" in " ".join(stdout.split())
    data = json.loads(out.read_text())
    assert tuple(data) == REPORT_KEYS and data["schema"] == 1 and data["deltas"] == []
    (model,) = data["models"]
    assert tuple(model) == MODEL_KEYS and model["kind"] == "full" and model["run_dir"] is None
    (result,) = model["results"]
    assert tuple(result) == RESULT_KEYS
    assert (result["task"], result["metric"], result["n"], result["higher_is_better"]) == (
        "ppl",
        "perplexity",
        3,
        False,
    )
    assert math.isfinite(result["value"]) and result["value"] > 1 and math.isfinite(result["stderr"])
    assert data["request"]["tasks"] == ["ppl"] and data["request"]["limit"] == 3
    assert data["request"]["ppl_dataset"] == "demo-sft-alpaca"
    assert {"torch", "transformers", "lm-eval"} <= set(data["versions"])


def test_cli_eval_of_a_job_reports_into_its_run(tiny_llama_dir: Path, tmp_path: Path) -> None:
    import yaml

    run = tmp_path / "runs" / "exp"
    job = {
        "backend": "deepspeed",
        "stage": "sft",
        "device": "cpu",
        "model": {"name_or_path": str(tiny_llama_dir)},
        "data": {"train": ["demo-sft-alpaca"], "eval": ["demo-sft-messages"], "max_length": 64},
        "output": {"dir": str(run)},
        "eval": {"tasks": "ppl,arc_demo", "limit": 2, "batch_size": 2},
    }
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job))
    code, _, stderr = _factory("eval", str(job_file))
    assert code == 2 and "has not finished training yet" in stderr and f"factory train {job_file}" in stderr
    code, _, stderr = _factory("eval", str(job_file), "--limit", "5")  # not silently dropped
    assert code == 2 and "--limit does not apply with a job file" in stderr and "eval.limit=" in stderr

    shutil.copytree(tiny_llama_dir, run / "final")  # what `factory train` leaves behind: final/ and job.yaml
    (run / "job.yaml").write_text(yaml.safe_dump(job))
    code, stdout, stderr = _factory("eval", str(job_file), "eval.limit=3")
    assert code == 0, stderr
    (path,) = (run / "eval").glob("*.json")
    assert f"report: {path}" in " ".join(stdout.split())
    data = json.loads(path.read_text())
    (model,) = data["models"]
    assert model["run_dir"] == str(run) and model["path"] == str(run / "final")
    assert [(r["task"], r["metric"]) for r in model["results"]] == [
        ("ppl", "perplexity"),
        ("arc_demo", "acc"),
        ("arc_demo", "acc_norm"),
    ]
    assert all(r["n"] == 3 for r in model["results"])  # the override beats the section's limit
    assert model["results"][0]["details"]["dataset"] == "demo-sft-messages (run eval data)"

    del job["eval"]
    job_file.write_text(yaml.safe_dump(job))
    code, _, stderr = _factory("eval", str(job_file))
    assert code == 2 and "has no `eval:` section" in stderr


def test_cli_eval_of_a_hub_task_offline_exits_2_without_retrying(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """No offline flag set, and the Hub endpoint refuses connections: one readable error, quickly, no retries."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env.update(WIDE, HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))  # an empty cache, a closed port
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "factory_cli", "eval", "--model", str(tiny_llama_dir), "--tasks", "lm:hellaswag"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    elapsed = time.perf_counter() - started
    assert proc.returncode == 2, proc.stderr
    err = " ".join(proc.stderr.split())
    assert "lm-eval task `hellaswag` needs its dataset from the Hugging Face Hub" in err
    assert "127.0.0.1:9 is not reachable" in err and "lm_eval_tasks" in err
    assert "Traceback" not in proc.stderr and "Retrying" not in proc.stderr
    assert elapsed < 90, elapsed


# ------------------------------------------------------------------------ scoring, with an oracle model


def _oracle_lm(wrong_every: int = 0) -> object:
    """An lm-eval LM that knows every answer (or misses every `wrong_every`-th question)."""
    from lm_eval.api.model import LM

    def right(instance: object) -> bool:
        return not wrong_every or getattr(instance, "doc_id", 0) % wrong_every != wrong_every - 1

    class Oracle(LM):
        def loglikelihood(self, requests: list) -> list[tuple[float, bool]]:  # type: ignore[type-arg]
            return [
                (0.0 if (r.idx == r.doc["answer"]) == right(r) else -5.0 - r.idx, False)  # a unique best choice
                for r in requests
            ]

        def loglikelihood_rolling(self, requests: list) -> list[float]:  # type: ignore[type-arg]
            raise AssertionError("not used")

        def generate_until(self, requests: list) -> list[str]:  # type: ignore[type-arg]
            answer = {True: "{a}", False: "{a}1"}
            return [f" 3 apples, so {answer[right(r)].format(a=r.doc['answer'])}." for r in requests]

    return Oracle()


@pytest.mark.parametrize(("wrong_every", "expected"), [(0, 1.0), (2, 0.5)])
def test_local_harness_tasks_score_right_answers_as_right(wrong_every: int, expected: float) -> None:
    from factory_cli.evaluation.harness import run_harness_task
    from factory_cli.evaluation.tasks import TASKS

    for name, metric in (("arc_demo", "acc"), ("math_demo_harness", "exact_match")):
        results = run_harness_task(
            _oracle_lm(wrong_every), TASKS[name], limit=10, num_fewshot=None, max_new_tokens=None
        )
        by_metric = {r.metric: r for r in results}
        result = by_metric[metric]
        assert (result.task, result.n, result.value) == (name, 10, expected), result
        assert result.stderr == pytest.approx(0.0 if expected == 1.0 else math.sqrt(0.25 / 9))


def test_gsm8k_demo_scores_with_the_math_reward(tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from factory_cli.evaluation import accuracy
    from factory_cli.inference import generate
    from factory_cli.inference.load import load_for_inference

    rows = accuracy.load_math_rows(limit=4)
    completions = [
        f"So the answer is {rows[0]['answer']}.",
        f"#### {rows[1]['answer']}",
        "I do not know.",
        f"The answer is {int(rows[3]['answer']) + 1}",
    ]
    monkeypatch.setattr(generate, "generate", lambda *args, **kwargs: completions)
    loaded = load_for_inference(str(tiny_llama_dir), device="cpu")
    result = accuracy.evaluate_math_accuracy(loaded, None, limit=4, batch_size=4, max_new_tokens=8)
    assert (result.value, result.n, result.details["no_answer"]) == (0.5, 4, 1)
    assert result.stderr == pytest.approx(math.sqrt(0.25 / 4))
    assert [e["correct"] for e in result.details["examples"]] == [True, True, False]
