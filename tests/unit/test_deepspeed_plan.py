"""The deepspeed backend's plan: golden plans per example and device, ZeRO JSON, launch argv, NPU specifics."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from factory_cli.backends import get_backend
from factory_cli.backends.base import Plan
from factory_cli.backends.deepspeed.launch import launch_argv
from factory_cli.backends.deepspeed.zero import zero_config
from factory_cli.config.defaults import DeviceFacts, resolve_device_defaults
from factory_cli.config.schema import DeepSpeedJob, DeepSpeedParallel
from factory_cli.config.validate import load_and_validate
from tests.unit.plan_helpers import EXAMPLES, GoldenCheck

DEEPSPEED_EXAMPLES = ["quickstart_sft", "pt_full", "sft_full", "sft_lora", "sft_qlora", "dpo_lora", "grpo_lora"]


def planned(example: str, facts: DeviceFacts, *overrides: str) -> tuple[DeepSpeedJob, Plan]:
    job = resolve_device_defaults(load_and_validate(EXAMPLES / f"{example}.yaml", list(overrides)).job, facts)
    assert isinstance(job, DeepSpeedJob)
    return job, get_backend("deepspeed").plan(job, facts.kind)


def portable(plan: Plan) -> dict:
    """The plan without what depends on this machine (interpreter path, CPU count)."""
    data = plan.to_dict()
    for step in data["steps"]:
        step["argv"] = ["<python>" if a == sys.executable else a for a in step["argv"]]
        step["env"].pop("OMP_NUM_THREADS", None)
    data["base_dirs"] = []
    return data


@pytest.mark.parametrize("example", DEEPSPEED_EXAMPLES)
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_golden_plans(example: str, device: str, golden: GoldenCheck) -> None:
    _, plan = planned(example, DeviceFacts(device, bf16=device != "cpu"))
    golden(f"deepspeed_{example}.{device}", portable(plan))


def test_cpu_plan_is_fp32_without_checkpointing() -> None:
    job, plan = planned("sft_lora", DeviceFacts("cpu"))
    args = plan.engine_config["training_args"]
    assert args["bf16"] is False and args["fp16"] is False, "TRL defaults bf16=True; the plan must say no on CPU"
    assert args["gradient_checkpointing"] is False and args["use_cpu"] is True
    assert job.model.dtype == "fp32" and job.model.attn_implementation == "sdpa"


def test_cuda_plan_is_bf16_with_checkpointing_and_fused_kernels_when_installed() -> None:
    job, plan = planned("sft_lora", DeviceFacts("cuda", bf16=True, flash_attn=True, liger=True))
    args = plan.engine_config["training_args"]
    assert args["bf16"] is True and args["gradient_checkpointing"] is True and args["use_liger_kernel"] is True
    assert job.model.attn_implementation == "flash_attention_2"


def test_compile_plan_compiles_decoder_blocks_with_dynamic_shapes_and_a_lasting_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FACTORY_CACHE", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    _, plain = planned("sft_lora", DeviceFacts("cpu"))
    assert "torch_compile" not in plain.engine_config["training_args"]
    assert not any(key.startswith(("ACCELERATE_DYNAMO", "TORCHINDUCTOR")) for key in plain.steps[-1].env)
    _, plan = planned("sft_lora", DeviceFacts("cpu"), "train.compile=true")
    env = plan.steps[-1].env
    assert plan.engine_config["training_args"]["torch_compile"] is True
    assert env["ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION"] == "1" and env["ACCELERATE_DYNAMO_USE_DYNAMIC"] == "1"
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "compile")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor_someone")  # torch's own default, not a choice
    _, defaulted = planned("sft_lora", DeviceFacts("cpu"), "train.compile=true")
    assert defaulted.steps[-1].env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "compile")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")
    _, chosen = planned("sft_lora", DeviceFacts("cpu"), "train.compile=true")
    assert chosen.steps[-1].env["TORCHINDUCTOR_CACHE_DIR"] == "/elsewhere"


def test_npu_plan_uses_hccl_and_no_cuda_only_options() -> None:
    job, plan = planned(
        "sft_lora", DeviceFacts("npu", bf16=True, flash_attn=True, liger=True), "parallel.nproc_per_node=8"
    )
    args = plan.engine_config["training_args"]
    env = plan.steps[-1].env
    assert args["ddp_backend"] == "hccl"
    assert args["use_liger_kernel"] is False
    assert job.data.packing and job.model.attn_implementation == "flash_attention_2"  # torch_npu's fused varlen
    assert env["PYTORCH_NPU_ALLOC_CONF"] == "expandable_segments:True" and "PYTORCH_CUDA_ALLOC_CONF" not in env
    assert any("ASCEND_RT_VISIBLE_DEVICES" in note for note in plan.notes)
    assert any("torch_npu" in note for note in plan.notes)
    assert "--nproc_per_node=8" in plan.steps[-1].argv


def test_zero_configs() -> None:
    assert zero_config(DeepSpeedParallel(), "bf16") is None
    z2 = zero_config(DeepSpeedParallel(zero_stage=2, offload="cpu"), "bf16")
    assert z2 is not None and z2["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert "offload_param" not in z2["zero_optimization"] and z2["bf16"]["enabled"] is True
    z3 = zero_config(DeepSpeedParallel(zero_stage=3, offload="nvme", nvme_path="/nvme"), "fp16")
    assert z3 is not None
    assert z3["zero_optimization"]["offload_param"] == {"device": "nvme", "pin_memory": False, "nvme_path": "/nvme"}
    assert z3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert z3["fp16"]["enabled"] is True and z3["train_micro_batch_size_per_gpu"] == "auto"


@pytest.mark.parametrize(
    ("parallel", "expected"),
    [
        (DeepSpeedParallel(), ["-m", "factory_cli.backends.deepspeed.worker"]),
        (DeepSpeedParallel(nproc_per_node=2), ["-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2"]),
        (DeepSpeedParallel(zero_stage=3), ["-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=1"]),
        (
            DeepSpeedParallel(nnodes=2, node_rank=1, nproc_per_node=8, master_addr="10.0.0.1", launcher="deepspeed"),
            ["-m", "deepspeed.launcher.runner", "--num_nodes=2", "--num_gpus=8", "--node_rank=1"],
        ),
        (DeepSpeedParallel(nproc_per_node=2, launcher="accelerate"), ["-m", "accelerate.commands.launch"]),
    ],
)
def test_launch_argv(parallel: DeepSpeedParallel, expected: list[str]) -> None:
    argv = launch_argv(parallel, "runs/x/plan.json", "cpu", python="python")
    assert argv[0] == "python" and argv[1 : 1 + len(expected)] == expected
    assert argv[-2:] == ["factory_cli.backends.deepspeed.worker", "runs/x/plan.json"]
    if parallel.launcher == "accelerate":
        assert "--multi_gpu" in argv and "--cpu" in argv
    if parallel.nnodes > 1:
        assert "--master_addr=10.0.0.1" in argv and "--no_ssh" in argv


def test_grpo_variants_map_to_trl() -> None:
    _, dapo = planned("grpo_lora", DeviceFacts("cpu"), "grpo.loss=dapo")
    args = dapo.engine_config["training_args"]
    assert args["loss_type"] == "dapo" and args["epsilon_high"] == 0.28 and args["mask_truncated_completions"]
    assert args["beta"] == 0.0 and dapo.engine_config["rewards"][-1]["name"] == "soft_overlong_punishment"
    assert len(args["reward_weights"]) == len(dapo.engine_config["rewards"])
    _, gspo = planned("grpo_lora", DeviceFacts("cpu"), "grpo.loss=gspo")
    args = gspo.engine_config["training_args"]
    assert args["importance_sampling_level"] == "sequence" and args["epsilon"] == pytest.approx(3e-4)
    _, dr = planned("grpo_lora", DeviceFacts("cpu"), "grpo.loss=dr_grpo")
    assert dr.engine_config["training_args"]["scale_rewards"] == "none"


def test_reporters_write_into_the_run_directory() -> None:
    _, plan = planned("sft_lora", DeviceFacts("cpu"), "logging.report_to=[tensorboard,wandb]", "logging.project=demo")
    env = plan.steps[-1].env
    assert env["TENSORBOARD_LOGGING_DIR"] == str(Path("runs/sft-lora/tensorboard"))
    assert env["WANDB_PROJECT"] == "demo"
    assert plan.engine_config["training_args"]["report_to"] == ["tensorboard", "wandb"]


def test_bf16_matmul_cpu_lora_plan_runs_bf16_base_layers_with_a_bounded_onednn_cache() -> None:
    job, plan = planned("quickstart_sft", DeviceFacts("cpu", cpu_bf16_matmul=True))
    assert job.method.lora.base_precision == "bf16"
    assert plan.steps[-1].env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "32"
    job, plan = planned("quickstart_sft", DeviceFacts("cpu", cpu_bf16_matmul=True), "method.lora.base_precision=fp32")
    assert job.method.lora.base_precision == "fp32"
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in plan.steps[-1].env
    _, plan = planned("quickstart_sft", DeviceFacts("cpu"))
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in plan.steps[-1].env
