"""full / freeze / lora / qlora on the tiny Llama: PEFT configs, freezing, kbit preparation, parameter counts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from factory_cli.config.errors import UsageError
from factory_cli.config.schema import FreezeConfig, LoraConfig, MethodSection
from factory_cli.devices import DeviceInfo
from factory_cli.methods import (
    ALL_LINEAR,
    apply_freeze,
    count_parameters,
    decoder_layers,
    describe_trainable,
    linear_module_names,
    lora_target_modules,
    peft_config,
    peft_config_from_kwargs,
    prepare_for_kbit,
)
from factory_cli.modeling.load import load_model

pytestmark = pytest.mark.integration

CPU = DeviceInfo("cpu", 1, "cpu", bf16=False)
LINEARS = ["down_proj", "gate_proj", "k_proj", "lm_head", "o_proj", "q_proj", "up_proj", "v_proj"]
PER_LAYER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def load(path: Path, method: str = "full") -> Any:
    """The tiny model on CPU, in what a CPU job resolves to (fp32, sdpa; QLoRA computes in fp32)."""
    section = MethodSection.model_validate(
        {"type": method, "quant": {"compute_dtype": "fp32"}} if method == "qlora" else {"type": method}
    )
    return load_model(str(path), dtype="fp32", attn_implementation="sdpa", method=section, device=CPU)


def lora_method(method: str = "lora", **lora: Any) -> MethodSection:
    """A MethodSection with LoRA settings."""
    return MethodSection(type=method, lora=LoraConfig(**lora))  # type: ignore[arg-type]


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters that will train."""
    return [name for name, param in model.named_parameters() if param.requires_grad]


@pytest.fixture
def tiny(tiny_llama_dir: Path) -> Any:
    """A fresh tiny model per test (loading takes milliseconds)."""
    return load(tiny_llama_dir)


# ---------------------------------------------------------------------------------------------- LoRA


def test_all_becomes_peft_all_linear_and_adapts_every_linear_but_the_head(tiny: Any) -> None:
    from peft import get_peft_model

    config = peft_config(tiny, lora_method(rank=8))
    assert config is not None
    assert config.target_modules == ALL_LINEAR
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.0)  # alpha defaults to 2 x rank
    assert config.task_type == "CAUSAL_LM"
    model = get_peft_model(tiny, config)
    adapted = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    assert adapted == set(PER_LAYER)
    trainable = trainable_names(model)
    assert trainable and all("lora_" in name for name in trainable)
    # 2 layers x 7 linears x (A: r x in + B: out x r)
    hidden, inter, kv = 64, 128, 32
    shapes = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden), (hidden, inter), (hidden, inter)]
    shapes.append((inter, hidden))
    expected = 2 * sum(8 * fan_in + 8 * fan_out for fan_in, fan_out in shapes)
    assert count_parameters(model)[0] == expected


def test_lora_options_are_passed_on(tiny: Any) -> None:
    config = peft_config(
        tiny,
        lora_method(
            rank=4,
            alpha=32,
            dropout=0.0,
            target=["q_proj", "v_proj"],
            use_rslora=True,
            use_dora=True,
            modules_to_save=["lm_head"],
        ),
    )
    assert config is not None
    assert set(config.target_modules) == {"q_proj", "v_proj"}
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 32, 0.0)
    assert config.use_rslora and config.use_dora
    assert set(config.modules_to_save) == {"lm_head"}


def test_comma_separated_target_string(tiny: Any) -> None:
    method = MethodSection.model_validate({"type": "lora", "lora": {"target": "q_proj, k_proj"}})
    assert lora_target_modules(tiny, method.lora, None) == ["q_proj", "k_proj"]


def test_unknown_target_names_it_and_lists_the_linear_modules(tiny: Any) -> None:
    with pytest.raises(UsageError) as info:
        peft_config(tiny, lora_method(target=["q_proj", "query_key_value"]))
    assert "query_key_value" in info.value.message and "`q_proj`" not in info.value.message
    assert info.value.hint is not None
    for name in LINEARS:
        assert name in info.value.hint


def test_target_that_is_not_a_linear_layer_is_rejected(tiny: Any) -> None:
    with pytest.raises(UsageError, match="input_layernorm"):
        lora_target_modules(tiny, LoraConfig(target=["input_layernorm"]), None)
    with pytest.raises(UsageError, match="self_attn"):
        lora_target_modules(tiny, LoraConfig(target=["self_attn"]), None)


def test_all_mixed_with_names_is_rejected(tiny: Any) -> None:
    with pytest.raises(UsageError, match="mixes"):
        lora_target_modules(tiny, LoraConfig(target=["all", "q_proj"]), None)


