"""The CPU speed kernels of LoRA runs: hash-drawn dropout, bf16 frozen base layers, per-example sdpa for padding-free
rows (factory_cli/backends/deepspeed/lora_dropout.py, frozen_bf16.py, varlen_attention.py)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from factory_cli.backends.deepspeed.frozen_bf16 import bf16_frozen_base_layers, bf16_lm_head
from factory_cli.backends.deepspeed.lora_dropout import (
    HashDropout,
    folded_dropout_forward,
    hash_lora_dropout,
    hash_uniform_int32,
    keep_mask,
    pack_mask,
    unpack_mask,
)
from factory_cli.backends.deepspeed.varlen_attention import segment_bounds, use_varlen_sdpa, varlen_fits
from tests.integration.train_helpers import losses, train_cli, write_job

pytestmark = pytest.mark.integration


def _lora_model(tiny_llama_dir: Path, dropout: float = 0.05, **lora: Any) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear", **lora)
    return get_peft_model(model, config)


# ------------------------------------------------------------------------------------------------- hash dropout


def test_hash_matches_the_murmur3_finalizer_in_unsigned_arithmetic() -> None:
    rows, cols, odd_key, offset_key = 7, 13, 0x12345677, 0xDEADBEEF
    got = hash_uniform_int32(rows, cols, odd_key, offset_key).numpy().view(np.uint32).reshape(-1)
    mask32 = np.uint64(0xFFFFFFFF)
    h = (np.arange(rows * cols, dtype=np.uint64) * np.uint64(odd_key | 1) + np.uint64(offset_key)) & mask32
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & mask32
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & mask32
    h ^= h >> np.uint64(16)
    assert np.array_equal(got, h.astype(np.uint32))


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_masks_keep_one_minus_p_unbiased_and_uncorrelated(p: float) -> None:
    torch.manual_seed(1)
    first = keep_mask(torch.Size([512, 1024]), p)
    second = keep_mask(torch.Size([512, 1024]), p)
    assert first.dtype == torch.uint8 and set(first.unique().tolist()) <= {0, 1}
    kept = first.float()
    n = kept.numel()
    tolerance = 5 * (p * (1 - p) / n) ** 0.5
    assert abs(kept.mean().item() - (1 - p)) < tolerance
    dropped = HashDropout(p).train()(torch.ones(512, 1024))
    assert torch.allclose(dropped[dropped > 0], torch.tensor(1 / (1 - p)))
    assert abs(dropped.mean().item() - 1.0) < 5 * tolerance / (1 - p)  # E[output] = input: dropout keeps the mean
    both = ((first > 0) & (second > 0)).float().mean().item()
    assert abs(both - (1 - p) ** 2) < 2 * tolerance  # two calls draw independent masks
    flat = kept.view(-1)
    neighbours = (flat[1:] * flat[:-1]).mean().item()
    assert abs(neighbours - (1 - p) ** 2) < 2 * tolerance  # adjacent elements are independent
    rows = kept.mean(1)
    assert rows.std().item() < 3 * ((p * (1 - p) / 1024) ** 0.5)  # no row is special


def test_a_seed_fixes_the_masks_and_the_backward_uses_the_forward_mask() -> None:
    layer = HashDropout(0.2).train()
    x = torch.randn(3, 5, 64, requires_grad=True)
    torch.manual_seed(7)
    y1 = layer(x)
    torch.manual_seed(7)
    y2 = layer(x)
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, layer(x))
    (y1 * 2).sum().backward()
    assert x.grad is not None
    assert torch.allclose(x.grad, 2 * y1.detach() / x.detach())
    layer.eval()
    assert layer(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        HashDropout(1.0)


@pytest.mark.parametrize("shape", [(1, 455, 576), (3, 5, 16), (2, 7, 3)])
def test_masks_are_kept_as_bits_and_unpack_to_the_same_mask(shape: tuple[int, ...]) -> None:
    keep = keep_mask(torch.Size(shape), 0.3)
    packed = pack_mask(keep)
    assert torch.equal(unpack_mask(packed, keep.shape), keep)
    if keep.numel() % 8:
        assert packed is keep  # nothing to pack into whole bytes
        return
    assert packed.dtype == torch.uint8 and packed.numel() == keep.numel() // 8
    flat = keep.reshape(-1).tolist()
    expected = [sum(bit << i for i, bit in enumerate(flat[k : k + 8])) for k in range(0, len(flat), 8)]
    assert packed.tolist() == expected  # element i of each 8 is bit i


def test_lora_dropouts_are_replaced_and_zero_dropout_is_left_alone(tiny_llama_dir: Path) -> None:
    model = _lora_model(tiny_llama_dir)
    assert hash_lora_dropout(model) == 14  # 7 linear layers x 2 decoder layers
    layers = [m for m in model.modules() if hasattr(m, "lora_dropout")]
    # plain LoRA: the dropout is folded into A (one autograd node that keeps x and a bit mask)
    assert layers and all(isinstance(d, torch.nn.Identity) for m in layers for d in m.lora_dropout.values())
    assert all("forward" in vars(a) for m in layers for a in m.lora_A.values())
    assert hash_lora_dropout(_lora_model(tiny_llama_dir, dropout=0.0)) == 0
    dora = _lora_model(tiny_llama_dir, use_dora=True)
    assert hash_lora_dropout(dora) == 14  # DoRA reads the dropped input itself: a HashDropout module
    dropouts = [d for m in dora.modules() if hasattr(m, "lora_dropout") for d in m.lora_dropout.values()]
    assert all(isinstance(d, HashDropout) for d in dropouts)


def test_dropout_folded_into_a_equals_hash_dropout_then_a() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 8, bias=False)
    x = torch.randn(2, 5, 64, requires_grad=True)
    grad_out = torch.randn(2, 5, 8)

    def run(forward: Any) -> list[torch.Tensor]:
        x.grad, linear.weight.grad = None, None
        torch.manual_seed(11)
        y = forward(x)
        y.backward(grad_out)
        assert x.grad is not None and linear.weight.grad is not None
        return [y.detach(), x.grad.clone(), linear.weight.grad.clone()]

    reference = run(lambda t: linear(HashDropout(0.25).train()(t)))
    folded = run(folded_dropout_forward(linear.train(), 0.25))
    for want, have in zip(reference, folded, strict=True):
        torch.testing.assert_close(have, want, rtol=1e-6, atol=1e-6)
    linear.eval()
    assert torch.equal(folded_dropout_forward(linear, 0.25)(x), linear(x))  # no dropout outside training


def test_folded_dropout_trains_under_bf16_autocast() -> None:
    """A `train.precision: bf16` run: the forward runs under CPU autocast, the backward outside it (as the Trainer
    calls them). The adapter's gradients come back in the dtypes of what they belong to, close to an fp32 step."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 8, bias=False).train()
    x = torch.randn(2, 5, 64).bfloat16().requires_grad_(True)
    torch.manual_seed(11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = folded_dropout_forward(linear, 0.25)(x)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
    assert linear.weight.grad is not None and linear.weight.grad.dtype == torch.float32
    x32 = x.detach().float().requires_grad_(True)
    torch.manual_seed(11)
    y32 = folded_dropout_forward(linear, 0.25)(x32)
    weight_grad = linear.weight.grad.clone()
    linear.weight.grad = None
    y32.square().sum().backward()
    torch.testing.assert_close(y.float(), y32, rtol=0.02, atol=0.05)
    assert torch.nn.functional.cosine_similarity(weight_grad.flatten(), linear.weight.grad.flatten(), dim=0) > 0.99


# ---------------------------------------------------------------------------------------- bf16 frozen base layers


def _loss_and_lora_grads(model: Any, ids: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    model.eval()  # no dropout: the two models must see the same computation
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return float(loss.detach()), grads


def _twin_models(tiny_llama_dir: Path) -> tuple[Any, torch.Tensor, float, dict[str, torch.Tensor]]:
    """A LoRA model to speed up, an input, and the loss and adapter gradients of its untouched twin."""
    reference = _lora_model(tiny_llama_dir, init_lora_weights=False)
    fast = _lora_model(tiny_llama_dir, init_lora_weights=False)
    fast.load_state_dict(reference.state_dict())
    ids = torch.randint(5, reference.config.vocab_size, (1, 40), generator=torch.Generator().manual_seed(0))
    ref_loss, ref_grads = _loss_and_lora_grads(reference, ids)
    return fast, ids, ref_loss, ref_grads


def _assert_close(loss: float, grads: dict[str, torch.Tensor], ref_loss: float, ref: dict[str, torch.Tensor]) -> None:
    """Loss within 1%, the same adapter gradients (fp32) pointing the same way (cosine > 0.99)."""
    assert loss == pytest.approx(ref_loss, rel=1e-2)
    assert grads.keys() == ref.keys()
    for name, grad in grads.items():
        assert grad.dtype == torch.float32
        cosine = torch.nn.functional.cosine_similarity(grad.flatten(), ref[name].flatten(), dim=0)
        assert cosine > 0.99, name


def test_bf16_base_layers_keep_loss_and_adapter_gradients_close(tiny_llama_dir: Path) -> None:
    fast, ids, ref_loss, ref_grads = _twin_models(tiny_llama_dir)

    assert bf16_frozen_base_layers(fast) == 14
    frozen = {n: p for n, p in fast.named_parameters() if "base_layer" in n}
    assert frozen and all(p.dtype == torch.bfloat16 and not p.requires_grad for p in frozen.values())
    trainable = [p for p in fast.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in trainable)
    loss, grads = _loss_and_lora_grads(fast, ids)

    _assert_close(loss, grads, ref_loss, ref_grads)
    assert all(p.grad is None for p in frozen.values())


def test_bf16_base_layers_skip_what_they_cannot_take(tiny_llama_dir: Path) -> None:
    model = _lora_model(tiny_llama_dir)
    for parameter in model.parameters():
        parameter.data = parameter.data.to(torch.bfloat16)
    assert bf16_frozen_base_layers(model) == 0  # already 16-bit
    assert not bf16_lm_head(model)


def test_the_frozen_lm_head_goes_to_bf16_and_a_tied_embedding_still_returns_fp32(tiny_llama_dir: Path) -> None:
    fast, ids, ref_loss, ref_grads = _twin_models(tiny_llama_dir)

    tied = fast.get_input_embeddings().weight is fast.get_output_embeddings().weight
    assert bf16_lm_head(fast)
    assert fast.get_output_embeddings().weight.dtype == torch.bfloat16
    assert tied == (fast.get_input_embeddings().weight.dtype == torch.bfloat16)
    assert fast.get_input_embeddings()(ids).dtype == torch.float32
    loss, grads = _loss_and_lora_grads(fast, ids)  # the model's own head forward: bf16 GEMM, fp32 logits
    _assert_close(loss, grads, ref_loss, ref_grads)
    assert not bf16_lm_head(fast)  # already bf16


# -------------------------------------------------------------------------------------------- per-example sdpa


def _tiny_sdpa_model(tiny_llama_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32).eval()
    model.set_attn_implementation("sdpa")
    return model


def test_flattened_row_gives_each_example_its_own_logits(tiny_llama_dir: Path) -> None:
    model = _tiny_sdpa_model(tiny_llama_dir)
    lengths = [5, 9, 3]
    generator = torch.Generator().manual_seed(0)
    examples = [torch.randint(5, model.config.vocab_size, (n,), generator=generator) for n in lengths]
    with torch.no_grad():
        separate = torch.cat([model(input_ids=x[None]).logits[0] for x in examples])
        prompt = examples[1][None]
        greedy = model.generate(prompt, max_new_tokens=6, do_sample=False)
        assert use_varlen_sdpa(model)
        assert model.config._attn_implementation == "factory_varlen_sdpa"
        row = torch.cat(examples)[None]
        positions = torch.cat([torch.arange(n) for n in lengths])[None]
        by_positions = model(input_ids=row, position_ids=positions).logits[0]
        bounds = torch.tensor([0, 5, 14, 17], dtype=torch.int32)
        by_bounds = model(input_ids=row, position_ids=positions, cu_seq_lens_q=bounds, cu_seq_lens_k=bounds).logits[0]
        assert torch.allclose(by_positions, separate, atol=1e-5)
        assert torch.allclose(by_bounds, separate, atol=1e-5)
        # generation (a cache, one query at a time) takes Transformers' own sdpa path: the same tokens
        assert torch.equal(model.generate(prompt, max_new_tokens=6, do_sample=False), greedy)


def test_segment_bounds_and_which_models_fit() -> None:
    assert segment_bounds(6, None, torch.tensor([[0, 1, 2, 0, 1, 0]])) == [0, 3, 5, 6]
    assert segment_bounds(4, torch.tensor([0, 4]), None) == [0, 4]
    assert segment_bounds(4, None, None) == [0, 4]
    with pytest.raises(ValueError, match="do not cover"):
        segment_bounds(5, torch.tensor([0, 4]), None)

    class Config:
        sliding_window = 4096
        use_sliding_window = True

    assert not varlen_fits(Config())
    Config.use_sliding_window = False
    assert varlen_fits(Config())
    Config.layer_types = ["full_attention", "sliding_attention"]  # type: ignore[attr-defined]
    assert not varlen_fits(Config())


# ------------------------------------------------------------------------------------------------ through a run


def test_a_cpu_lora_run_uses_the_kernels_and_the_switches_turn_them_off(tmp_path: Path, tiny_llama_dir: Path) -> None:
    extra = {"data": {"packing": True}, "method": {"lora": {"base_precision": "bf16"}}}
    job = write_job(tmp_path / "fast", tiny_llama_dir, "sft", "lora", extra)
    fast = train_cli(job)
    assert fast.returncode == 0, fast.stdout[-3000:] + fast.stderr[-3000:]
    assert "frozen base layers in bf16" in fast.stdout
    assert "frozen LM head in bf16" in fast.stdout
    assert "malloc: blocks over 1 MiB are returned" in fast.stdout or platform.libc_ver()[0] != "glibc"
    assert "LoRA dropout masks from a counter hash: 14 modules" in fast.stdout
    assert "sdpa per example" in fast.stdout
    assert "adapter inputs rebuilt in the backward, not kept: 2 SwiGLU MLPs, 5 RMSNorms" in fast.stdout

    plain_extra = {"data": {"packing": True}, "method": {"lora": {"base_precision": "fp32"}}}
    plain_job = write_job(tmp_path / "plain", tiny_llama_dir, "sft", "lora", plain_extra)
    switches_off = {"FACTORY_HASH_DROPOUT": "0", "FACTORY_MALLOC_TUNING": "0", "FACTORY_RECOMPUTE": "0"}
    plain = train_cli(plain_job, env=switches_off)
    assert plain.returncode == 0, plain.stdout[-3000:] + plain.stderr[-3000:]
    assert "frozen base layers" not in plain.stdout and "counter hash" not in plain.stdout
    assert "LM head in bf16" not in plain.stdout and "malloc:" not in plain.stdout
    assert "rebuilt in the backward" not in plain.stdout
    fast_losses, plain_losses = losses(tmp_path / "fast" / "run"), losses(tmp_path / "plain" / "run")
    assert sorted(fast_losses) == sorted(plain_losses) == [1, 2, 3]
    # different dropout draws and bf16 products: close, not equal, losses
    assert fast_losses[1] == pytest.approx(plain_losses[1], rel=0.05)
    resolved = json.loads((tmp_path / "fast" / "run" / "plan.json").read_text())
    assert resolved["engine_config"]["training_args"]["padding_free"] is True


def test_a_dpo_lora_run_scores_through_the_bf16_head_and_its_reference(tmp_path: Path, tiny_llama_dir: Path) -> None:
    extra = {"method": {"lora": {"base_precision": "bf16"}}}
    result = train_cli(write_job(tmp_path, tiny_llama_dir, "dpo", "lora", extra))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "frozen LM head in bf16" in result.stdout
    steps = losses(tmp_path / "run")
    assert sorted(steps) == [1, 2, 3] and all(np.isfinite(list(steps.values())))
