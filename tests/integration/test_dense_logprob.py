"""factory_cli/accel/cpu/dense_logprob.py against TRL's tiled kernel: same outputs, same gradients."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from trl.kernels import ChunkedLogProbFunction

from factory_cli.accel.cpu import dense_logprob
from factory_cli.accel.cpu.dense_logprob import OPTIONAL_OUTPUTS, DenseLogProb

TOKENS, HIDDEN, VOCAB = 13, 16, 300


def _inputs(with_bias: bool, weight_grad: bool) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(TOKENS, HIDDEN, generator=generator, requires_grad=True)
    weight = (torch.randn(VOCAB, HIDDEN, generator=generator) * 0.5).requires_grad_(weight_grad)
    bias = (torch.randn(VOCAB, generator=generator) * 0.1).requires_grad_(weight_grad) if with_bias else None
    targets = torch.randint(0, VOCAB, (TOKENS,), generator=generator)
    targets[3] = int(torch.argmax(hidden[3].detach() @ weight.detach().t()))  # one sure top-1 hit
    return hidden, weight, bias, targets  # type: ignore[return-value]


def _run(kernel: Any, inputs: tuple[torch.Tensor, ...], entropy_weight: float, **kwargs: Any) -> list[Any]:
    hidden, weight, bias, targets = inputs
    for tensor in (hidden, weight, bias):
        if tensor is not None:
            tensor.grad = None
    log_probs, entropy, log_sum_sq, mean_logits, is_top1 = kernel.apply(
        hidden, weight, bias, targets, kwargs["temperature"], 64, None, kwargs["logit_scale"], OPTIONAL_OUTPUTS
    )
    loss = -log_probs.sum() + entropy_weight * entropy.sum()
    loss.backward()
    grads = [None if t is None or t.grad is None else t.grad.clone() for t in (hidden, weight, bias)]
    return [log_probs.detach(), entropy.detach(), log_sum_sq, mean_logits, is_top1, *grads]


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("weight_grad", [False, True])
@pytest.mark.parametrize("entropy_weight", [0.0, 0.3])
@pytest.mark.parametrize(("temperature", "logit_scale"), [(1.0, 1.0), (0.7, 1.3)])
@pytest.mark.parametrize("rows_per_chunk", [128, 4])  # one block, or 4 blocks with a partial last one
def test_same_outputs_and_gradients_as_trl(
    with_bias: bool,
    weight_grad: bool,
    entropy_weight: float,
    temperature: float,
    logit_scale: float,
    rows_per_chunk: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dense_logprob, "ROWS_PER_CHUNK", rows_per_chunk)
    inputs = _inputs(with_bias, weight_grad)
    settings = {"temperature": temperature, "logit_scale": logit_scale}
    expected = _run(ChunkedLogProbFunction, inputs, entropy_weight, **settings)
    got = _run(DenseLogProb(fallback=None), inputs, entropy_weight, **settings)
    assert bool(got[4][3]), "the planted top-1 target is found"
    for want, have in zip(expected, got, strict=True):
        if want is None:
            assert have is None
        elif want.dtype == torch.bool:
            assert torch.equal(want, have)
        else:
            torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-5)


class _Recorder:
    def __init__(self) -> None:
        self.calls = 0

    def apply(self, *args: Any) -> Any:
        self.calls += 1
        return ChunkedLogProbFunction.apply(*args)


def _call(kernel: DenseLogProb, hidden: torch.Tensor, weight: torch.Tensor, softcap: float | None = None) -> None:
    targets = torch.zeros(hidden.shape[0], dtype=torch.long)
    kernel.apply(hidden, weight, None, targets, 1.0, 64, softcap, 1.0, ("log_probs",))


def test_falls_back_to_trl_where_the_dense_path_does_not_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    kernel = DenseLogProb(fallback=recorder)
    hidden, weight = torch.randn(4, 8), torch.randn(50, 8)
    _call(kernel, hidden, weight)
    assert recorder.calls == 0, "fp32 without soft-capping takes the dense path"
    _call(kernel, hidden, weight, softcap=30.0)
    _call(kernel, hidden.bfloat16(), weight.bfloat16())
    monkeypatch.setattr(dense_logprob, "MAX_KEPT_ELEMENTS", 4 * 50 - 1)
    _call(kernel, hidden, weight)
    assert recorder.calls == 3


@pytest.mark.parametrize("entropy_weight", [0.0, 0.3])  # the one-GEMM backward, and the general one
def test_a_frozen_bf16_head_multiplies_in_bf16_and_stays_close_to_fp32(
    entropy_weight: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dense_logprob, "ROWS_PER_CHUNK", 5)
    hidden, weight, bias, targets = _inputs(with_bias=True, weight_grad=False)
    settings = {"temperature": 1.0, "logit_scale": 1.0}
    expected = _run(DenseLogProb(fallback=None), (hidden, weight, bias, targets), entropy_weight, **settings)
    bf16_weight = weight.detach().bfloat16()
    assert dense_logprob.dense_path_applies(hidden, bf16_weight, None)
    got = _run(DenseLogProb(fallback=None), (hidden, bf16_weight, bias, targets), entropy_weight, **settings)
    assert got[0].dtype == torch.float32 and got[5].dtype == torch.float32  # log-probs and grad_hidden in fp32
    assert not torch.equal(got[0], expected[0]), "the products ran in bf16"
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0.05)  # logits rounded to bf16 once
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=0.05)
    cosine = torch.nn.functional.cosine_similarity(got[5].flatten(), expected[5].flatten(), dim=0)
    assert cosine > 0.999


def test_a_bf16_head_that_trains_or_a_long_call_goes_to_trl_in_one_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    hidden, weight = torch.randn(4, 8), torch.randn(50, 8).bfloat16()
    assert not dense_logprob.dense_path_applies(hidden, weight.requires_grad_(True), None)
    seen: list[torch.dtype] = []

    class DtypeRecorder:
        def apply(self, hidden: torch.Tensor, weight: torch.Tensor, *args: Any) -> Any:
            seen.append(weight.dtype)
            return ChunkedLogProbFunction.apply(hidden, weight, *args)

    monkeypatch.setattr(dense_logprob, "MAX_KEPT_ELEMENTS", 4 * 50 - 1)
    _call(DenseLogProb(fallback=DtypeRecorder()), hidden, weight.detach())
    assert seen == [torch.float32]