def test_empty_target_falls_back_to_registry_targets_then_all(tiny: Any) -> None:
    assert lora_target_modules(tiny, LoraConfig(target=[]), ["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    assert lora_target_modules(tiny, LoraConfig(target=[]), None) == ALL_LINEAR


def test_unknown_modules_to_save_is_an_error(tiny: Any) -> None:
    with pytest.raises(UsageError, match="score"):
        peft_config(tiny, lora_method(modules_to_save=["score"]))


def test_full_and_freeze_have_no_peft_config(tiny: Any) -> None:
    assert peft_config(tiny, MethodSection(type="full")) is None
    assert peft_config(tiny, MethodSection(type="freeze")) is None


def test_peft_config_from_planned_kwargs(tiny: Any) -> None:
    planned = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear", "bias": "none"}
    config = peft_config_from_kwargs(tiny, planned, None)
    assert config.target_modules == ALL_LINEAR and config.task_type == "CAUSAL_LM"
    with pytest.raises(UsageError, match="c_attn"):
        peft_config_from_kwargs(tiny, {**planned, "target_modules": ["c_attn"]}, None)


def test_linear_module_names(tiny: Any) -> None:
    assert linear_module_names(tiny) == LINEARS


# ---------------------------------------------------------------------------------------------- freeze


def test_freeze_last_layer_trains_exactly_that_layer(tiny: Any) -> None:
    apply_freeze(tiny, FreezeConfig(trainable_layers=1))
    trainable = trainable_names(tiny)
    layer1 = [name for name, _ in tiny.named_parameters() if name.startswith("model.layers.1.")]
    assert trainable == layer1 and len(layer1) == 9  # 7 linears + 2 norms


def test_freeze_negative_trains_the_first_layers(tiny: Any) -> None:
    apply_freeze(tiny, FreezeConfig(trainable_layers=-1))
    assert trainable_names(tiny) and all(name.startswith("model.layers.0.") for name in trainable_names(tiny))


def test_freeze_only_some_modules_plus_extra_modules(tiny: Any) -> None:
    apply_freeze(tiny, FreezeConfig(trainable_layers=2, trainable_modules=["mlp"], extra_modules=["embed_tokens"]))
    trainable = set(trainable_names(tiny))
    expected = {f"model.layers.{i}.mlp.{p}.weight" for i in (0, 1) for p in ("gate_proj", "up_proj", "down_proj")}
    assert trainable == expected | {"model.embed_tokens.weight"}


def test_freeze_extra_lm_head_on_tied_embeddings(tiny: Any) -> None:
    apply_freeze(tiny, FreezeConfig(trainable_layers=0, extra_modules=["lm_head"]))
    assert tiny.lm_head.weight.requires_grad  # tied: lm_head.weight is embed_tokens.weight
    assert trainable_names(tiny) == ["model.embed_tokens.weight"]


def test_freeze_more_layers_than_the_model_has(tiny: Any) -> None:
    with pytest.raises(UsageError, match="2 decoder layers"):
        apply_freeze(tiny, FreezeConfig(trainable_layers=3))
    with pytest.raises(UsageError, match="2 decoder layers"):
        apply_freeze(tiny, FreezeConfig(trainable_layers=-3))


def test_freeze_nothing_trainable_is_an_error(tiny: Any) -> None:
    with pytest.raises(UsageError, match="nothing to train"):
        apply_freeze(tiny, FreezeConfig(trainable_layers=0))


def test_freeze_unknown_module_names(tiny: Any) -> None:
    with pytest.raises(UsageError) as info:
        apply_freeze(tiny, FreezeConfig(trainable_layers=1, trainable_modules=["cross_attn"]))
    assert "cross_attn" in info.value.message and info.value.hint is not None and "self_attn" in info.value.hint
    with pytest.raises(UsageError, match="wte"):
        apply_freeze(tiny, FreezeConfig(trainable_layers=1, extra_modules=["wte"]))


def test_decoder_layers_falls_back_to_the_longest_module_list() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.heads = nn.ModuleList([nn.Linear(2, 2)])
            self.blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])

    name, layers = decoder_layers(Odd())
    assert name == "blocks" and len(layers) == 3
    model = Odd()
    apply_freeze(model, FreezeConfig(trainable_layers=1))
    assert trainable_names(model) == ["blocks.2.weight", "blocks.2.bias"]


# ---------------------------------------------------------------------------------------------- QLoRA + counting


def test_count_parameters_and_description(tiny: Any) -> None:
    total = sum(p.numel() for p in tiny.parameters())
    assert count_parameters(tiny) == (total, total)
    apply_freeze(tiny, FreezeConfig(trainable_layers=1))
    trainable, _ = count_parameters(tiny)
    text = describe_trainable(tiny)
    assert re.fullmatch(r"trainable params: [\d,]+ of [\d,]+ \(\d+\.\d\d%\)", text)
    assert f"{trainable:,} of {total:,}" in text


def test_qlora_counts_4bit_weights_as_the_weights_they_hold(tiny_llama_dir: Path, tiny: Any) -> None:
    quantized = load(tiny_llama_dir, "qlora")
    packed = sum(p.numel() for p in quantized.parameters())
    assert packed < count_parameters(tiny)[1]  # raw numel undercounts packed 4-bit weights
    assert count_parameters(quantized)[1] == count_parameters(tiny)[1]


def test_prepare_for_kbit_then_lora_trains(tiny_llama_dir: Path) -> None:
    from peft import get_peft_model

    model = load(tiny_llama_dir, "qlora")
    config = peft_config(model, lora_method("qlora", rank=8))
    prepared = prepare_for_kbit(model, gradient_checkpointing=True)
    assert prepared.is_gradient_checkpointing
    assert not trainable_names(prepared)  # every base weight frozen
    peft_model = get_peft_model(prepared, config)
    peft_model.train()
    ids = torch.randint(0, 1000, (2, 16))
    loss = peft_model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {name: p.grad for name, p in peft_model.named_parameters() if p.requires_grad}
    assert grads and all(name and "lora_" in name for name in grads)
    assert any(g is not None and g.abs().sum() > 0 for name, g in grads.items() if "lora_B" in name)
    trainable, total = count_parameters(peft_model)
    assert 0 < trainable < total


def test_prepare_for_kbit_leaves_dense_models_alone(tiny: Any) -> None:
    assert prepare_for_kbit(tiny, gradient_checkpointing=True) is tiny
    assert all(p.requires_grad for p in tiny.parameters())
    assert not tiny.is_gradient_checkpointing
