"""Adapter inputs rebuilt in the backward (factory_cli/accel/cpu/recomputed_activations.py): the same losses and
gradients, less kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from factory_cli.accel.cpu.frozen_bf16 import bf16_frozen_base_layers
from factory_cli.accel.cpu.recomputed_activations import (
    adapter_a_forward,
    recipe_of,
    recompute_adapter_inputs,
    swiglu_keeping_inputs,
    tag,
)

pytestmark = pytest.mark.integration


def _lora_model(tiny_llama_dir: Path, dropout: float) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(model, config)


def _kept_bytes_loss_and_grads(model: Any, ids: torch.Tensor) -> tuple[int, float, dict[str, torch.Tensor]]:
    """Bytes the backward keeps (parameters aside), the loss and the adapter gradients of one training step."""
    model.train()
    model.zero_grad()
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    torch.manual_seed(7)  # the same dropout masks in both models
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return sum(kept.values()), float(loss.detach()), grads


def _twins(tiny_llama_dir: Path, dropout: float) -> tuple[Any, Any, torch.Tensor]:
    reference = _lora_model(tiny_llama_dir, dropout)
    rebuilt = _lora_model(tiny_llama_dir, dropout)
    rebuilt.load_state_dict(reference.state_dict())
    for model in (reference, rebuilt):
        bf16_frozen_base_layers(model)
    ids = torch.randint(5, reference.config.vocab_size, (2, 48), generator=torch.Generator().manual_seed(0))
    return reference, rebuilt, ids


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_rebuilt_inputs_give_the_same_loss_and_gradients_and_keep_less(tiny_llama_dir: Path, dropout: float) -> None:
    reference, rebuilt, ids = _twins(tiny_llama_dir, dropout)
    # 2 MLPs; 2 norms per layer + the final one; the A matrices of 7 adapters x 2 layers, none behind a dropout
    assert recompute_adapter_inputs(rebuilt) == (2, 5, 14 if dropout == 0 else 0)

    ref_kept, ref_loss, ref_grads = _kept_bytes_loss_and_grads(reference, ids)
    kept, loss, grads = _kept_bytes_loss_and_grads(rebuilt, ids)

    assert loss == ref_loss
    assert grads.keys() == ref_grads.keys() and len(grads) == 28  # A and B of 7 adapters x 2 layers
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-6, atol=1e-7, msg=name)
    config = reference.config
    tokens = ids.numel()
    layers, intermediate, hidden = config.num_hidden_layers, config.intermediate_size, config.hidden_size
    if dropout > 0:  # the A matrices keep their dropped copies; the SwiGLU Function still keeps no silu(gate)
        assert ref_kept - kept == tokens * 4 * layers * intermediate
        return
    # Per layer: silu(gate) and the SwiGLU product (intermediate floats each) and the two norm outputs (hidden each)
    # but the first, whose input, the frozen embedding's output, carries no gradient (its backward keeps nothing).
    expected_saving = tokens * 4 * (layers * 2 * intermediate + (2 * layers - 1) * hidden)
    assert ref_kept - kept == expected_saving


def test_gradient_checkpointing_rebuilds_the_same_gradients(tiny_llama_dir: Path) -> None:
    reference, rebuilt, ids = _twins(tiny_llama_dir, 0.0)
    recompute_adapter_inputs(rebuilt)
    for model in (reference, rebuilt):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    _, ref_loss, ref_grads = _kept_bytes_loss_and_grads(reference, ids)
    _, loss, grads = _kept_bytes_loss_and_grads(rebuilt, ids)
    assert loss == ref_loss
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-6, atol=1e-7, msg=name)


def test_swiglu_function_matches_torch_and_tags_only_with_gradients_on() -> None:
    torch.manual_seed(0)
    gate, up = torch.randn(3, 5, 16, requires_grad=True), torch.randn(3, 5, 16, requires_grad=True)
    grad_out = torch.randn(3, 5, 16)
    want = torch.nn.functional.silu(gate) * up
    want_grads = torch.autograd.grad(want, (gate, up), grad_out)

    have = swiglu_keeping_inputs(gate, up)
    have_grads = torch.autograd.grad(have, (gate, up), grad_out)
    assert torch.equal(have, want)
    for got, expected in zip(have_grads, want_grads, strict=True):
        assert torch.equal(got, expected)
    recipe = recipe_of(have)
    assert recipe is not None and torch.equal(recipe[0](*recipe[1]), have)
    with torch.no_grad():
        assert recipe_of(swiglu_keeping_inputs(gate, up)) is None


def test_an_adapter_rebuilding_its_input_trains_under_bf16_autocast() -> None:
    """A `train.precision: bf16` run: the forward runs under CPU autocast, the backward outside it (as the Trainer
    calls them). The gradients come back in the dtypes of what they belong to, close to an fp32 step's."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 8, bias=False).train()
    source = torch.randn(2, 5, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = tag(source * 2, lambda t: t * 2, source)
        y = adapter_a_forward(linear)(x)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    assert source.grad is not None and source.grad.dtype == torch.float32
    assert linear.weight.grad is not None and linear.weight.grad.dtype == torch.float32
    weight_grad = linear.weight.grad.clone()
    linear.weight.grad = None
    y32 = linear(source.detach() * 2)
    y32.square().sum().backward()
    torch.testing.assert_close(y.float(), y32, rtol=0.02, atol=0.05)
    assert torch.nn.functional.cosine_similarity(weight_grad.flatten(), linear.weight.grad.flatten(), dim=0) > 0.99
    linear.eval()
    assert torch.equal(adapter_a_forward(linear)(x), linear(x))  # outside training: a plain matmul


def test_a_tensor_changed_in_place_loses_its_recipe() -> None:
    source = torch.randn(4)
    output = tag(source * 2, lambda t: t * 2, source)
    assert recipe_of(output) is not None
    output.add_(1)
    assert recipe_of(output) is None


def test_only_llama_style_modules_are_switched(tiny_llama_dir: Path) -> None:
    class GatedMLP(torch.nn.Module):  # the same parts, another forward
        def __init__(self) -> None:
            super().__init__()
            self.gate_proj = self.up_proj = self.down_proj = torch.nn.Linear(4, 4)
            self.act_fn = torch.nn.SiLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down_proj(self.act_fn(self.gate_proj(x)) + self.up_proj(x))

    from transformers.activations import ACT2FN

    model = _lora_model(tiny_llama_dir, 0.0)
    for layer in model.base_model.model.model.layers:
        layer.mlp.act_fn = ACT2FN["gelu"]  # a GeGLU: not SwiGLU, left alone
    assert recompute_adapter_inputs(model) == (0, 5, 14)
    assert recompute_adapter_inputs(torch.nn.Sequential(GatedMLP())) == (0, 0, 0)
