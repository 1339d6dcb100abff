"""factory's CPU speed-ups (factory_cli/accel/cpu): bf16 frozen base layers and LM head, per-example sdpa for
padding-free rows; and through a run, `train.cpu_speedups` switching all of them (the compact LM head, dense_logprob.py
and the rebuilt adapter inputs have test files of their own)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from factory_cli.accel.cpu.frozen_bf16 import bf16_frozen_base_layers, bf16_lm_head
from factory_cli.accel.cpu.varlen_attention import segment_bounds, use_varlen_sdpa, varlen_fits
from tests.integration.train_helpers import losses, train_cli, write_job

pytestmark = pytest.mark.integration


def _lora_model(tiny_llama_dir: Path, dropout: float = 0.0, **lora: Any) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear", **lora)
    return get_peft_model(model, config)


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


def test_a_cpu_lora_run_uses_the_speedups_and_cpu_speedups_off_uses_none(tmp_path: Path, tiny_llama_dir: Path) -> None:
    extra = {"data": {"packing": True}, "method": {"lora": {"base_precision": "bf16"}}}
    job = write_job(tmp_path / "fast", tiny_llama_dir, "sft", "lora", extra)
    fast = train_cli(job)
    assert fast.returncode == 0, fast.stdout[-3000:] + fast.stderr[-3000:]
    assert "frozen base layers in bf16" in fast.stdout
    assert "frozen LM head in bf16" in fast.stdout
    assert "sdpa per example" in fast.stdout
    assert "adapter inputs rebuilt in the backward, not kept: 2 SwiGLU MLPs, 5 RMSNorms, read by 14" in fast.stdout
    applied = [
        "compact_lm_head",
        "varlen_sdpa",
        "bf16_base_layers",
        "bf16_lm_head",
        "recomputed_adapter_inputs",
    ]
    assert f"cpu speed-ups: {', '.join(applied)}" in fast.stdout
    assert json.loads((tmp_path / "fast" / "run" / "summary.json").read_text())["cpu_speedups"] == applied

    plain_extra = {"data": {"packing": True}, "train": {"cpu_speedups": "off"}}
    plain = train_cli(write_job(tmp_path / "plain", tiny_llama_dir, "sft", "lora", plain_extra))
    assert plain.returncode == 0, plain.stdout[-3000:] + plain.stderr[-3000:]
    assert "cpu speed-ups: none" in plain.stdout
    assert "frozen base layers" not in plain.stdout and "sdpa per example" not in plain.stdout
    assert "LM head in bf16" not in plain.stdout and "rebuilt in the backward" not in plain.stdout
    assert json.loads((tmp_path / "plain" / "run" / "summary.json").read_text())["cpu_speedups"] == []
    resolved = yaml.safe_load((tmp_path / "plain" / "run" / "job.yaml").read_text())
    assert resolved["train"]["cpu_speedups"] == "off" and resolved["method"]["lora"]["base_precision"] == "fp32"
    fast_losses, plain_losses = losses(tmp_path / "fast" / "run"), losses(tmp_path / "plain" / "run")
    assert sorted(fast_losses) == sorted(plain_losses) == [1, 2, 3]
    # bf16 products against fp32 ones: close, not equal, losses
    assert fast_losses[1] == pytest.approx(plain_losses[1], rel=0.05)
    planned = json.loads((tmp_path / "fast" / "run" / "plan.json").read_text())
    assert planned["engine_config"]["training_args"]["padding_free"] is True


def test_a_dpo_lora_run_scores_through_the_bf16_head_and_its_reference(tmp_path: Path, tiny_llama_dir: Path) -> None:
    extra = {"method": {"lora": {"base_precision": "bf16"}}}
    result = train_cli(write_job(tmp_path, tiny_llama_dir, "dpo", "lora", extra))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "frozen LM head in bf16" in result.stdout
    steps = losses(tmp_path / "run")
    assert sorted(steps) == [1, 2, 3] and all(np.isfinite(list(steps.values())))
