"""The verl backend: hydra overrides for verl's trainers, parquet data, our rewards through verl's hook."""

from __future__ import annotations

from collections.abc import Iterable

from factory_cli.backends.verl.checks import check_verl
from factory_cli.config.checks import CheckContext
from factory_cli.config.errors import Issue
from factory_cli.config.schema import JobBase


class VerlBackend:
    """verl (+ Ray): large-scale GRPO / DAPO / GSPO and FSDP SFT."""

    name = "verl"
    stages = frozenset({"sft", "grpo"})
    install_extra = "verl"

    def check(self, job: JobBase, ctx: CheckContext) -> Iterable[Issue]:
        """Rollout TP and batch arithmetic."""
        return check_verl(job, ctx)
