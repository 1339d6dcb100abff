"""bench/chain.py without running it: every job the chain writes is a valid job, and the table shows every stage,
skipped ones with their reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.chain import FULL, QUICK, ChainResult, ChainSettings, Stage, grpo_extra, lora_job, markdown, rewards
from factory_cli.config.validate import load_and_validate


@pytest.mark.parametrize("settings", [FULL, QUICK], ids=["full", "quick"])
def test_every_link_is_a_valid_job(settings: ChainSettings, tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    jobs = {
        "sft": lora_job(settings, "sft", "smollm2-135m-instruct-gguf", ["demo-sft-messages"], 2, tmp_path / "a", {}),
        "grpo": lora_job(settings, "grpo", "m", ["demo-grpo-math"], 2, tmp_path / "b", grpo_extra(settings)),
        "dpo": lora_job(settings, "dpo", "m", [str(rows)], 2, tmp_path / "c", {"dpo": {"beta": 0.1}}),
    }
    for stage, job in jobs.items():
        path = tmp_path / f"{stage}.yaml"
        path.write_text(yaml.safe_dump({**job, "device": "cpu"}))
        validated = load_and_validate(path, checks=False).job
        assert validated.stage == stage and validated.method.type == "lora"
        assert validated.train.max_steps == 2
    grpo = load_and_validate(tmp_path / "grpo.yaml", checks=False).job
    assert grpo.grpo is not None and [r.label for r in grpo.grpo.rewards] == ["math_answer", "length"]
    assert grpo.train.micro_batch_size % grpo.grpo.num_generations == 0


def test_the_full_chain_accepts_only_right_answers_and_the_quick_one_every_answer() -> None:
    assert FULL.min_score == 1.0 and QUICK.min_score == 0.0
    assert rewards(FULL)[0] == "math_answer" and rewards(FULL)[1]["weight"] == 0.1
    assert QUICK.sample_n >= 2  # pairs need two answers


def test_the_table_names_every_stage_and_why_one_was_skipped() -> None:
    stages = [
        Stage("base", "base", "m", 0.0, {"ppl": 10.0, "gsm8k_demo": 0.25}, 3.0, {"ppl": 0.0, "gsm8k_demo": 0.0}),
        Stage("sample", "factory sample", None, 12.0),
        Stage("rft", "SFT on the accepted answers", None, 0.0, note="skipped: none accepted"),
        Stage("dpo", "DPO", "d", 5.0, {"ppl": 9.5, "gsm8k_demo": 0.5}, 2.0, {"ppl": -0.5, "gsm8k_demo": 0.25}),
    ]
    sampling = {
        "rft": {"prompts": 8, "samples": 48, "accepted_samples": 0, "groups_accepted": 0, "samples_per_second": 0.3},
        "pairs": {"rows": 0},
    }
    text = markdown(ChainResult(FULL, stages, sampling, 100.0))
    assert "| base | base | 0 | 10.00 (+0.00) | 25.0% (+0.0%) | 3 |" in text
    assert "| dpo | DPO | 5 | 9.50 (-0.50) | 50.0% (+25.0%) | 2 |" in text
    assert "| rft | SFT on the accepted answers (skipped: none accepted) | 0 | - | - | 0 |" in text
    assert "0/48 answers accepted, 0/8 prompts with one, 0 pairs, 0.30 samples/s" in text
    assert text.rstrip().endswith("total wall time 100 s")
