"""The compact LM head path (factory_cli/accel/cpu/lm_head.py): same loss and gradients, fewer rows scored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from factory_cli.accel.cpu.dense_logprob import DenseLogProb
from factory_cli.accel.cpu.lm_head import compact_lm_head


def _fused_model(tiny_llama_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    return model


def _loss_and_grads(model: Any, batch: dict[str, torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad()
    out = model(**batch, fused_lm_head=True)
    out.loss.backward()
    return float(out.loss.detach()), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (1, 48), generator=generator)
    labels = ids.clone()
    labels[0, :20] = -100  # a prompt of 20 tokens
    labels[0, 30:34] = -100  # and a second packed example's prompt
    position_ids = torch.cat([torch.arange(30), torch.arange(18)]).unsqueeze(0)
    return {"input_ids": ids, "labels": labels, "position_ids": position_ids}


def test_compact_head_changes_no_number_and_scores_fewer_rows(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trl.trainer.utils as trl_utils

    model = _fused_model(tiny_llama_dir)
    batch = _batch(model.config.vocab_size)
    rows: list[int] = []
    tiled_apply, dense_apply = trl_utils._ChunkedLogProbFunction.apply, DenseLogProb.apply

    def counting_tiled(hidden: torch.Tensor, *args: Any) -> Any:
        rows.append(hidden.shape[0])
        return tiled_apply(hidden, *args)

    def counting_dense(self: DenseLogProb, hidden: torch.Tensor, *args: Any) -> Any:
        rows.append(hidden.shape[0])
        return dense_apply(self, hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counting_tiled)
    monkeypatch.setattr(DenseLogProb, "apply", counting_dense)
    full_loss, full_grads = _loss_and_grads(model, batch)
    original_switch = trl_utils._use_triton
    with compact_lm_head() as on:
        assert on
        compact_loss, compact_grads = _loss_and_grads(model, batch)
    assert trl_utils._use_triton is original_switch, "the switch is restored after the block"

    supervised = int((batch["labels"][:, 1:] != -100).sum())
    assert rows == [47, supervised]
    assert compact_loss == pytest.approx(full_loss, rel=1e-5)
    assert len(compact_grads) == len(full_grads)
    for a, b in zip(full_grads, compact_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_dense_logprob_in_the_compact_head_changes_no_number(tiny_llama_dir: Path) -> None:
    import trl.trainer.utils as trl_utils

    model = _fused_model(tiny_llama_dir)
    batch = _batch(model.config.vocab_size)
    tiled = trl_utils._ChunkedLogProbFunction
    full_loss, full_grads = _loss_and_grads(model, batch)
    with compact_lm_head():
        assert isinstance(trl_utils._ChunkedLogProbFunction, DenseLogProb)
        dense_loss, dense_grads = _loss_and_grads(model, batch)
    assert trl_utils._ChunkedLogProbFunction is tiled, "TRL's kernel is restored after the block"
    assert dense_loss == pytest.approx(full_loss, rel=1e-5)
    for a, b in zip(full_grads, dense_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_compact_path_is_for_cpu_tensors_and_needs_a_trl_with_the_fused_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton
    with compact_lm_head() as on:
        assert on and trl_utils._use_triton(torch.device("cpu"))
    assert trl_utils._use_triton is original
    monkeypatch.delattr(trl_utils, "_use_triton")
    with compact_lm_head() as on:
        assert not on and not isinstance(trl_utils._ChunkedLogProbFunction, DenseLogProb)
