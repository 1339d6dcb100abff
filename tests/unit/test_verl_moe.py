"""Mixture-of-experts GRPO on verl: the plan's keys (FSDP, the megatron engine with EP, the router loss, rollout expert
parallel, routing replay), the checks (layout, MoE-only settings, the token-level-loss warning) and the gspo suggestion
of `factory config`. The model is a Qwen3-MoE config.json written here; the keys are proven against verl's own config
by tests/engines (the MoE variants of verl_probe.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from factory_cli.backends import get_backend
from factory_cli.backends.base import Plan
from factory_cli.config.defaults import DeviceFacts, resolve_device_defaults
from factory_cli.config.errors import Issue, JobError
from factory_cli.config.moe_checks import token_level_loss_on_moe
from factory_cli.config.render import TemplateChoice, render_job, resolve_choice
from factory_cli.config.validate import load_and_validate
from factory_cli.registry.models import architecture_of
from tests.unit.plan_helpers import EXAMPLES

ACTOR, ROLLOUT = "actor_rollout_ref.actor", "actor_rollout_ref.rollout"
MEGATRON = f"{ACTOR}.megatron"
QWEN3_MOE = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "hidden_size": 64,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "router_aux_loss_coef": 0.001,
    "vocab_size": 256,
    "max_position_embeddings": 4096,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
}


@pytest.fixture
def moe(tmp_path: Path) -> str:
    """A tiny Qwen3-MoE checkpoint folder (config only): 8 experts, 2 per token, 4 heads, 4 layers."""
    folder = tmp_path / "qwen3-moe"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN3_MOE), encoding="utf-8")
    return str(folder)


def issues_of(example: str, *overrides: str) -> list[Issue]:
    """Every issue `factory check` finds, errors and warnings."""
    try:
        return list(load_and_validate(EXAMPLES / example, list(overrides)).warnings)
    except JobError as exc:
        return list(exc.issues)


def at(issues: list[Issue], path: str) -> list[Issue]:
    return [i for i in issues if i.path == path]


def plan_of(*overrides: str) -> Plan:
    validated = load_and_validate(EXAMPLES / "verl_grpo.yaml", list(overrides))
    return get_backend("verl").plan(resolve_device_defaults(validated.job, DeviceFacts("cuda", bf16=True)), "cuda")


def overrides_of(plan: Plan) -> dict[str, str]:
    return dict(o.split("=", 1) for o in plan.engine_config["overrides"])


# ------------------------------------------------------------------------------------------------ plans


def test_megatron_engine_plans_ep_router_loss_and_routing_replay(moe: str) -> None:
    plan = plan_of(
        f"model.name_or_path={moe}",
        "grpo.loss=gspo",
        "parallel.strategy=megatron",
        "parallel.tp=2",
        "parallel.ep=4",
        "model.moe.aux_loss_coef=0.01",
        "rollout.tp=4",
        "rollout.expert_parallel=true",
        "rollout.routing_replay=R3",
    )
    o = overrides_of(plan)
    assert o["model_engine"] == "megatron"
    assert o[f"{MEGATRON}.tensor_model_parallel_size"] == "2"
    assert o[f"{MEGATRON}.pipeline_model_parallel_size"] == "1"
    assert o[f"{MEGATRON}.expert_model_parallel_size"] == "4"
    config = f"+{MEGATRON}.override_transformer_config"
    assert o[f"{config}.moe_router_load_balancing_type"] == "aux_loss"
    assert o[f"{config}.moe_aux_loss_coeff"] == "0.01"
    assert o[f"{MEGATRON}.router_replay.mode"] == "R3"
    assert o[f"{ROLLOUT}.enable_rollout_routing_replay"] == "True"
    assert o[f"{ROLLOUT}.expert_parallel_size"] == "4"  # verl wants the rollout's EP = its TP x DP (DP 1)
    assert o[f"{ACTOR}.policy_loss.loss_mode"] == "gspo"
    assert o[f"{ACTOR}.loss_agg_mode"] == "seq-mean-token-mean"
    notes = "\n".join(plan.notes)
    assert "TP 2 x PP 1 on 8 devices, experts split over EP 4" in notes
    assert "router load-balancing loss on (aux_loss, weight 0.01)" in notes
    assert "routing replay R3" in notes


def test_megatron_engine_keeps_verls_router_loss_off_unless_asked(moe: str) -> None:
    plan = plan_of(f"model.name_or_path={moe}", "parallel.strategy=megatron", "rollout.routing_replay=R2")
    o = overrides_of(plan)
    assert not [k for k in o if "override_transformer_config" in k]
    assert o[f"{MEGATRON}.router_replay.mode"] == "R2"
    assert f"{ROLLOUT}.enable_rollout_routing_replay" not in o  # R2 records in the trainer's old-log-prob pass
    assert any("router load-balancing loss off" in n for n in plan.notes)


def test_fsdp_moe_plan_has_rollout_ep_and_says_the_router_loss_is_ignored(moe: str) -> None:
    plan = plan_of(f"model.name_or_path={moe}", "rollout.expert_parallel=true", "model.moe.aux_loss_coef=0.001")
    o = overrides_of(plan)
    assert o[f"{ACTOR}.strategy"] == "fsdp2"
    assert o[f"{ROLLOUT}.expert_parallel_size"] == "2"  # the example's rollout.tp
    assert not [k for k in o if k.lstrip("+").startswith(MEGATRON)]
    assert any(n.startswith("ignored: model.moe.aux_loss_coef") for n in plan.notes)


def test_a_dense_plan_has_no_moe_keys() -> None:
    o = overrides_of(plan_of())
    assert not [k for k in o if "expert" in k or "router" in k or "routing" in k]
    megatron = overrides_of(plan_of("parallel.strategy=megatron"))
    assert megatron[f"{MEGATRON}.expert_model_parallel_size"] == "1"
    assert not [k for k in megatron if "router" in k or "override_transformer_config" in k]


def test_sft_on_the_megatron_engine_takes_the_layout_too(moe: str, tmp_path: Path) -> None:
    job_file = tmp_path / "sft.yaml"
    job_file.write_text(
        yaml.safe_dump(
            {
                "backend": "verl",
                "stage": "sft",
                "model": {"name_or_path": moe, "moe": {"aux_loss_coef": 0.001}},
                "method": {"type": "full"},
                "data": {"train": ["demo-sft-messages"]},
                "train": {"micro_batch_size": 1, "global_batch_size": 4},
                "parallel": {"nproc_per_node": 4, "strategy": "megatron", "ep": 2},
                "output": {"dir": str(tmp_path / "run")},
            }
        ),
        encoding="utf-8",
    )
    validated = load_and_validate(job_file)
    job = resolve_device_defaults(validated.job, DeviceFacts("cuda", bf16=True))
    o = overrides_of(get_backend("verl").plan(job, "cuda"))
    assert o["engine"] == "megatron" and o["engine.expert_model_parallel_size"] == "2"
    assert o["+engine.override_transformer_config.moe_aux_loss_coeff"] == "0.001"


# ------------------------------------------------------------------------------------------------ checks


@pytest.mark.parametrize("loss", ["grpo", "dapo", "dr_grpo"])
def test_token_level_losses_on_moe_warn_with_the_reason_and_the_alternatives(moe: str, loss: str) -> None:
    issues = issues_of("verl_grpo.yaml", f"model.name_or_path={moe}", f"grpo.loss={loss}")
    (issue,) = at(issues, "grpo.loss")
    assert issue.severity == "warning"
    assert "routing drift" in issue.message and "8 experts" in issue.message
    assert issue.hint is not None
    assert "grpo.loss: gspo" in issue.hint
    assert "parallel.strategy: megatron and rollout.routing_replay: R2 or R3" in issue.hint


def test_no_loss_warning_for_gspo_routing_replay_or_a_dense_model(moe: str) -> None:
    assert not at(issues_of("verl_grpo.yaml", f"model.name_or_path={moe}", "grpo.loss=gspo"), "grpo.loss")
    replayed = issues_of(
        "verl_grpo.yaml", f"model.name_or_path={moe}", "parallel.strategy=megatron", "rollout.routing_replay=R2"
    )
    assert not at(replayed, "grpo.loss") and not [i for i in replayed if i.severity == "error"]
    assert not at(issues_of("verl_grpo.yaml", "grpo.loss=grpo"), "grpo.loss")
    # On the megatron engine the hint names the one switch left.
    (issue,) = at(issues_of("verl_grpo.yaml", f"model.name_or_path={moe}", "parallel.strategy=megatron"), "grpo.loss")
    assert issue.hint is not None and "set rollout.routing_replay: R2 or R3" in issue.hint
    assert "parallel.strategy" not in issue.hint


def test_the_loss_check_is_one_function_for_every_backend(moe: str) -> None:
    arch = architecture_of(moe)
    (issue,) = token_level_loss_on_moe("dapo", arch, [])
    assert issue.path == "grpo.loss" and issue.hint == "use grpo.loss: gspo (one importance ratio per sequence)"
    assert not list(token_level_loss_on_moe("gspo", arch, []))
    assert not list(token_level_loss_on_moe("grpo", None, []))


def test_megatron_layout_errors(moe: str) -> None:
    m = f"model.name_or_path={moe}"
    fsdp = at(issues_of("verl_grpo.yaml", m, "parallel.ep=2"), "parallel.ep")
    assert fsdp and "strategy fsdp2" in fsdp[0].message and fsdp[0].severity == "error"
    grid = at(
        issues_of("verl_grpo.yaml", m, "parallel.strategy=megatron", "parallel.tp=2", "parallel.ep=8"), "parallel.ep"
    )
    assert grid and "TP 2 x EP 8 x PP 1 does not divide the 8 devices" in grid[0].message
    assert grid[0].hint == "EP sizes that fit: [1, 2, 4]"
    uneven = at(issues_of("verl_grpo.yaml", m, "parallel.strategy=megatron", "parallel.ep=3"), "parallel.ep")
    assert any("does not divide experts 8" in i.message for i in uneven)
    layers = at(issues_of("verl_grpo.yaml", m, "parallel.strategy=megatron", "parallel.pp=8"), "parallel.pp")
    assert layers and "does not divide layers 4" in layers[0].message
    dense = at(issues_of("verl_grpo.yaml", "parallel.strategy=megatron", "parallel.ep=2"), "parallel.ep")
    assert dense and "needs a mixture-of-experts model" in dense[0].message


def test_moe_rollout_settings_need_an_moe_model_and_the_megatron_engine(moe: str) -> None:
    dense = issues_of("verl_grpo.yaml", "rollout.expert_parallel=true", "rollout.routing_replay=R2")
    assert "needs a mixture-of-experts model" in at(dense, "rollout.expert_parallel")[0].message
    m = f"model.name_or_path={moe}"
    fsdp = at(issues_of("verl_grpo.yaml", m, "rollout.routing_replay=R3"), "rollout.routing_replay")
    assert fsdp and fsdp[0].severity == "error" and "strategy fsdp2" in fsdp[0].message
    one = at(issues_of("verl_grpo.yaml", m, "rollout.expert_parallel=true", "rollout.tp=1"), "rollout.expert_parallel")
    assert one and one[0].severity == "warning"


# ------------------------------------------------------------------------------------------------ factory config


def rendered(model: str) -> str:
    return render_job(resolve_choice(TemplateChoice("verl", "grpo", model, "full", "auto", "demo-grpo-math")))


def test_factory_config_suggests_gspo_for_an_moe_model_and_says_why(moe: str) -> None:
    text = rendered(moe)
    (line,) = [line for line in text.splitlines() if line.strip().startswith("loss:")]
    assert line.split("#")[0].split() == ["loss:", "gspo"]
    assert "mixture-of-experts" in line and "routing drifts" in line
    values = yaml.safe_load(text)
    assert values["grpo"]["epsilon"] == 3e-4 and values["grpo"]["epsilon_high"] == 4e-4  # GSPO's sequence clip
    assert values["rollout"]["expert_parallel"] is False and values["rollout"]["routing_replay"] == "disabled"
    assert values["parallel"]["ep"] == 1


def test_factory_config_keeps_grpo_for_a_dense_model() -> None:
    values = yaml.safe_load(rendered("qwen2.5-0.5b-instruct"))
    assert values["grpo"]["loss"] == "grpo" and values["grpo"]["epsilon"] == 0.2
    assert "expert_parallel" not in values["rollout"] and "routing_replay" not in values["rollout"]


def test_a_registry_moe_entry_gets_gspo_and_the_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registry entries are read through the same architecture (registry/models.py architecture_of)."""
    from factory_cli.registry import models

    dense = models.find_model("qwen2.5-0.5b-instruct")
    assert dense is not None
    arch = dense.architecture.model_copy(update={"num_experts": 8})
    entry = dense.model_copy(update={"name": "moe-entry", "hf_id": "org/moe-entry", "architecture": arch})
    registry = {**models.load_model_registry(), "moe-entry": entry}
    monkeypatch.setattr(models, "_load_default", lambda: registry)
    assert yaml.safe_load(rendered("moe-entry"))["grpo"]["loss"] == "gspo"
    (issue,) = at(issues_of("verl_grpo.yaml", "model.name_or_path=moe-entry"), "grpo.loss")
    assert "8 experts" in issue.message
