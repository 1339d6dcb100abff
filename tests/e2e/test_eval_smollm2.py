"""The real small model (SmolLM2-135M-Instruct from its GGUF) measured on every demo task, compared with the tiny
random Llama: perplexity, math accuracy (our generation task and lm-eval's), multiple choice, deltas.

One `run_eval` for the module (SmolLM2 loads once); each test checks one task. Everything runs offline.
Timed on the 2-core CPU box (OMP_NUM_THREADS=1, one other job running): ~95 s for the module, of which ~20 s build the
fixtures (GGUF conversion, tiny model); gsm8k_demo and math_demo_harness (48 new tokens) take the longest.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from factory_cli.evaluation import EvalReport, EvalRequest, TaskResult, run_eval

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m-instruct-gguf"
LIMIT = 8
TASKS = ["ppl", "gsm8k_demo", "arc_demo", "math_demo_harness"]


@pytest.fixture(scope="module")
def report(smollm2_hf_dir: Path, factory_cache: Path, tiny_llama_dir: Path) -> Iterator[EvalReport]:
    """SmolLM2 (by registry name, its converted checkpoint in the session's cache) vs the tiny random model."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACTORY_CACHE", str(factory_cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        request = EvalRequest(
            model=MODEL,
            tasks=TASKS,
            compare=str(tiny_llama_dir),
            limit=LIMIT,
            batch_size=8,
            max_new_tokens=48,
            device="cpu",
        )
        yield run_eval(request)


def _results(report: EvalReport, task: str, which: int = 0) -> dict[str, TaskResult]:
    return {r.metric: r for r in report.models[which].results if r.task == task}


def test_perplexity_on_demo_sft_is_sane(report: EvalReport) -> None:
    (result,) = _results(report, "ppl").values()
    # SmolLM2-135M-Instruct on the assistant tokens of demo-sft-alpaca: ~10 (9.8 measured on 20 rows).
    assert 2.0 < result.value < 30.0, result
    assert result.stderr is not None and 0 < result.stderr < result.value
    assert result.n == LIMIT and result.details["masking"] == "sft: assistant tokens"
    assert result.details["tokens"] > 10 * LIMIT


def test_gsm8k_demo_generates_and_scores(report: EvalReport) -> None:
    result = _results(report, "gsm8k_demo")["accuracy"]
    assert 0.0 <= result.value <= 1.0 and result.n == LIMIT
    assert result.stderr is not None and math.isfinite(result.stderr)
    assert result.stderr == pytest.approx(math.sqrt(result.value * (1 - result.value) / LIMIT))
    examples = result.details["examples"]
    assert len(examples) == 3 and all(e["completion"].strip() for e in examples)  # the model answers something
    assert result.details["max_new_tokens"] == 48


def test_arc_demo_multiple_choice_through_lm_eval_offline(report: EvalReport) -> None:
    metrics = _results(report, "arc_demo")
    assert set(metrics) == {"acc", "acc_norm"}
    for result in metrics.values():
        assert 0.0 <= result.value <= 1.0 and result.n == LIMIT
        assert result.stderr is not None and math.isfinite(result.stderr)
    assert all("predicted" in e for e in metrics["acc"].details["examples"])


def test_math_demo_harness_generates_through_lm_eval(report: EvalReport) -> None:
    result = _results(report, "math_demo_harness")["exact_match"]
    assert 0.0 <= result.value <= 1.0 and result.n == LIMIT and result.stderr is not None
    assert all(e["response"] for e in result.details["examples"])


def test_compare_with_the_random_model_reports_deltas(report: EvalReport) -> None:
    assert [m.kind for m in report.models] == ["reference", "full"]
    deltas = {(d["task"], d["metric"]): d for d in report.deltas}
    assert set(deltas) == {
        ("ppl", "perplexity"),
        ("gsm8k_demo", "accuracy"),
        ("arc_demo", "acc"),
        ("arc_demo", "acc_norm"),
        ("math_demo_harness", "exact_match"),
    }
    for (task, metric), delta in deltas.items():
        ours, theirs = _results(report, task)[metric], _results(report, task, which=1)[metric]
        assert delta["delta"] == pytest.approx(ours.value - theirs.value)
        if delta["relative"] is not None:
            assert delta["relative"] == pytest.approx(delta["delta"] / abs(theirs.value))
    ppl = deltas[("ppl", "perplexity")]
    # the random model is near-uniform over 49k tokens (ppl in the thousands): SmolLM2 is far better
    assert ppl["compare"] > 1000 and ppl["delta"] < 0 and ppl["relative"] < -0.9 and ppl["higher_is_better"] is False
