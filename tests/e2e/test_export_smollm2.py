"""W4A16 exports of the real small model (SmolLM2-135M-Instruct from its GGUF): GPTQ and AWQ through llm-compressor
on CPU, reloaded from disk by transformers, generating, and measured against their source with `factory eval`'s ppl.

Calibration is small (GPTQ 32 rows, AWQ 4 rows of demo-sft-messages, ~90 tokens each) and does not overlap the rows
the perplexity is measured on (the first PPL_ROWS of demo-sft-alpaca). Each export is made once per module.

Measured on the 2-core CPU box these tests were written on (one torch thread, other jobs running beside):
source ppl 9.77 -> GPTQ 13.24 (+35.5%, 168 s), AWQ 12.31 (+26.0%, 178 s); the module takes ~8 min. For scale,
plain round-to-nearest W4A16 g64 (no calibration) gives 13.71 (+40.3%), GPTQ on 60 rows 12.42 (+27%). The source
is itself a dequantized Q4_1 GGUF, which 4-bit symmetric groups of 64 do not reproduce exactly; hence the loss.
The bound is +45%, and the export must lose something (one that kept the full-precision weights would show +0%).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from factory_cli.evaluation import EvalRequest, run_eval
from factory_cli.export import ExportReport, ExportRequest, run_export

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m-instruct-gguf"
PPL_ROWS = 20
MAX_PPL_INCREASE = 0.45  # relative: export ppl <= source ppl x 1.45
CALIBRATION = {"calibration": "demo-sft-messages", "max_length": 256}
SAMPLES = {"gptq": 32, "awq": 4}


@pytest.fixture(scope="module")
def smollm2(smollm2_hf_dir: Path, factory_cache: Path) -> Iterator[str]:
    """The registry name, with the session's cache holding the converted checkpoint; everything offline."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACTORY_CACHE", str(factory_cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        yield MODEL


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """This module runs torch on one thread. On a 2-core box shared with other jobs, two OpenMP threads per process
    stall on each other's barriers: measured there, one AWQ layer took 97 s with 2 threads and 14 s with 1. The
    numbers the tests check do not depend on it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exports(smollm2: str, one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExportReport]:
    """GPTQ and AWQ W4A16 exports of SmolLM2, made once for the module (AWQ's grid search costs ~10x GPTQ's solve
    per calibration row, so it calibrates on fewer rows)."""
    root = tmp_path_factory.mktemp("exports")
    return {
        method: run_export(
            ExportRequest(
                model=smollm2, output=root / method, quant=method, device="cpu", samples=SAMPLES[method], **CALIBRATION
            )
        )
        for method in ("gptq", "awq")
    }


def _quantized_linears(model: Any) -> int:
    """Linear layers carrying a compressed-tensors 4-bit weight scheme after the reload."""
    count = 0
    for _, module in model.named_modules():
        scheme = getattr(module, "quantization_scheme", None)
        weights = getattr(scheme, "weights", None)
        if weights is not None and weights.num_bits == 4:
            count += 1
    return count


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_w4a16_export_reloads_generates_and_keeps_perplexity(
    method: str, exports: dict[str, ExportReport], smollm2: str, one_thread: None
) -> None:
    report = exports[method]
    output = report.output

    # what was written: compressed-tensors W4A16, group size 64 (128 does not divide SmolLM2's 576), lm_head kept
    config = json.loads((output / "config.json").read_text())
    quant = config["quantization_config"]
    assert quant["quant_method"] == "compressed-tensors" and quant["format"] == "pack-quantized"
    weights = quant["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["type"], weights["strategy"], weights["group_size"]) == (4, "int", "group", 64)
    assert quant["ignore"] == ["lm_head"]
    assert report.group_size == 64 and report.calibration is not None
    assert report.calibration["rows"] == SAMPLES[method] and report.calibration["datasets"] == ["demo-sft-messages"]
    assert (output / "tokenizer.json").is_file() and (output / "factory_export.json").is_file()
    assert report.size_after_bytes < report.size_before_bytes / 2.5  # fp32 checkpoint -> 4-bit linears

    # the check inside the export: reloaded from disk, same tokenizer, mostly the same next tokens, some text
    assert report.check["tokenizer_matches"] is True
    assert report.check["top1_agreement"] >= 0.5
    assert report.check["generated"].strip()

    # a user's reload: transformers sees the 4-bit layers and generates a sensible answer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factory_cli.export.verify import generate_check, prompt_ids

    model = AutoModelForCausalLM.from_pretrained(output)
    assert _quantized_linears(model) == 30 * 7  # every decoder Linear, not lm_head
    tokenizer = AutoTokenizer.from_pretrained(output)
    answer = generate_check(model, tokenizer, prompt_ids(tokenizer), max_new_tokens=12)
    assert "paris" in answer.lower(), answer
    del model

    # perplexity against the source, measured by the eval package (both on the same rows)
    evaluated = run_eval(EvalRequest(model=str(output), compare=smollm2, tasks=["ppl"], limit=PPL_ROWS, device="cpu"))
    exported, source = (m.results[0] for m in evaluated.models)
    assert exported.n == source.n == PPL_ROWS
    (delta,) = evaluated.deltas
    print(
        f"\n{method}: ppl {source.value:.3f} -> {exported.value:.3f} ({delta['relative']:+.1%}), "
        f"{report.seconds:.0f} s, {report.size_before_bytes / 2**20:.0f} MB -> {report.size_after_bytes / 2**20:.0f} MB"
    )
    assert 2.0 < source.value < 30.0
    assert source.value < exported.value <= source.value * (1 + MAX_PPL_INCREASE), (source.value, exported.value)
    assert delta["delta"] == pytest.approx(exported.value - source.value)
