"""The verl plan at its edges (factory_cli/backends/verl/plan.py): what the golden plans of the examples do not vary —
hydra quoting, resume modes, the Megatron strategy, CPU runs, packing, eval files, remote code, schedules, what verl
cannot run, the settings it ignores, the merger's argv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from factory_cli.backends.verl.plan import check_verl_support, hydra_value, merge_argv, plan_verl
from factory_cli.config.defaults import DeviceFacts, resolve_defaults, resolve_device_defaults
from factory_cli.config.errors import UsageError
from factory_cli.config.load import parse_yaml_text
from factory_cli.config.schema import JOB_MODELS, VerlJob
from tests.unit.plan_helpers import EXAMPLES


def job_of(example: str, device: str = "cuda", **sections: Any) -> VerlJob:
    """An example job with `sections` merged in, resolved without factory check (which would refuse some of them)."""
    raw = parse_yaml_text((EXAMPLES / example).read_text(), example).data
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    raw["device"] = device
    job = resolve_device_defaults(resolve_defaults(JOB_MODELS["verl"].model_validate(raw)), DeviceFacts(device, True))
    assert isinstance(job, VerlJob)
    return job


def overrides(example: str, device: str = "cuda", **sections: Any) -> dict[str, str]:
    plan = plan_verl(job_of(example, device, **sections), device, "x")  # type: ignore[arg-type]
    return dict(o.split("=", 1) for o in plan.engine_config["overrides"])


def notes(example: str, device: str = "cuda", **sections: Any) -> list[str]:
    return list(plan_verl(job_of(example, device, **sections), device, "x").notes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("True", "'True'"),
        ("False", "'False'"),
        ("null", "'null'"),
        ("true", "'true'"),
        ("false", "'false'"),
        ("Truth", "Truth"),
        ("a/b.c:d", "a/b.c:d"),
        ("a b", "'a b'"),
        ("it's", "'it\\'s'"),
        ("a\\b", "'a\\\\b'"),
        (True, "True"),
        (None, "null"),
        ([1, "x y"], "[1,'x y']"),
    ],
)
def test_hydra_value(value: Any, text: str) -> None:
    assert hydra_value(value) == text


def test_resume_modes() -> None:
    assert overrides("verl_sft.yaml", output={"resume": "auto"})["trainer.resume_mode"] == "auto"
    never = overrides("verl_sft.yaml", output={"resume": "never"})
    assert never["trainer.resume_mode"] == "disable" and "trainer.resume_from_path" not in never
    path = overrides("verl_sft.yaml", output={"resume": "/ckpt/global_step_4"})
    assert (path["trainer.resume_mode"], path["trainer.resume_from_path"]) == ("resume_path", "/ckpt/global_step_4")


def test_sft_on_the_megatron_strategy() -> None:
    o = overrides(
        "verl_sft.yaml",
        method={"type": "full"},
        parallel={"strategy": "megatron", "param_offload": True},
        train={"scheduler": "cosine_with_min_lr", "min_lr_ratio": 0.1, "learning_rate": 1e-5},
    )
    assert (o["engine"], o["optim"], o["engine.param_offload"], o["engine.optimizer_offload"]) == (
        "megatron",
        "megatron",
        "True",
        "False",
    )
    assert (o["optim.lr_decay_style"], o["optim.min_lr"]) == ("cosine", "1e-06")
    assert "engine.strategy" not in o and "optim.lr_scheduler_type" not in o
    constant = overrides(
        "verl_sft.yaml", method={"type": "full"}, parallel={"strategy": "megatron"}, train={"scheduler": "constant"}
    )
    assert constant["optim.lr_decay_style"] == "constant" and "optim.min_lr" not in constant


def test_sft_on_fsdp_schedules_and_betas() -> None:
    o = overrides("verl_sft.yaml", train={"scheduler": "constant", "adam_beta1": 0.8, "adam_beta2": 0.95})
    assert (o["engine"], o["engine.strategy"], o["optim.lr_scheduler_type"]) == ("fsdp", "fsdp2", "constant")
    assert "optim.min_lr_ratio" not in o and "optim.lr_decay_style" not in o
    assert o["optim.betas"] == "[0.8,0.95]"
    cosine = overrides("verl_sft.yaml", train={"scheduler": "cosine_with_min_lr", "min_lr_ratio": 0.25})
    assert (cosine["optim.lr_scheduler_type"], cosine["optim.min_lr_ratio"]) == ("cosine", "0.25")


def test_sft_on_the_cpu() -> None:
    cpu = overrides("verl_sft_cpu.yaml", device="cpu")
    assert (cpu["data.num_workers"], cpu["engine.use_torch_compile"]) == ("0", "False")
    cuda = overrides("verl_sft.yaml")
    assert "data.num_workers" not in cuda and "engine.use_torch_compile" not in cuda


def test_sft_packing_eval_and_remote_code() -> None:
    o = overrides(
        "verl_sft.yaml",
        data={"packing": True, "max_length": 512, "eval_ratio": 0.1},
        train={"micro_batch_size": 2, "global_batch_size": 8},
        model={"trust_remote_code": True},
    )
    assert (o["data.use_dynamic_bsz"], o["data.max_token_len_per_gpu"]) == ("True", "1024")
    assert o["data.val_files"].endswith("val.parquet") and o["model.trust_remote_code"] == "True"
    plain = overrides("verl_sft.yaml", data={"packing": False, "eval_ratio": 0})
    assert plain["data.use_dynamic_bsz"] == "False"
    assert not {"data.max_token_len_per_gpu", "data.val_files", "model.trust_remote_code"} & set(plain)


def test_grpo_on_the_megatron_strategy_with_remote_code() -> None:
    o = overrides(
        "verl_grpo.yaml",
        parallel={"strategy": "megatron"},
        model={"trust_remote_code": True},
        grpo={"sampling": {"top_k": 1}, "overlong": {"buffer_length": 1, "penalty_factor": 0.5}},
    )
    assert o["actor_rollout_ref.actor.optim.lr_decay_style"] == "cosine"
    assert o["actor_rollout_ref.model.trust_remote_code"] == "True"
    assert o["actor_rollout_ref.rollout.top_k"] == "1"
    assert o["+reward.reward_kwargs.overlong_buffer_cfg.len"] == "1"
    assert o["+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor"] == "0.5"
    fsdp = overrides("verl_grpo.yaml", grpo={"sampling": {"top_k": 0}, "overlong": {"buffer_length": 0}})
    assert "actor_rollout_ref.actor.optim.lr_decay_style" not in fsdp
    assert "actor_rollout_ref.model.trust_remote_code" not in fsdp
    assert fsdp["actor_rollout_ref.rollout.top_k"] == "-1"
    assert not any(key.startswith("+reward.reward_kwargs.overlong_buffer_cfg") for key in fsdp)


def refused(example: str, device: str = "cuda", **sections: Any) -> tuple[str, str | None]:
    with pytest.raises(UsageError) as info:
        check_verl_support(job_of(example, device, **sections), device)  # type: ignore[arg-type]
    return info.value.message, info.value.hint


def test_what_verl_cannot_run() -> None:
    assert refused("verl_grpo.yaml", "cpu") == (
        "verl 0.9.1's GRPO needs GPUs or NPUs: its rollouts are vLLM / SGLang servers",
        "set device: cuda (or npu) on a GPU machine, or use backend: deepspeed for GRPO on the CPU",
    )
    assert refused("verl_sft_cpu.yaml", "cpu", parallel={"strategy": "megatron"}, method={"type": "full"}) == (
        "verl's Megatron strategy needs GPUs or NPUs",
        "use parallel.strategy: fsdp2 on the CPU",
    )
    assert refused("verl_sft.yaml", method={"type": "freeze"}) == (
        "verl does not train method freeze",
        "use method.type full or lora",
    )
    assert refused("verl_sft.yaml", method={"type": "lora"}, parallel={"strategy": "megatron"}) == (
        "LoRA through verl's Megatron strategy (Megatron Bridge) is not planned",
        "use parallel.strategy: fsdp2",
    )
    assert refused("verl_grpo.yaml", rollout={"engine": "hf"}) == (
        "verl 0.9.1 has no `hf` rollout",
        "use rollout.engine: vllm",
    )
    check_verl_support(job_of("verl_sft_cpu.yaml", "cpu"), "cpu")
    check_verl_support(job_of("verl_sft.yaml", method={"type": "full"}, parallel={"strategy": "megatron"}), "cuda")


def test_settings_verl_ignores_are_named() -> None:
    sft = notes(
        "verl_sft.yaml",
        train={"optimizer": "adamw_8bit", "scheduler": "linear"},
        data={"train_on_prompt": True},
    )
    assert [n for n in sft if n.startswith("ignored: ")] == [
        "ignored: train.optimizer adamw_8bit: the plan keeps verl's AdamW",
        "ignored: train.scheduler linear: verl has constant and cosine only (cosine is used)",
        "ignored: data.train_on_prompt: verl's SFT trains on assistant turns only",
    ]
    wsd = notes("verl_sft.yaml", train={"scheduler": "warmup_stable_decay", "optimizer": "adamw_torch_fused"})
    assert [n for n in wsd if n.startswith("ignored: ")] == [
        "ignored: train.scheduler warmup_stable_decay: verl has constant and cosine only (cosine is used)"
    ]
    megatron = notes(
        "verl_sft.yaml", method={"type": "full"}, parallel={"strategy": "megatron"}, train={"scheduler": "linear"}
    )
    assert not [n for n in megatron if n.startswith("ignored: ")]
    grpo = notes("verl_grpo.yaml", grpo={"sampling": {"repetition_penalty": 1.1}}, data={"train_on_prompt": True})
    assert [n for n in grpo if n.startswith("ignored: ")] == [
        "ignored: grpo.sampling.repetition_penalty: verl's rollout config has no repetition penalty",
        "ignored: grpo.mask_truncated_completions: verl shapes truncated completions with the overlong buffer",
    ]


def test_merge_argv() -> None:
    assert merge_argv("grpo", Path("/run/global_step_4"), Path("/run/.final.partial"), True) == [
        "python",
        "-m",
        "verl.model_merger",
        "merge",
        "--backend",
        "fsdp",
        "--local_dir",
        "/run/global_step_4/actor",
        "--target_dir",
        "/run/.final.partial",
        "--trust-remote-code",
    ]
    assert merge_argv("sft", Path("/run/global_step_4"), Path("/t"), False)[-4:] == [
        "--local_dir",
        "/run/global_step_4",
        "--target_dir",
        "/t",
    ]


def plan(example: str, device: str = "cuda", sizes: list[int] | None = None, **sections: Any) -> Any:
    return plan_verl(job_of(example, device, **sections), device, "x", dataset_sizes=sizes)  # type: ignore[arg-type]


def test_cpu_and_tensorboard_environment() -> None:
    env = plan("verl_sft_cpu.yaml", "cpu", logging={"report_to": ["tensorboard"]}).steps[0].env
    assert {k: env[k] for k in ("VERL_USE_EXTERNAL_MODULES", "VERL_PLATFORM", "VERL_ENGINE_DEVICE")} == {
        "VERL_USE_EXTERNAL_MODULES": "factory_cli.backends.verl.cpu_platform",
        "VERL_PLATFORM": "cpu",
        "VERL_ENGINE_DEVICE": "cuda",
    }
    assert env["TENSORBOARD_DIR"] == str(Path("runs/verl-sft-cpu/tensorboard").resolve())
    cuda = plan("verl_sft.yaml").steps[0].env
    assert not {"VERL_PLATFORM", "VERL_ENGINE_DEVICE", "TENSORBOARD_DIR"} & set(cuda)


def test_lora_alpha_and_targets() -> None:
    o = overrides("verl_sft.yaml", method={"type": "lora", "lora": {"rank": 8, "alpha": None, "target": ["q_proj"]}})
    assert (o["model.lora_rank"], o["model.lora_alpha"], o["model.target_modules"]) == ("8", "16", "[q_proj]")
    o = overrides("verl_sft.yaml", method={"type": "lora", "lora": {"rank": 8, "alpha": 4, "target": ["all"]}})
    assert (o["model.lora_alpha"], o["model.target_modules"]) == ("4", "all-linear")


def test_validation_follows_the_eval_data() -> None:
    given = overrides("verl_sft.yaml", data={"eval": ["demo-sft-messages"], "eval_ratio": 0}, output={"save_steps": 7})
    assert given["trainer.test_freq"] == "7" and "data.val_files" in given
    ratio = overrides("verl_sft.yaml", data={"eval_ratio": 0.5}, output={"save_steps": 7})
    assert ratio["trainer.test_freq"] == "7"
    none = overrides("verl_sft.yaml", data={"eval_ratio": 0}, output={"save_steps": 7})
    assert none["trainer.test_freq"] == "-1" and "data.val_files" not in none


def test_sft_length_from_the_rows() -> None:
    # 60 rows, global batch 16: 3 steps per epoch
    steps = plan("verl_sft.yaml", sizes=[60], train={"max_steps": 3, "epochs": None}).engine_config
    o = overrides_in(steps)
    assert (o["trainer.total_epochs"], o["trainer.total_training_steps"]) == ("1", "3")
    o = overrides_in(plan("verl_sft.yaml", sizes=[60], train={"max_steps": 7, "epochs": None}).engine_config)
    assert o["trainer.total_epochs"] == "3"
    o = overrides_in(plan("verl_sft.yaml", sizes=[16], train={"max_steps": None, "epochs": 1}).engine_config)
    assert (o["trainer.total_epochs"], o["trainer.total_training_steps"]) == ("1", "1")
    o = overrides_in(plan("verl_sft.yaml", sizes=None, train={"max_steps": 5, "epochs": None}).engine_config)
    assert (o["trainer.total_epochs"], o["trainer.total_training_steps"]) == ("5", "5")


def overrides_in(engine_config: dict[str, Any]) -> dict[str, str]:
    return dict(o.split("=", 1) for o in engine_config["overrides"])


def test_grpo_checkpoints_every_rollout_step_at_least() -> None:
    # 32 prompts x 8 samples, updates of 32: 8 actor updates per rollout step
    o = overrides("verl_grpo.yaml", output={"save_steps": 3})
    assert o["trainer.save_freq"] == "1"
    assert any(
        n.startswith("checkpoints: every 1 rollout steps (= 8 iterations); output.save_steps 3 rounded down")
        for n in notes("verl_grpo.yaml", output={"save_steps": 3})
    )
    assert any(
        n.startswith("checkpoints: every 2 rollout steps (= 16 iterations) into ")
        for n in notes("verl_grpo.yaml", output={"save_steps": 16})
    )


def test_notes_for_ascend_several_nodes_and_overlong() -> None:
    npu = notes("verl_sft.yaml", "npu")
    ascend = "Ascend: the launch sources /usr/local/Ascend/ascend-toolkit/set_env.sh first; rollouts need vllm-ascend"
    assert ascend in npu
    assert not any(n.startswith("Ascend") for n in notes("verl_sft.yaml"))
    planned = plan("verl_grpo.yaml", parallel={"nnodes": 2, "master_addr": "10.0.0.1"})
    two = planned.notes
    assert (
        "2 nodes: start a Ray cluster first with verl's interpreter (ray start --head on 10.0.0.1, ray start "
        "--address=10.0.0.1:6379 on the others), then run factory train on node 0 only; "
        f"{planned.run_dir} must be on storage every node sees (the data, the model link, the reward module and the "
        "checkpoints are read there by path)"
    ) in two
    assert not any("Ray cluster" in n for n in notes("verl_grpo.yaml"))
    overlong = notes("verl_grpo.yaml", grpo={"overlong": {"buffer_length": 1, "penalty_factor": 0.5}})
    assert any(n.startswith("overlong: verl's dapo reward manager penalizes the last 1 tokens") for n in overlong)
    assert not any(n.startswith("overlong:") for n in notes("verl_grpo.yaml", grpo={"overlong": {"buffer_length": 0}}))


def test_reward_specs_and_the_merge_lora_argv() -> None:
    from factory_cli.backends.verl.plan import merge_lora_argv, reward_specs

    job = job_of("verl_grpo.yaml")
    assert reward_specs(job.grpo) == [  # type: ignore[arg-type]
        {"name": r.name, "function": r.function, "weight": r.weight, "kwargs": dict(r.kwargs), "label": r.label}
        for r in job.grpo.rewards  # type: ignore[union-attr]
    ]
    assert set(reward_specs(job.grpo)[0]) == {"name", "function", "weight", "kwargs", "label"}  # type: ignore[arg-type]
    assert merge_lora_argv(Path("/t")) == ["python", "-m", "factory_cli.backends.verl.merge_lora", "/t"]


def test_cpu_and_megatron_overrides_keep_the_data() -> None:
    cpu = overrides("verl_sft_cpu.yaml", device="cpu")
    megatron = overrides("verl_sft.yaml", method={"type": "full"}, parallel={"strategy": "megatron"})
    for o in (cpu, megatron):
        assert o["data.train_files"].endswith("train.parquet") and o["data.messages_key"] == "messages"


def test_megatron_cosine_to_zero() -> None:
    o = overrides(
        "verl_sft.yaml",
        method={"type": "full"},
        parallel={"strategy": "megatron"},
        train={"scheduler": "cosine", "min_lr_ratio": 0.0},
    )
    assert o["optim.min_lr"] == "0"


def test_one_update_per_rollout_step() -> None:
    # updates of the whole step (256 samples): one actor iteration per rollout step
    o = overrides("verl_grpo.yaml", rollout={"update_batch_size": 256}, output={"save_steps": 16})
    assert o["trainer.save_freq"] == "16"


def test_grpo_schedule_with_max_steps_and_iterations() -> None:
    from dataclasses import asdict

    from factory_cli.rl_schedule import rl_schedule

    planned = plan("verl_grpo.yaml", sizes=[300], train={"max_steps": 16, "epochs": None}, grpo={"num_iterations": 2})
    # 32 prompts x 8 samples, updates of 32, 2 iterations: 16 actor steps per rollout step
    assert planned.engine_config["schedule"] == asdict(rl_schedule([300], 32, 8, 32, 2, 2))
    assert planned.engine_config["total_training_steps"] == 1


def test_reward_files_are_looked_up_in_the_base_dirs() -> None:
    job = job_of("verl_grpo.yaml")
    planned = plan_verl(job, "cuda", "x", base_dirs=["/jobs/here"])
    (source,) = planned.steps[0].files.values()
    assert "/jobs/here" in source
    (plain,) = plan_verl(job, "cuda", "x").steps[0].files.values()
    assert "/jobs/here" not in plain
