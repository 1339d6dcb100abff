"""The benchmark machinery without training: the bench dataset, the LlamaFactory configs vs the factory job, reports."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bench import report, train_sft_lora
from bench.train_sft_lora import FULL, QUICK, Batch, SftSettings

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "bench" / "data" / "bench_sft.jsonl"
SMOLLM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_bench_sft", REPO / "bench" / "data" / "make_bench_sft.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]


# ----------------------------------------------------------------------------------------------- dataset


def test_dataset_is_the_generators_output_and_small() -> None:
    generator = _generator()
    assert DATA.read_text(encoding="utf-8") == generator.render(generator.make_rows())
    assert DATA.stat().st_size < 500_000


def test_dataset_rows_are_alpaca_and_distinct(rows: list[dict[str, str]]) -> None:
    assert 280 <= len(rows) <= 320
    assert all(set(row) == {"instruction", "input", "output"} for row in rows)
    assert all(row["instruction"].strip() and row["output"].strip() for row in rows)
    assert len({(row["instruction"], row["input"]) for row in rows}) == len(rows)


def test_dataset_lengths_look_like_chat_data(rows: list[dict[str, str]]) -> None:
    """Long-tailed responses (many short, a tail of long ones) and prompts of ~10-150 tokens (~4 chars a token)."""
    answers = sorted(len(row["output"]) for row in rows)
    prompts = [len(row["instruction"]) + len(row["input"]) for row in rows]
    assert 120 <= statistics.median(answers) <= 400
    assert statistics.mean(answers) > 1.2 * statistics.median(answers)  # right-skewed, log-normal-like
    assert sum(a < 100 for a in answers) >= 0.25 * len(rows)  # many short answers
    assert sum(a > 800 for a in answers) >= 0.05 * len(rows)  # a tail of long ones
    assert answers[-1] <= 2_000  # ~450 tokens at most
    assert min(prompts) >= 15 and max(prompts) <= 650
    assert sum(p > 150 for p in prompts) >= 0.1 * len(rows)  # some prompts carry an input text


# ----------------------------------------------------------------------------------------------- configs


def test_rows_per_step_keeps_eight_examples_per_step() -> None:
    assert train_sft_lora.rows_per_step(8, 300, 300) == 8  # unpacked: 8 rows = 8 examples
    assert train_sft_lora.rows_per_step(8, 300, 100) == 3  # 3 examples per packed row -> 3 rows
    assert train_sft_lora.rows_per_step(8, 10, 1) == 1


@pytest.mark.parametrize("settings", [FULL, QUICK])
@pytest.mark.parametrize("variant", ["default_fast", "neat_packing"])
def test_llamafactory_config_matches_the_factory_job(tmp_path: Path, settings: SftSettings, variant: str) -> None:
    data = tmp_path / "data.jsonl"
    job = train_sft_lora.factory_job(settings, data, Batch(1, 3), tmp_path / "run", tmp_path / "cache")
    lf_batch = Batch(1, 8) if variant == "default_fast" else Batch(1, 3)
    lf = train_sft_lora.llamafactory_config(
        settings, variant, "/models/smollm2", tmp_path, tmp_path / "out", lf_batch, "You are SmolLM"
    )
    lora, data_section, train = job["method"]["lora"], job["data"], job["train"]
    assert job["model"]["name_or_path"] == train_sft_lora.MODEL and lf["model_name_or_path"] == "/models/smollm2"
    assert job["method"]["type"] == "lora" and lf["finetuning_type"] == "lora"
    assert (lf["lora_rank"], lf["lora_alpha"], lf["lora_dropout"]) == (lora["rank"], lora["alpha"], lora["dropout"])
    assert (lora["rank"], lora["alpha"], lora["dropout"]) == (16, 32, 0.0)
    assert lora["target"] == ["all"] and lf["lora_target"] == "all"
    assert lf["cutoff_len"] == data_section["max_length"] == settings.max_length
    assert lf["learning_rate"] == train["learning_rate"] == 2e-4
    assert lf["num_train_epochs"] == train["epochs"] == 1
    assert lf["lr_scheduler_type"] == train["scheduler"]
    assert lf["warmup_steps"] == train["warmup_ratio"] < 1  # a ratio for transformers 5
    assert lf["weight_decay"] == train["weight_decay"] and lf["max_grad_norm"] == train["max_grad_norm"]
    assert lf["optim"] == train["optimizer"] and lf["seed"] == train["seed"]
    assert train["precision"] == "fp32" and lf["bf16"] is False and lf["fp16"] is False
    assert lf["disable_gradient_checkpointing"] is True
    assert lf["logging_steps"] == job["logging"]["steps"] == 1
    assert lf["save_strategy"] == "no" and job["output"]["save_steps"] >= 1_000_000
    assert lf["val_size"] == 0 and "eval" not in data_section
    assert lf["default_system"] == "You are SmolLM" and lf["template"] == "smollm2"
    assert lf["per_device_train_batch_size"] * lf["gradient_accumulation_steps"] == lf_batch.rows_per_step
    assert data_section["train"] == [{"path": str(data), "format": "alpaca"}]
    assert data_section["packing"] is False and job["train"]["compile"] is False
    assert job["method"]["lora"]["base_precision"] == "auto" and job["train"]["cpu_speedups"] == "auto"
    if variant == "default_fast":
        assert "packing" not in lf and "neat_packing" not in lf
        assert lf_batch.rows_per_step == settings.batch_examples
    else:
        assert lf["packing"] is True and lf["neat_packing"] is True


def test_llamafactory_dataset_info_names_the_same_file(tmp_path: Path) -> None:
    data = tmp_path / "bench.jsonl"
    info = train_sft_lora.llamafactory_dataset_info(data)
    entry = info[train_sft_lora.LF_DATASET]
    assert entry["file_name"] == str(data) and entry["formatting"] == "alpaca"
    assert entry["columns"] == {"prompt": "instruction", "query": "input", "response": "output"}


def test_unknown_llamafactory_variant_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown LlamaFactory variant"):
        train_sft_lora.llamafactory_config(FULL, "packing", "m", tmp_path, tmp_path, Batch(1, 8), None)


def test_default_system_is_read_from_the_chat_template() -> None:
    system = train_sft_lora.default_system(SMOLLM_TEMPLATE)
    assert system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert train_sft_lora.default_system("{% for m in messages %}{{ m['content'] }}{% endfor %}") is None


def test_quick_data_is_the_first_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_sft_lora, "WORK", tmp_path)
    subset = train_sft_lora.data_file_for(QUICK)
    lines = subset.read_text(encoding="utf-8").splitlines()
    assert len(lines) == QUICK.examples
    assert lines == DATA.read_text(encoding="utf-8").splitlines()[: QUICK.examples]
    assert train_sft_lora.data_file_for(FULL) == DATA


# ----------------------------------------------------------------------------------------------- report


def _fake_result(name: str) -> dict[str, object]:
    return {
        "name": name,
        "description": "LoRA SFT, factory vs LlamaFactory",
        "metrics": {
            "factory": {"wall_seconds": 612.5, "peak_rss_mb": 3377.0, "last5_loss": 1.23456},
            "llamafactory_default_fast": {"wall_seconds": 901.25, "peak_rss_mb": 3500.0, "last5_loss": float("nan")},
        },
        "runs": {},
        "ratio": {"wall_speedup_vs_default_fast": 1.4714},
        "notes": ["a note"],
        "machine": {"cpu": "AMD EPYC", "cores": 2, "memory_gb": 23.5},
        "versions": {"torch": "2.13.0+cpu", "transformers": "5.17.0"},
        "git_sha": "abc1234",
        "time": "2026-01-01 00:00:00",
    }


def test_report_renders_a_table_from_result_json(tmp_path: Path) -> None:
    (tmp_path / "train_sft_lora.json").write_text(json.dumps(_fake_result("train_sft_lora")))
    (tmp_path / "train_sft_lora_quick.json").write_text(json.dumps(_fake_result("train_sft_lora_quick")))
    (tmp_path / "broken.json").write_text("{not json")
    records = report.load_results(tmp_path)
    assert [r["name"] for r in records] == ["train_sft_lora"]
    block = report.render(records)
    assert "### train_sft_lora" in block
    assert "| tool | wall_seconds | peak_rss_mb | last5_loss |" in block
    assert "| factory | 612.5 | 3,377 | 1.235 |" in block
    assert "| llamafactory_default_fast | 901.2 | 3,500 | - |" in block
    assert "| wall_speedup_vs_default_fast | 1.471 |" in block
    assert "git abc1234" in block and "torch 2.13.0+cpu" in block and "- a note" in block
    assert len(report.load_results(tmp_path, include_quick=True)) == 2


def test_report_replaces_only_the_marked_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# bench\n\nintro\n\n{report.START}\nold\n{report.END}\n\nafter\n")
    assert report.update_readme("new table", readme) is True
    assert readme.read_text() == f"# bench\n\nintro\n\n{report.START}\nnew table\n{report.END}\n\nafter\n"
    assert report.update_readme("new table", readme) is False
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        report.update_readme("x", readme)


def test_report_without_results_says_how_to_get_them(tmp_path: Path) -> None:
    assert "python -m bench" in report.render(report.load_results(tmp_path))


def test_benchmarks_are_registered() -> None:
    from bench.__main__ import BENCHMARKS

    for name in ("train_sft_lora", "preprocess", "cli_latency", "grpo_step"):
        assert importlib.util.find_spec(BENCHMARKS[name]) is not None


def test_factory_variants_change_one_job_field_each(tmp_path: Path) -> None:
    batch = Batch(1, 3)

    def job(**change: Any) -> dict[str, Any]:
        return train_sft_lora.factory_job(FULL, tmp_path / "d.jsonl", batch, tmp_path / "r", tmp_path / "c", **change)

    best = job()
    assert best["data"]["packing"] is False and best["train"]["compile"] is False
    assert best["train"]["cpu_speedups"] == "auto" and best["method"]["lora"]["base_precision"] == "auto"
    changed_section = {"packing": "data", "compile_blocks": "train", "base_precision": "method"}
    changed_section |= {"precision": "train", "cpu_speedups": "train"}
    variants = train_sft_lora.FACTORY_VARIANTS
    assert variants["factory"] == {}
    for name, change in variants.items():
        fields = {key: value for key, value in change.items() if key != "cold_compile"}
        assert len(fields) <= 1, name
        if not fields:
            continue
        varied = job(**fields)
        [field] = fields
        section = changed_section[field]
        assert {k: v for k, v in varied.items() if k != section} == {k: v for k, v in best.items() if k != section}
        assert varied[section] != best[section], name
    assert job(cpu_speedups="off")["train"] == {**best["train"], "cpu_speedups": "off"}
    assert job(packing=True)["data"] == {**best["data"], "packing": True}
    assert job(base_precision="fp32")["method"]["lora"] == {**best["method"]["lora"], "base_precision": "fp32"}
    assert variants["factory_no_speedups"] == {"cpu_speedups": "off"}
    assert not any("env" in change for change in variants.values())  # job fields only, no environment switches
    with pytest.raises(ValueError, match="tools must include factory"):
        train_sft_lora.run(runs=1, tools=["llamafactory_default_fast"])
