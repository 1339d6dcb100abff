"""Export verification (factory_cli/export/verify.py) by its numbers: the largest logit difference (not the mean),
the share of agreeing top-1 tokens, and a reload of a tiny checkpoint that must match itself exactly."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from factory_cli.export.verify import (
    CHECK_NEW_TOKENS,
    CHECK_PROMPT,
    check_artifact,
    compare_logits,
    generate_check,
    load_artifact,
    logits_for,
    prompt_ids,
)

CPU = SimpleNamespace(kind="cpu")


def test_compare_logits_reports_the_largest_difference_and_top1_share() -> None:
    import torch

    reference = torch.tensor([[[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]]])
    logits = reference.clone()
    logits[0, 0, 0] += 0.25  # top-1 unchanged
    logits[0, 1, 1] += 2.5  # top-1 moves from 0 to 1
    logits[0, 2, 2] -= 0.1234567
    assert compare_logits(reference, logits) == {"max_abs_logit_diff": 2.5, "top1_agreement": 0.75}
    assert compare_logits(logits, reference) == {"max_abs_logit_diff": 2.5, "top1_agreement": 0.75}
    assert compare_logits(reference, reference) == {"max_abs_logit_diff": 0.0, "top1_agreement": 1.0}
    small = reference.clone()
    small[0, 2, 2] -= 0.1234567
    assert compare_logits(reference, small) == {"max_abs_logit_diff": 0.123457, "top1_agreement": 1.0}


def test_compare_logits_rounds_agreement_to_four_places() -> None:
    import torch

    reference = torch.zeros(1, 3, 2)
    reference[..., 0] = 1.0
    logits = reference.clone()
    logits[0, 0, 1] = 2.0
    assert compare_logits(reference, logits) == {"max_abs_logit_diff": 2.0, "top1_agreement": 0.6667}


@pytest.fixture(scope="module")
def reloaded(tiny_llama_dir: Path) -> tuple[Any, Any]:
    return load_artifact(tiny_llama_dir, None, CPU)


def test_load_artifact_reloads_for_inference(reloaded: tuple[Any, Any]) -> None:
    import torch

    model, tokenizer = reloaded
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32  # dtype auto keeps the checkpoint's
    assert tokenizer.chat_template is not None


def test_logits_for_is_float32_on_cpu(reloaded: tuple[Any, Any]) -> None:
    import torch

    model, tokenizer = reloaded
    ids = prompt_ids(tokenizer)
    logits = logits_for(copy.deepcopy(model).to(torch.bfloat16), ids)
    assert logits.dtype == torch.float32 and logits.device.type == "cpu"
    assert tuple(logits.shape) == (1, ids.shape[1], model.config.vocab_size)


def test_check_artifact_of_an_unchanged_checkpoint(tiny_llama_dir: Path, reloaded: tuple[Any, Any]) -> None:
    model, tokenizer = reloaded
    ids = prompt_ids(tokenizer)
    reference = logits_for(model, ids)
    check = check_artifact(tiny_llama_dir, CPU, reference_ids=ids, reference_logits=reference)
    assert check["ok"] is True
    assert check["reloaded_as"] == "LlamaForCausalLM"
    assert check["prompt"] == CHECK_PROMPT
    assert check["tokenizer_matches"] is True
    assert check["max_abs_logit_diff"] == 0.0 and check["top1_agreement"] == 1.0
    assert check["generated"] == generate_check(model, tokenizer, ids)
    assert len(tokenizer(check["generated"])["input_ids"]) <= CHECK_NEW_TOKENS + 1
    assert check["seconds"] >= check["generate_seconds"] >= 0 and check["seconds"] >= check["load_seconds"] >= 0
    assert list(check) == [
        "ok",
        "reloaded_as",
        "load_seconds",
        "prompt",
        "tokenizer_matches",
        "max_abs_logit_diff",
        "top1_agreement",
        "generated",
        "generate_seconds",
        "seconds",
    ]


def test_check_artifact_with_another_tokenizer_skips_the_logits(tiny_llama_dir: Path) -> None:
    import torch

    other_ids = torch.tensor([[1, 2, 3]])
    check = check_artifact(tiny_llama_dir, CPU, reference_ids=other_ids, reference_logits=torch.zeros(1, 3, 8))
    assert check["tokenizer_matches"] is False
    assert "max_abs_logit_diff" not in check and "top1_agreement" not in check
    assert check["generated"] and check["reloaded_as"] == "LlamaForCausalLM"
