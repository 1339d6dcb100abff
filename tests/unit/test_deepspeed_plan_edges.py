"""The deepspeed plan at its edges (factory_cli/backends/deepspeed/plan.py): what the golden plans of the examples do
not vary — eval, epochs, several processes, ZeRO's JSON, data workers, LoRA alpha and targets, the overlong reward,
the CPU threads per rank, the accelerate launcher on CPU, the Ascend note."""

from __future__ import annotations

from typing import Any

from factory_cli.backends.deepspeed.plan import plan_deepspeed
from factory_cli.backends.deepspeed.zero import zero_config
from factory_cli.config.defaults import DeviceFacts, resolve_device_defaults
from factory_cli.config.schema import DeepSpeedJob
from factory_cli.config.validate import load_and_validate
from tests.unit.plan_helpers import EXAMPLES


def planned(example: str, *overrides: str, device: str = "cpu", cores: int | None = 4) -> tuple[DeepSpeedJob, Any]:
    job = load_and_validate(EXAMPLES / f"{example}.yaml", list(overrides)).job
    job = resolve_device_defaults(job, DeviceFacts(device, bf16=device != "cpu"))
    assert isinstance(job, DeepSpeedJob)
    return job, plan_deepspeed(job, device, cpu_cores=cores)  # type: ignore[arg-type]


def training_args(plan: Any) -> dict[str, Any]:
    return dict(plan.engine_config["training_args"])


def test_eval_follows_the_eval_data() -> None:
    _, plan = planned("sft_lora", "data.eval_ratio=0.1", "output.save_steps=7")
    args = training_args(plan)
    assert (args["eval_strategy"], args["eval_steps"]) == ("steps", 7)
    _, plan = planned("sft_lora", "data.eval=[demo-sft-alpaca]", "data.eval_ratio=0", "output.save_steps=7")
    assert training_args(plan)["eval_strategy"] == "steps"
    _, plan = planned("sft_lora", "data.eval_ratio=0")
    assert "eval_strategy" not in training_args(plan) and "eval_steps" not in training_args(plan)


def test_epochs_or_steps() -> None:
    _, plan = planned("sft_lora", "train.max_steps=null", "train.epochs=2")
    args = training_args(plan)
    assert args["num_train_epochs"] == 2 and "max_steps" not in args
    _, plan = planned("sft_lora", "train.max_steps=5")
    args = training_args(plan)
    assert args["max_steps"] == 5 and "num_train_epochs" not in args


def test_distributed_arguments_follow_the_world_and_zero() -> None:
    args = training_args(planned("sft_lora", "parallel.nproc_per_node=2")[1])
    assert (args["ddp_backend"], args["ddp_find_unused_parameters"]) == ("gloo", False)
    args = training_args(planned("sft_lora", "parallel.zero_stage=1")[1])
    assert args["ddp_backend"] == "gloo" and "ddp_find_unused_parameters" not in args
    args = training_args(planned("sft_lora", "parallel.zero_stage=0")[1])
    assert "ddp_backend" not in args and "ddp_find_unused_parameters" not in args


def test_zero_json_and_its_path() -> None:
    job, plan = planned("sft_lora", "parallel.zero_stage=2", device="cuda")
    assert training_args(plan)["deepspeed"] == f"{job.output.dir}/deepspeed.json"
    assert plan.engine_config["deepspeed"] == zero_config(job.parallel, "bf16")
    assert plan.engine_config["deepspeed"]["bf16"] == {"enabled": True}
    _, plan = planned("sft_lora", "parallel.zero_stage=0")
    assert "deepspeed" not in training_args(plan) and plan.engine_config["deepspeed"] is None


def test_data_workers_reach_trl_from_two() -> None:
    for example in ("sft_lora", "dpo_lora"):
        assert training_args(planned(example, "data.num_workers=2")[1])["dataset_num_proc"] == 2
        assert training_args(planned(example, "data.num_workers=1")[1])["dataset_num_proc"] is None


def test_lora_alpha_and_targets() -> None:
    peft = planned("sft_lora", "method.lora.rank=8", "method.lora.alpha=null")[1].engine_config["peft"]
    assert (peft["r"], peft["lora_alpha"], peft["target_modules"]) == (8, 16, "all-linear")
    peft = planned("sft_lora", "method.lora.rank=8", "method.lora.alpha=5")[1].engine_config["peft"]
    assert peft["lora_alpha"] == 5
    peft = planned("sft_lora", "method.lora.target=[q_proj,v_proj]")[1].engine_config["peft"]
    assert peft["target_modules"] == ["q_proj", "v_proj"]


def test_the_overlong_penalty_is_the_last_reward() -> None:
    overlong = ("grpo.overlong.buffer_length=1", "grpo.overlong.penalty_factor=0.5", "grpo.max_completion_length=64")
    job, plan = planned("grpo_lora", *overlong)
    specs = plan.engine_config["rewards"]
    assert specs[-1] == {
        "name": "soft_overlong_punishment",
        "function": None,
        "weight": 0.5,
        "kwargs": {"max_completion_len": 64, "soft_punish_cache": 1},
        "label": "overlong",
    }
    assert len(specs) == len(job.grpo.rewards) + 1  # type: ignore[union-attr]
    assert training_args(plan)["reward_weights"] == [r.weight for r in job.grpo.rewards] + [0.5]  # type: ignore[union-attr]
    job, plan = planned("grpo_lora", "grpo.overlong.buffer_length=0")
    assert [s["name"] for s in plan.engine_config["rewards"]] == [r.name for r in job.grpo.rewards]  # type: ignore[union-attr]
    assert len(training_args(plan)["reward_weights"]) == len(job.grpo.rewards)  # type: ignore[union-attr]


def test_cpu_ranks_share_the_cores_and_accelerate_runs_on_cpu() -> None:
    _, plan = planned("sft_lora", "parallel.nproc_per_node=2", cores=6)
    train = plan.steps[1]
    assert train.env["OMP_NUM_THREADS"] == "3"
    _, plan = planned("sft_lora", "parallel.nproc_per_node=2", "parallel.launcher=accelerate")
    argv = plan.steps[1].argv
    assert "--cpu" in argv and "--multi_gpu" in argv
    _, plan = planned("sft_lora", "parallel.nproc_per_node=2", "parallel.launcher=accelerate", device="cuda")
    assert "--cpu" not in plan.steps[1].argv


def test_ascend_plans_say_how_torch_npu_is_loaded() -> None:
    _, plan = planned("sft_lora", device="npu")
    assert plan.notes[-1] == "Ascend: torch_npu is imported in each worker before the model loads; no CUDA-only kernels"
    _, plan = planned("sft_lora", device="cuda")
    assert not any("Ascend" in note for note in plan.notes)
