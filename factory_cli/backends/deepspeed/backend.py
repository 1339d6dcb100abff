"""The deepspeed backend: Transformers + TRL + PEFT, DeepSpeed ZeRO when asked. Engine imports stay in run."""

from __future__ import annotations

from collections.abc import Iterable

from factory_cli.backends.deepspeed.checks import check_deepspeed
from factory_cli.config.checks import CheckContext
from factory_cli.config.errors import Issue
from factory_cli.config.schema import JobBase


class DeepSpeedBackend:
    """Transformers Trainer (pt) and TRL trainers (sft, dpo, grpo), PEFT adapters, DeepSpeed ZeRO."""

    name = "deepspeed"
    stages = frozenset({"pt", "sft", "dpo", "grpo"})
    install_extra = "deepspeed"

    def check(self, job: JobBase, ctx: CheckContext) -> Iterable[Issue]:
        """ZeRO, offload and launcher settings."""
        return check_deepspeed(job, ctx)
