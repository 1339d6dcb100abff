"""Evaluation without a model: the task catalog, name resolution, the report's JSON schema, deltas, ppl statistics."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from factory_cli.config.errors import UsageError
from factory_cli.evaluation.perplexity import (
    IGNORE_INDEX,
    PplSource,
    encode_rows,
    length_batches,
    load_ppl_rows,
    perplexity_stats,
)
from factory_cli.evaluation.report import (
    DELTA_KEYS,
    MODEL_KEYS,
    REPORT_KEYS,
    RESULT_KEYS,
    EvalReport,
    ModelResults,
    TaskResult,
    compute_deltas,
    default_report_path,
    format_value,
    print_report,
    read_report,
    write_report,
)
from factory_cli.evaluation.run import EvalRequest, ppl_source, validate_request
from factory_cli.evaluation.tasks import LOCAL_HARNESS_DIR, TASKS, describe_tasks, resolve_task, resolve_tasks


def test_catalog_names_kinds_and_metrics() -> None:
    assert list(TASKS) == ["ppl", "gsm8k_demo", "arc_demo", "math_demo_harness"]
    assert (TASKS["ppl"].kind, TASKS["ppl"].metric, TASKS["ppl"].higher_is_better) == (
        "perplexity",
        "perplexity",
        False,
    )
    assert (TASKS["gsm8k_demo"].kind, TASKS["gsm8k_demo"].metric) == ("generation", "accuracy")
    for name in ("arc_demo", "math_demo_harness"):
        spec = TASKS[name]
        assert spec.kind == "harness" and spec.local_yaml == LOCAL_HARNESS_DIR / f"{name}.yaml"
        assert spec.local_yaml.is_file()
    rows = describe_tasks()
    assert [r[0] for r in rows] == [*TASKS, "lm:<task>"]
    assert all(len(r) == 4 and all(r) for r in rows)


def test_resolve_task_names_and_harness_prefix(tmp_path: Path) -> None:
    assert resolve_task(" ppl ") is TASKS["ppl"]
    builtin = resolve_task("lm:hellaswag")
    assert (builtin.name, builtin.kind, builtin.harness_task, builtin.local_yaml) == (
        "lm:hellaswag",
        "harness",
        "hellaswag",
        None,
    )
    assert resolve_task("lm:arc_demo") is TASKS["arc_demo"]  # our local tasks answer to the lm: form too
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("task: mine\n")
    mine = resolve_task(f"lm:{yaml_file}")
    assert mine.local_yaml == yaml_file.resolve() and mine.kind == "harness"


@pytest.mark.parametrize(
    ("name", "hint"),
    [("gsm8k_dmo", "did you mean `gsm8k_demo`?"), ("arc-demo", "did you mean `arc_demo`?"), ("hellaswag", "lm:")],
)
def test_unknown_task_has_a_did_you_mean(name: str, hint: str) -> None:
    with pytest.raises(UsageError) as caught:
        resolve_task(name)
    assert f"unknown eval task `{name}`" in caught.value.message
    assert caught.value.hint is not None and hint in caught.value.hint


def test_bad_harness_references() -> None:
    with pytest.raises(UsageError, match="needs an lm-eval task name"):
        resolve_task("lm:")
    with pytest.raises(UsageError, match="task file not found"):
        resolve_task("lm:./nowhere/task.yaml")


def test_resolve_tasks_splits_commas_and_deduplicates() -> None:
    specs = resolve_tasks(["ppl,arc_demo", "ppl", " lm:arc_demo ", "lm:hellaswag"])
    assert [s.name for s in specs] == ["ppl", "arc_demo", "lm:hellaswag"]
    with pytest.raises(UsageError, match="no eval task"):
        resolve_tasks([" , "])


def test_catalog_and_report_import_without_torch() -> None:
    code = (
        "import sys, factory_cli.evaluation as e; e.describe_tasks(); e.resolve_task('ppl');"
        "assert not {'torch', 'transformers', 'lm_eval'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------- requests


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"limit": 0}, "--limit"),
        ({"batch_size": 0}, "--batch-size"),
        ({"num_fewshot": -1}, "--num-fewshot"),
        ({"max_new_tokens": 0}, "--max-new-tokens"),
        ({"device": "tpu"}, "unknown device"),
        ({"dtype": "int3"}, "unknown dtype"),
        ({"tasks": ["pll"]}, "unknown eval task"),
        ({"model": " "}, "no model"),
    ],
)
def test_request_validation(change: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"model": "m", "tasks": ["ppl"]}
    with pytest.raises(UsageError, match=message):
        validate_request(EvalRequest(**{**base, **change}))


def _write_run(tmp_path: Path, data: dict[str, Any], stage: str = "sft") -> Path:
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    job = {"backend": "deepspeed", "stage": stage, "model": {"name_or_path": "x"}, "data": data}
    (run / "job.yaml").write_text(json.dumps(job))  # JSON is YAML
    return run


def test_ppl_source_defaults_dataset_and_run_job(tmp_path: Path) -> None:
    default = ppl_source(EvalRequest(model="m", tasks=["ppl"]), [None])
    assert [s.path for s in default.specs] == ["demo-sft-alpaca"] and default.stage is None
    given = ppl_source(EvalRequest(model="m", tasks=["ppl"], dataset="demo-pt"), [None])
    assert [s.path for s in given.specs] == ["demo-pt"]
    run = _write_run(
        tmp_path, {"train": ["demo-sft-alpaca"], "eval": [{"path": "demo-sft-messages"}], "max_length": 64}
    )
    from_run = ppl_source(EvalRequest(model="m", tasks=["ppl"]), [None, run])
    assert [s.path for s in from_run.specs] == ["demo-sft-messages"]
    assert (from_run.stage, from_run.max_length) == ("sft", 64) and run in from_run.base_dirs
    assert "run eval data" in from_run.label
    train_only = _write_run(tmp_path / "b", {"train": [{"path": "demo-dpo"}]}, stage="dpo")
    assert [s.path for s in ppl_source(EvalRequest(model="m", tasks=["ppl"]), [train_only]).specs] == ["demo-dpo"]


# ---------------------------------------------------------------------------------------------- ppl maths


def test_perplexity_stats_formula() -> None:
    sums, counts = [2.0, 6.0, 1.0], [2, 3, 4]
    ppl, stderr, mean_nll = perplexity_stats(sums, counts)
    assert mean_nll == pytest.approx(9.0 / 9)
    assert ppl == pytest.approx(math.e)
    # delta method: Var(L) = N/(N-1) * sum(n_i^2 (m_i - L)^2) / (sum n_i)^2
    spread = 4 * (1 - 1) ** 2 + 9 * (2 - 1) ** 2 + 16 * (0.25 - 1) ** 2
    assert stderr == pytest.approx(math.e * math.sqrt(3 / 2 * spread / 81))
    same = perplexity_stats([1.0, 2.0], [1, 2])
    assert same[1] == pytest.approx(0.0)
    single = perplexity_stats([3.0], [3])
    assert single[1] is None and single[0] == pytest.approx(math.e)
    with pytest.raises(UsageError):
        perplexity_stats([0.0], [0])


def test_length_batches_bound_rows_and_padded_tokens() -> None:
    assert length_batches([5, 50, 10, 40], batch_size=2) == [[1, 3], [2, 0]]
    assert length_batches([5, 50, 10, 40], batch_size=8, max_tokens=100) == [[1, 3], [2, 0]]
    assert length_batches([300, 10], batch_size=8, max_tokens=100) == [[0], [1]]  # one long row still runs
    assert sorted(i for b in length_batches(list(range(1, 30)), 4) for i in b) == list(range(29))


def test_ppl_rows_and_masks_follow_training(smollm2_tokenizer: Any) -> None:
    from factory_cli.data.masking import tokenizer_chat_template

    template = tokenizer_chat_template(smollm2_tokenizer)
    sft = load_ppl_rows(PplSource((_spec("demo-sft-alpaca"),), "demo-sft-alpaca"), limit=3)
    pt = load_ppl_rows(PplSource((_spec("demo-pt"),), "demo-pt"), limit=2)
    dpo = load_ppl_rows(PplSource((_spec("demo-dpo"),), "demo-dpo"), limit=1)
    grpo = load_ppl_rows(PplSource((_spec("demo-eval-math"),), "demo-eval-math"), limit=1)
    assert [s for s, _ in sft.rows] == ["sft"] * 3 and sft.read == 3
    assert [s for s, _ in pt.rows + dpo.rows + grpo.rows] == ["pt", "pt", "dpo", "grpo"]
    encoded = encode_rows(sft.rows + pt.rows + dpo.rows + grpo.rows, smollm2_tokenizer, template, max_length=512)
    for (stage, row), (ids, labels) in zip(sft.rows + pt.rows + dpo.rows + grpo.rows, encoded, strict=True):
        scored = [t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
        if stage == "pt":
            assert labels == ids and ids[-1] == smollm2_tokenizer.eos_token_id
            continue
        assert 0 < len(scored) < len(ids)  # the prompt is not scored
        answer = {"sft": lambda r: r["messages"][-1]["content"], "dpo": lambda r: r["chosen"][-1]["content"]}.get(
            stage, lambda r: r["answer"]
        )(row)
        assert smollm2_tokenizer.decode(scored).strip().startswith(answer.strip()[:20])
    short = encode_rows(sft.rows[:1], smollm2_tokenizer, template, max_length=8)
    assert len(short[0][0]) == 8


def _spec(path: str) -> Any:
    from factory_cli.config.schema import DatasetSpec

    return DatasetSpec(path=path)


def test_ppl_without_a_chat_template_is_a_usage_error(smollm2_tokenizer: Any) -> None:
    rows = load_ppl_rows(PplSource((_spec("demo-sft-alpaca"),), "demo-sft-alpaca"), limit=1)
    with pytest.raises(UsageError, match="needs a chat template"):
        encode_rows(rows.rows, smollm2_tokenizer, None, max_length=64)
    with pytest.raises(UsageError, match="is not a file, a registry name"):
        load_ppl_rows(PplSource((_spec("no-such-dataset"),), "x"), limit=1)


# ------------------------------------------------------------------------------------------------ reports


def _model(name: str, values: dict[tuple[str, str], float], run_dir: str | None = None) -> ModelResults:
    results = [
        TaskResult(task, metric, value, 0.01, 10, 1.5, {"k": [1, 2]}, higher_is_better=metric != "perplexity")
        for (task, metric), value in values.items()
    ]
    return ModelResults(model=name, kind="full", results=results, path=name, run_dir=run_dir)


def test_deltas_are_model_minus_compare() -> None:
    a = _model("a", {("ppl", "perplexity"): 8.0, ("arc_demo", "acc"): 0.5, ("only_a", "acc"): 1.0, ("z", "acc"): 0.1})
    b = _model("b", {("ppl", "perplexity"): 10.0, ("arc_demo", "acc"): 0.4, ("z", "acc"): 0.0})
    deltas = {(d["task"], d["metric"]): d for d in compute_deltas(a, b)}
    assert set(deltas) == {("ppl", "perplexity"), ("arc_demo", "acc"), ("z", "acc")}
    ppl = deltas[("ppl", "perplexity")]
    assert (ppl["model"], ppl["compare"], ppl["delta"], ppl["relative"]) == (8.0, 10.0, -2.0, -0.2)
    assert ppl["higher_is_better"] is False
    assert deltas[("arc_demo", "acc")]["delta"] == pytest.approx(0.1)
    assert deltas[("arc_demo", "acc")]["relative"] == pytest.approx(0.25)
    assert deltas[("z", "acc")]["relative"] is None  # relative to zero is undefined
    same = compute_deltas(b, b)
    assert [d["delta"] for d in same] == [0.0, 0.0, 0.0]


def test_report_json_schema_is_stable(tmp_path: Path) -> None:
    a = _model("runs/x/final", {("ppl", "perplexity"): 8.0, ("arc_demo", "acc"): 0.5}, run_dir=str(tmp_path / "x"))
    b = _model("base", {("ppl", "perplexity"): float("inf"), ("arc_demo", "acc"): 0.4})
    report = EvalReport(models=[a, b], deltas=compute_deltas(a, b), request={"model": "x", "base_dirs": (Path("p"),)})
    data = report.to_dict()
    assert tuple(data) == REPORT_KEYS == ("schema", "created", "models", "deltas", "request", "versions")
    assert data["schema"] == 1
    assert tuple(data["models"][0]) == MODEL_KEYS == ("model", "kind", "path", "run_dir", "results")
    assert tuple(data["models"][0]["results"][0]) == RESULT_KEYS
    assert RESULT_KEYS == ("task", "metric", "value", "stderr", "n", "seconds", "higher_is_better", "details")
    assert tuple(data["deltas"][0]) == DELTA_KEYS
    assert DELTA_KEYS == ("task", "metric", "model", "compare", "delta", "relative", "higher_is_better")
    assert data["models"][1]["results"][0]["value"] is None  # inf is not JSON
    assert data["request"]["base_dirs"] == ["p"]
    path = tmp_path / "deep" / "report.json"
    write_report(report, path)
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    again = read_report(path)
    assert again.to_dict() == json.loads(text)
    with pytest.raises(ValueError, match="schema"):
        EvalReport.from_dict({**data, "schema": 99})


def test_default_report_path_lands_in_the_run(tmp_path: Path) -> None:
    report = EvalReport(models=[_model("m", {("ppl", "perplexity"): 1.0})], created="2025-03-04T05:06:07Z")
    assert default_report_path(report) is None
    report.models.append(_model("r", {}, run_dir=str(tmp_path / "run")))
    assert default_report_path(report) == tmp_path / "run" / "eval" / "20250304-050607.json"


def test_print_report_single_and_compare(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from factory_cli.ui import console

    monkeypatch.setattr(console, "_width", 200)  # a wide terminal: no wrapped cells
    a = _model("runs/exp/final", {("ppl", "perplexity"): 8.0, ("arc_demo", "acc"): 0.5})
    b = _model("base", {("ppl", "perplexity"): 10.0, ("arc_demo", "acc"): 0.4})
    print_report(EvalReport(models=[a]))
    single = capsys.readouterr().out
    assert "8.0000 ± 0.0100" in single and "arc_demo" in single
    print_report(EvalReport(models=[a, b], deltas=compute_deltas(a, b)))
    both = capsys.readouterr().out
    assert "-2.0000 (-20.0%) better" in both and "+0.1000 (+25.0%) better" in both and "lower is better" in both
    assert format_value(None) == "-" and format_value(123.456, 1.0) == "123.46 ± 1.00"


# ------------------------------------------------------------------------------------ local lm-eval tasks


def test_local_harness_tasks_point_at_existing_files(tmp_path: Path) -> None:
    from factory_cli.evaluation.harness import local_task_config

    for name in ("arc_demo", "math_demo_harness"):
        config = local_task_config(LOCAL_HARNESS_DIR / f"{name}.yaml")
        assert config["task"] == name and config["dataset_path"] == "json"
        test_file = Path(config["dataset_kwargs"]["data_files"]["test"])
        assert test_file.is_absolute() and test_file.is_file()
    (tmp_path / "rows.jsonl").write_text('{"q": "a", "a": "b"}\n')
    (tmp_path / "t.yaml").write_text("task: t\ndataset_path: json\ndataset_kwargs:\n  data_files: [rows.jsonl]\n")
    assert local_task_config(tmp_path / "t.yaml")["dataset_kwargs"]["data_files"] == [str(tmp_path / "rows.jsonl")]
    (tmp_path / "u.yaml").write_text("task: u\ndataset_path: json\ndataset_kwargs:\n  data_files: {test: gone.jsonl}\n")
    with pytest.raises(UsageError, match=r"gone\.jsonl"):
        local_task_config(tmp_path / "u.yaml")


def test_the_narrow_index_is_used_only_when_it_holds_every_member(tmp_path: Path) -> None:
    from lm_eval.tasks import TaskManager

    from factory_cli.evaluation.harness import _members_known, builtin_task_manager

    files = {
        "a.yaml": "task: t_a\ndataset_path: json\ntag: my_tag\n",
        "b.yaml": "task: t_b\ndataset_path: json\ntag: [my_tag]\n",
        "g_in.yaml": "group: g_in\ntask:\n  - t_a\n  - my_tag\n  - task: t_b\n",
        "g_out.yaml": "group: g_out\ntask:\n  - t_a\n  - t_elsewhere\n",
        "g_nested.yaml": "group: g_nested\ntask:\n  - g_in\n  - group: g_out\n",
        "g_loop.yaml": "group: g_loop\ntask:\n  - g_loop\n  - t_b\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    narrow = TaskManager(include_defaults=False, include_path=str(tmp_path))
    known = {name: _members_known(name, narrow) for name in ("t_a", "my_tag", "g_in", "g_out", "g_nested", "g_loop")}
    assert known == {"t_a": True, "my_tag": True, "g_in": True, "g_out": False, "g_nested": False, "g_loop": True}
    assert not _members_known("t_elsewhere", narrow)

    mmlu = builtin_task_manager("mmlu")  # a group of 57 tasks, all in lm-eval's mmlu/ folder: no full index
    assert "mmlu" in mmlu.all_groups and len(mmlu.all_tasks) < 1000
    assert builtin_task_manager("mmlu") is mmlu  # the pre-run check and the run share one manager
    with pytest.raises(UsageError, match="no task or group `hellaswagg`") as caught:
        builtin_task_manager("hellaswagg")
    assert "lm:hellaswag" in str(caught.value.hint)


def test_demo_arc_rows_are_well_formed() -> None:
    from factory_cli.registry.datasets import load_dataset_registry

    entry = load_dataset_registry()["demo-arc-mc"]
    assert entry.file is not None
    rows = [json.loads(line) for line in entry.file.read_text().splitlines()]
    assert len(rows) == 40 and len({r["question"] for r in rows}) == 40
    for row in rows:
        assert len(row["choices"]) == 4 and len(set(row["choices"])) == 4 and row["answer"] in range(4)
    assert {r["answer"] for r in rows} == {0, 1, 2, 3}


# ------------------------------------------------------------------------------------------ the Hub, offline


def test_hub_probe_follows_endpoint_and_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from factory_cli import hub

    for name in ("HF_ENDPOINT", "HTTPS_PROXY", "https_proxy", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert hub.hub_address() == ("huggingface.co", 443)
    assert not hub.hub_offline_configured()
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert hub.hub_offline_configured() and hub.hub_unavailable() == "offline mode is on (HF_HUB_OFFLINE)"
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    with socket.socket() as server:  # a port that accepts, and one that refuses
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub.hub_reachable(timeout=2)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert hub.hub_address() == ("127.0.0.1", 9) and not hub.hub_reachable(timeout=2)
    assert hub.hub_unavailable() == "127.0.0.1:9 is not reachable from here"
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert hub.hub_address() == ("proxy.internal", 3128)


def test_hub_offline_sets_and_restores_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import datasets.config
    import huggingface_hub.constants

    from factory_cli.hub import hub_offline, offline_unless_reachable

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    with hub_offline():
        assert os.environ["HF_DATASETS_OFFLINE"] == "1"
        assert huggingface_hub.constants.is_offline_mode() and datasets.config.HF_HUB_OFFLINE
    assert "HF_DATASETS_OFFLINE" not in os.environ
    assert not huggingface_hub.constants.HF_HUB_OFFLINE and not datasets.config.HF_HUB_OFFLINE
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for name in ("HTTPS_PROXY", "https_proxy", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    with offline_unless_reachable() as why:
        assert why is not None and huggingface_hub.constants.is_offline_mode()
    assert not huggingface_hub.constants.HF_HUB_OFFLINE
