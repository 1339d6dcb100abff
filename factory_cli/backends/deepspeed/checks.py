"""deepspeed-backend checks: ZeRO, offload and launcher settings; mixture-of-experts settings (config/moe_checks.py).
No torch."""

from __future__ import annotations

from collections.abc import Iterator

from factory_cli.config.checks import CheckContext, error, warning
from factory_cli.config.errors import Issue
from factory_cli.config.moe_checks import check_moe
from factory_cli.config.schema import DeepSpeedJob, JobBase


def check_deepspeed(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """Offload needs ZeRO (and a path for nvme); the deepspeed launcher without ZeRO is plain DDP; MoE settings."""
    if not isinstance(job, DeepSpeedJob):
        return
    yield from check_moe(job, ctx)
    p = job.parallel
    if p.offload == "nvme" and not p.nvme_path:
        yield error("parallel.nvme_path", "offload: nvme needs a directory", "set parallel.nvme_path: /local_nvme")
    if p.offload != "none" and p.zero_stage == 0:
        yield error("parallel.offload", "offload needs ZeRO (zero_stage 1-3)", "set parallel.zero_stage: 2 or 3")
    if p.offload == "nvme" and p.zero_stage != 3:
        yield warning("parallel.offload", "nvme offload of parameters needs zero_stage 3; only optimizer is offloaded")
    if p.launcher == "deepspeed" and p.zero_stage == 0:
        yield warning("parallel.launcher", "the deepspeed launcher without ZeRO is plain DDP", "launcher: auto is fine")
