"""A tiny random Qwen3-MoE (4 experts, 2 per token, fused 3-D expert weights) trained on CPU by the deepspeed backend:
the router's load-balancing loss is in the loss and in metrics.jsonl (TRL's `aux_loss`), LoRA adapts the experts and
routers only when the job says so, DPO and GRPO run, and two ZeRO-3 processes with the sparse blocks as DeepSpeed
leaf modules give the one-process losses."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import save_tiny_model
from tests.integration.train_helpers import deep_update, losses, metrics, train_cli, train_in_process, write_job

pytestmark = pytest.mark.integration

TINY_MOE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 1024,
    "router_aux_loss_coef": 0.01,
    "tie_word_embeddings": True,
}
FAST = {"train": {"learning_rate": 1e-3, "warmup_ratio": 0.0}}


@pytest.fixture(scope="module")
def tiny_moe_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_dir: Path) -> Path:
    """A tiny random Qwen3MoeForCausalLM (~3.2 M parameters, most in the tied embedding) + the SmolLM2 tokenizer."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-qwen3-moe"), smollm2_tokenizer_dir, "qwen3_moe", TINY_MOE)


def free_port() -> int:
    """A port no other process listens on now (runs beside this one must not meet at the default port)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loss_records(run: Path) -> list[dict[str, Any]]:
    return [r for r in metrics(run) if "loss" in r]


def adapter_keys(run: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(run / "final" / "adapter_model.safetensors"), "pt") as f:
        return list(f.keys())


def train(folder: Path, model: Path, stage: str, method: str, extra: dict[str, Any]) -> Path:
    assert train_in_process(write_job(folder, model, stage, method, extra)) == 0
    return folder / "run"


def test_sft_loss_falls_and_includes_the_logged_router_loss(tmp_path: Path, tiny_moe_dir: Path) -> None:
    run = train(tmp_path / "on", tiny_moe_dir, "sft", "full", deep_update(FAST, {"train": {"max_steps": 4}}))
    records = loss_records(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["loss"] < records[0]["loss"]
    aux = [r["aux_loss"] for r in records]
    # Switch-Transformer balance loss: experts x sum(token fraction x router probability), ~ top-k (2) when even
    assert all(math.isfinite(a) and 1.5 < a < 4.0 for a in aux), aux

    heavy_job = deep_update(FAST, {"train": {"max_steps": 1}, "model": {"moe": {"aux_loss_coef": 0.1}}})
    heavy = train(tmp_path / "heavy", tiny_moe_dir, "sft", "full", heavy_job)
    (first_heavy,) = loss_records(heavy)
    # the same first batch and weights: the loss differs by exactly the weight difference x the router loss (the
    # model's own router_aux_loss_coef, 0.01, when the job sets none)
    assert first_heavy["aux_loss"] == pytest.approx(aux[0], rel=1e-6)
    assert first_heavy["loss"] == pytest.approx(records[0]["loss"] + (0.1 - 0.01) * aux[0], rel=1e-5)
    zero_job = deep_update(FAST, {"train": {"max_steps": 1}, "model": {"moe": {"aux_loss_coef": 0.0}}})
    (first_zero,) = loss_records(train(tmp_path / "zero", tiny_moe_dir, "sft", "full", zero_job))
    assert "aux_loss" not in first_zero
    assert first_zero["loss"] == pytest.approx(records[0]["loss"] - 0.01 * aux[0], rel=1e-5)


@pytest.mark.parametrize("experts", [False, True])
def test_lora_adapts_experts_only_when_asked(tmp_path: Path, tiny_moe_dir: Path, experts: bool) -> None:
    extra = deep_update(FAST, {"train": {"max_steps": 1}, "method": {"lora": {"experts": experts}}})
    keys = adapter_keys(train(tmp_path, tiny_moe_dir, "sft", "lora", extra))
    modules = {k.split(".lora_")[0].split("layers.0.")[-1] for k in keys if ".layers.0." in k}
    attention = {f"self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    # PEFT keeps one low-rank pair per expert for a fused 3-D weight; the router (mlp.gate) is never adapted here
    expected = attention | ({"mlp.experts", "mlp.experts.base_layer"} if experts else set())
    assert modules == expected, sorted(keys)
    assert not [k for k in keys if "mlp.gate." in k]


def test_lora_on_the_router_when_asked(tmp_path: Path, tiny_moe_dir: Path) -> None:
    extra = deep_update(FAST, {"train": {"max_steps": 1}, "method": {"lora": {"router": True}}})
    keys = adapter_keys(train(tmp_path, tiny_moe_dir, "sft", "lora", extra))
    assert [k for k in keys if ".layers.0.mlp.gate." in k]
    assert not [k for k in keys if "experts" in k]


def test_dpo_and_grpo_log_the_router_loss(tmp_path: Path, tiny_moe_dir: Path) -> None:
    for stage, steps in (("dpo", 2), ("grpo", 1)):
        run = train(tmp_path / stage, tiny_moe_dir, stage, "lora", {"train": {"max_steps": steps}})
        records = loss_records(run)
        assert len(records) == steps
        assert all(math.isfinite(r["loss"]) and math.isfinite(r["aux_loss"]) for r in records), records


@pytest.mark.multiproc
def test_two_process_zero3_moe_matches_one_process(tmp_path: Path, tiny_moe_dir: Path) -> None:
    one = train(
        tmp_path / "one",
        tiny_moe_dir,
        "sft",
        "full",
        deep_update(FAST, {"train": {"max_steps": 2, "gradient_accumulation_steps": 2}}),
    )
    job = write_job(tmp_path / "two", tiny_moe_dir, "sft", "full", deep_update(FAST, {"train": {"max_steps": 2}}))
    result = train_cli(job, "parallel.nproc_per_node=2", "parallel.zero_stage=3", f"parallel.master_port={free_port()}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "ZeRO-3: Qwen3MoeSparseMoeBlock gathered whole (DeepSpeed leaf modules)" in result.stdout
    two = tmp_path / "two" / "run"
    assert losses(two) == pytest.approx(losses(one), rel=1e-5)
    assert all(math.isfinite(r["aux_loss"]) for r in loss_records(two))
    assert (two / "final" / "model.safetensors").is_file()


def tiny_qwen2_moe() -> Any:
    """A tiny random Qwen2-MoE: routed experts plus a shared expert (gate/up/down_proj) and its nn.Linear gate."""
    import torch
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    config = Qwen2MoeConfig(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_experts=4,
        num_experts_per_tok=2,
    )
    torch.manual_seed(0)
    return Qwen2MoeForCausalLM(config)


@pytest.mark.parametrize(("experts", "router"), [(False, False), (True, False), (True, True)])
def test_lora_targets_of_a_shared_expert_moe(experts: bool, router: bool) -> None:
    """What `target: all` reaches on Qwen2-MoE, through PEFT itself: never the router or the shared-expert gate
    unless asked; the shared expert's projections (named as transformers 4's experts, which PEFT maps onto the fused
    experts) only together with the experts."""
    from peft import get_peft_model

    from factory_cli.backends.deepspeed.moe import adapted_moe_parts, check_adapted_parts, moe_lora_kwargs
    from factory_cli.config.schema import LoraConfig
    from factory_cli.methods import peft_config_from_kwargs

    model = tiny_qwen2_moe()
    lora = LoraConfig(rank=2, experts=experts, router=router)
    kwargs = {"r": 2, "lora_alpha": 4, "target_modules": "all-linear", "task_type": "CAUSAL_LM"}
    peft_model = get_peft_model(model, peft_config_from_kwargs(model, {**kwargs, **moe_lora_kwargs(model, lora, True)}))
    check_adapted_parts(peft_model, lora)
    found = adapted_moe_parts(peft_model)
    assert bool(found["experts"]) is experts and bool(found["router"]) is router
    adapted = {n.split(".lora_")[0].split("layers.0.")[-1] for n, p in peft_model.named_parameters() if p.requires_grad}
    assert {f"self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")} <= adapted
    assert ("mlp.shared_expert_gate" in adapted) is router
    if not experts:
        assert not [n for n in adapted if n.startswith("mlp.")], adapted


def test_listing_transformers_4_expert_names_without_experts_is_refused() -> None:
    from factory_cli.backends.deepspeed.moe import moe_lora_kwargs
    from factory_cli.config.errors import UsageError
    from factory_cli.config.schema import LoraConfig

    model = tiny_qwen2_moe()  # its shared expert has gate_proj / up_proj / down_proj
    with pytest.raises(UsageError, match="PEFT maps gate_proj onto this model's fused experts"):
        moe_lora_kwargs(model, LoraConfig(target=["q_proj", "gate_proj"]), False)
    assert moe_lora_kwargs(model, LoraConfig(target=["q_proj", "v_proj"]), False) == {}
    assert moe_lora_kwargs(model, LoraConfig(target=["gate_proj"], experts=True), False) == {
        "target_parameters": ["experts.down_proj", "experts.gate_up_proj"]
    }


def test_router_loss_weight_on_a_dense_model_is_refused_when_loaded(tiny_llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    from factory_cli.backends.deepspeed.moe import router_loss_coef
    from factory_cli.config.errors import UsageError

    dense = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert router_loss_coef(dense, None) is None
    with pytest.raises(UsageError, match="computes no router load-balancing loss"):
        router_loss_coef(dense, 0.01)
    moe = tiny_qwen2_moe()
    assert router_loss_coef(moe, None) == moe.config.router_aux_loss_coef
    assert router_loss_coef(moe, 0.02) == 0.02


def test_pretraining_adds_and_logs_the_router_loss(tmp_path: Path, tiny_moe_dir: Path) -> None:
    """The plain Trainer (pt) adds weight x router loss once (the model's own weight, 0.01, not on top) and logs it."""
    first: dict[float, dict[str, Any]] = {}
    for coef in (0.0, 0.1):
        extra = deep_update(FAST, {"train": {"max_steps": 1}, "model": {"moe": {"aux_loss_coef": coef}}})
        (first[coef],) = loss_records(train(tmp_path / str(coef), tiny_moe_dir, "pt", "full", extra))
    assert "aux_loss" not in first[0.0]
    aux = first[0.1]["aux_loss"]
    assert math.isfinite(aux) and 1.5 < aux < 4.0
    assert first[0.1]["loss"] - first[0.0]["loss"] == pytest.approx(0.1 * aux, rel=1e-3)
