"""The DeepSpeed JSON for a job: ZeRO stage, offload, precision. Values the HF Trainer knows are left as "auto"."""

from __future__ import annotations

from typing import Any

from factory_cli.config.schema import DeepSpeedParallel


def zero_config(parallel: DeepSpeedParallel, precision: str) -> dict[str, Any] | None:
    """DeepSpeed configuration for parallel.zero_stage 1-3, or None for plain DDP / one process."""
    if parallel.zero_stage == 0:
        return None
    zero: dict[str, Any] = {
        "stage": parallel.zero_stage,
        "overlap_comm": False,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if parallel.zero_stage >= 2:
        zero["allgather_partitions"] = True
        zero["reduce_scatter"] = True
    if parallel.zero_stage == 3:
        zero.update(
            {
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
                "stage3_max_live_parameters": 1_000_000_000,
                "stage3_max_reuse_distance": 1_000_000_000,
                "stage3_gather_16bit_weights_on_model_save": True,
            }
        )
    if parallel.offload != "none":
        target: dict[str, Any] = {"device": parallel.offload, "pin_memory": parallel.offload == "cpu"}
        if parallel.offload == "nvme":
            target["nvme_path"] = parallel.nvme_path
        zero["offload_optimizer"] = dict(target)
        if parallel.zero_stage == 3:
            zero["offload_param"] = dict(target)
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000},
        "zero_optimization": zero,
        "wall_clock_breakdown": False,
    }
