"""`factory check` on mixture-of-experts jobs (config/moe_checks.py): the model is read from a local config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from factory_cli.config.errors import Issue, JobError
from factory_cli.config.validate import load_and_validate

SHAPE = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
    "max_position_embeddings": 512,
}
MOE = {"model_type": "qwen3_moe", "num_experts": 4, "num_experts_per_tok": 2, "router_aux_loss_coef": 0.001, **SHAPE}
DENSE = {"model_type": "llama", **SHAPE}


def model_dir(root: Path, config: dict[str, object]) -> Path:
    folder = root / str(config["model_type"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def issues(tmp_path: Path, config: dict[str, object], stage: str = "sft", **sections: object) -> list[Issue]:
    """Every issue `factory check` reports for a short deepspeed job on the model described by `config`."""
    data = {"sft": "demo-sft-alpaca", "grpo": "demo-grpo-math", "pt": "demo-pt"}[stage]
    job: dict[str, object] = {
        "backend": "deepspeed",
        "stage": stage,
        "device": "cpu",
        "model": {"name_or_path": str(model_dir(tmp_path, config))},
        "data": {"train": [data]},
        "train": {"max_steps": 1},
        "output": {"dir": str(tmp_path / "run")},
    }
    if stage == "grpo":
        job["grpo"] = {"num_generations": 2, "rewards": ["math_answer"]}
    for key, value in sections.items():
        section = job.setdefault(key, {})
        assert isinstance(section, dict) and isinstance(value, dict)
        section.update(value)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    try:
        return list(load_and_validate(path).warnings)
    except JobError as exc:
        return list(exc.issues)


def at(found: list[Issue], path: str) -> list[Issue]:
    return [i for i in found if i.path == path]


def test_a_plain_moe_job_passes(tmp_path: Path) -> None:
    assert not [i for i in issues(tmp_path, MOE, method={"type": "lora"}) if i.is_error]


def test_router_loss_weight_on_a_dense_model_is_an_error(tmp_path: Path) -> None:
    (issue,) = at(issues(tmp_path, DENSE, model={"moe": {"aux_loss_coef": 0.01}}), "model.moe.aux_loss_coef")
    assert issue.is_error and "dense model" in issue.message
    assert issue.hint == "remove model.moe.aux_loss_coef (it applies to mixture-of-experts models only)"
    assert not at(issues(tmp_path, MOE, model={"moe": {"aux_loss_coef": 0.01}}), "model.moe.aux_loss_coef")


def test_a_very_high_router_loss_weight_warns(tmp_path: Path) -> None:
    (issue,) = at(issues(tmp_path, MOE, model={"moe": {"aux_loss_coef": 0.5}}), "model.moe.aux_loss_coef")
    assert not issue.is_error and "0.001-0.01" in issue.message


@pytest.mark.parametrize("part", ["experts", "router"])
def test_lora_on_experts_or_router_of_a_dense_model_is_an_error(tmp_path: Path, part: str) -> None:
    (issue,) = at(issues(tmp_path, DENSE, method={"type": "lora", "lora": {part: True}}), f"method.lora.{part}")
    assert issue.is_error and issue.hint == f"remove method.lora.{part}"


def test_qlora_on_fused_experts_is_refused(tmp_path: Path) -> None:
    (issue,) = at(issues(tmp_path, MOE, method={"type": "qlora"}), "method.type")
    assert issue.is_error and "fused 3-D parameters" in issue.message
    assert "method.type: lora" in (issue.hint or "")
    assert not at(issues(tmp_path, DENSE, method={"type": "qlora"}), "method.type")


def test_expert_lora_takes_no_dropout_or_dora(tmp_path: Path) -> None:
    lora = {"experts": True, "dropout": 0.1, "use_dora": True}
    found = issues(tmp_path, MOE, method={"type": "lora", "lora": lora})
    assert [i.is_error for i in at(found, "method.lora.dropout")] == [True]
    assert [i.is_error for i in at(found, "method.lora.use_dora")] == [True]
    without_experts = issues(tmp_path, MOE, method={"type": "lora", "lora": {**lora, "experts": False}})
    assert not at(without_experts, "method.lora.dropout")


def test_token_level_grpo_on_moe_suggests_gspo(tmp_path: Path) -> None:
    (issue,) = at(issues(tmp_path, MOE, "grpo"), "grpo.loss")
    assert not issue.is_error and "routing" in issue.message
    assert issue.hint == "use grpo.loss: gspo (one importance ratio per sequence)"
    assert not at(issues(tmp_path, MOE, "grpo", grpo={"loss": "gspo"}), "grpo.loss")
    assert not at(issues(tmp_path, DENSE, "grpo"), "grpo.loss")


def test_factory_config_notes_a_registry_moe(monkeypatch: pytest.MonkeyPatch) -> None:
    from factory_cli.config.render import TemplateChoice, render_job, resolve_choice
    from factory_cli.registry import models

    dense = models.find_model("smollm2-135m")
    assert dense is not None
    moe = dense.model_copy(update={"architecture": dense.architecture.model_copy(update={"num_experts": 8})})
    choice = resolve_choice(TemplateChoice(backend="deepspeed", stage="sft", model="smollm2-135m", device="cpu"))
    assert "Mixture of experts" not in render_job(choice)
    monkeypatch.setattr(models, "find_model", lambda name: moe)
    text = render_job(choice)
    assert "# Mixture of experts (8 experts)" in text and "method.lora.experts: true" in text
    assert yaml.safe_load(text)["model"]["name_or_path"] == "smollm2-135m"


@pytest.mark.parametrize("model,loss", [("qwen3-30b-a3b", "gspo"), ("smollm2-135m", "grpo")])
def test_factory_config_suggests_gspo_for_a_registry_moe_on_deepspeed(model: str, loss: str) -> None:
    from factory_cli.config.render import TemplateChoice, render_job, resolve_choice

    choice = resolve_choice(TemplateChoice(backend="deepspeed", stage="grpo", model=model, device="cpu"))
    assert yaml.safe_load(render_job(choice))["grpo"]["loss"] == loss


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_the_plan_gives_trl_the_jobs_router_loss_weight(tmp_path: Path, stage: str) -> None:
    from factory_cli.backends import get_backend
    from factory_cli.config.defaults import DeviceFacts, resolve_device_defaults

    def trl_args(*overrides: str) -> dict[str, object]:
        (tmp_path / "job.yaml").unlink(missing_ok=True)
        issues(tmp_path, MOE, stage)  # writes job.yaml
        job = resolve_device_defaults(load_and_validate(tmp_path / "job.yaml", list(overrides)).job, DeviceFacts("cpu"))
        args: dict[str, object] = get_backend("deepspeed").plan(job, "cpu").engine_config["training_args"]
        return args

    assert trl_args("model.moe.aux_loss_coef=0.02")["router_aux_loss_coef"] == 0.02
    assert "router_aux_loss_coef" not in trl_args()  # the worker reads the model's own
