"""The megatron backend: Megatron-LM / MindSpeed-LLM launched with argv built from the HF config."""

from __future__ import annotations

from collections.abc import Iterable

from factory_cli.backends.megatron.checks import check_megatron
from factory_cli.config.checks import CheckContext
from factory_cli.config.errors import Issue
from factory_cli.config.schema import JobBase


class MegatronBackend:
    """Megatron-LM on CUDA, MindSpeed-LLM on Ascend NPU: 3D parallel pt / sft / dpo."""

    name = "megatron"
    stages = frozenset({"pt", "sft", "dpo"})
    install_extra = "megatron"

    def check(self, job: JobBase, ctx: CheckContext) -> Iterable[Issue]:
        """TP / PP / CP / EP against the world size and the model."""
        return check_megatron(job, ctx)
