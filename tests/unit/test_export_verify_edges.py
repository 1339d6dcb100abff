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
    assert isinstance(check["generated"], str) and check["reloaded_as"] == "LlamaForCausalLM"


class FromPretrainedSpy:
    """Stands in for AutoModelForCausalLM.from_pretrained: records how load_artifact asks for the model and hands back
    the tiny checkpoint (marked as placed by a device map when `placed`)."""

    def __init__(self, checkpoint: Path, placed: bool = False) -> None:
        self.checkpoint, self.placed = checkpoint, placed
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, path: str, **kwargs: Any) -> Any:
        from transformers import LlamaForCausalLM

        self.calls.append((path, kwargs))
        model = LlamaForCausalLM.from_pretrained(self.checkpoint)
        if self.placed:
            model.hf_device_map = {"": "cpu"}
        return model


def bnb_copy(tiny_llama_dir: Path, tmp_path: Path) -> Path:
    """The tiny checkpoint with a bitsandbytes quantization_config in its config.json."""
    import json
    import shutil

    copy = tmp_path / "bnb"
    shutil.copytree(tiny_llama_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_a_bitsandbytes_export_is_placed_whole_on_the_device(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from transformers import AutoModelForCausalLM

    copy = bnb_copy(tiny_llama_dir, tmp_path)
    spy = FromPretrainedSpy(tiny_llama_dir, placed=True)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    noisy = logging.getLogger("bitsandbytes.autograd._functions")
    monkeypatch.setattr(noisy, "level", logging.NOTSET)
    model, tokenizer = load_artifact(copy, None, CPU)
    load_artifact(copy, None, SimpleNamespace(kind="cuda"))  # placed by its device map: not moved again
    assert spy.calls == [
        (str(copy), {"dtype": "auto", "device_map": {"": "cpu"}}),
        (str(copy), {"dtype": "auto", "device_map": {"": "cuda:0"}}),
    ]
    assert noisy.level == logging.ERROR
    assert not model.training and tokenizer.pad_token is not None


def test_a_plain_export_loads_in_its_own_dtype_and_moves_to_the_device(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from transformers import AutoModelForCausalLM

    spy = FromPretrainedSpy(tiny_llama_dir)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    noisy = logging.getLogger("bitsandbytes.autograd._functions")
    monkeypatch.setattr(noisy, "level", logging.NOTSET)
    model, _ = load_artifact(tiny_llama_dir, None, SimpleNamespace(kind="meta"))
    assert spy.calls == [(str(tiny_llama_dir), {"dtype": "auto"})]
    assert next(model.parameters()).device.type == "meta"  # moved: nothing placed it
    assert noisy.level == logging.NOTSET
    model, _ = load_artifact(tiny_llama_dir, None, CPU)
    assert next(model.parameters()).device.type == "cpu"

    placed = FromPretrainedSpy(tiny_llama_dir, placed=True)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", placed)
    model, _ = load_artifact(tiny_llama_dir, None, SimpleNamespace(kind="meta"))
    assert next(model.parameters()).device.type == "cpu"  # a device map placed it: left where it is


def test_a_gguf_export_loads_from_the_file(tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factory_cli.modeling import gguf

    spy = FromPretrainedSpy(tiny_llama_dir)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    tokenizers: list[Path] = []

    def tokenizer_of(path: Path) -> Any:
        tokenizers.append(path)
        return AutoTokenizer.from_pretrained(tiny_llama_dir)

    monkeypatch.setattr(gguf, "load_gguf_tokenizer", tokenizer_of)
    model, tokenizer = load_artifact(tiny_llama_dir.parent, "model-q8_0.gguf", CPU)
    assert spy.calls == [(str(tiny_llama_dir.parent), {"gguf_file": "model-q8_0.gguf", "dtype": torch.float32})]
    assert tokenizers == [tiny_llama_dir.parent / "model-q8_0.gguf"]
    assert not model.training and tokenizer.chat_template is not None
