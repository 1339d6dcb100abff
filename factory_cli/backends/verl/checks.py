"""verl-only checks: rollout TP fits the devices, batches split evenly into groups and updates. No torch."""

from __future__ import annotations

from collections.abc import Iterator

from factory_cli.config.checks import CheckContext, divides, error, job_architecture
from factory_cli.config.errors import Issue
from factory_cli.config.schema import JobBase, VerlJob


def check_verl(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """Rollout tensor parallel and the rollout/update batch arithmetic."""
    if not isinstance(job, VerlJob):
        return
    p, r = job.parallel, job.rollout
    world = p.world_size
    if world % r.tp:
        yield error("rollout.tp", f"rollout tp {r.tp} does not divide the {world} devices", "use a divisor of it")
    arch = job_architecture(job, ctx)
    if arch is not None:
        yield from divides("rollout.tp", "rollout tp", r.tp, arch.num_attention_heads, "attention heads")
    if job.stage != "grpo" or job.grpo is None:
        return
    n = job.grpo.num_generations
    samples = r.prompts_per_step * n
    update = r.update_batch_size or samples
    if update % n:
        yield error(
            "rollout.update_batch_size",
            f"{update} samples per update is not a whole number of groups of {n}",
            f"use a multiple of grpo.num_generations ({n})",
        )
    elif samples % update:
        yield error(
            "rollout.update_batch_size",
            f"{samples} samples per rollout step ({r.prompts_per_step} prompts x {n}) do not split into updates "
            f"of {update}",
            f"use a divisor of {samples}",
        )
    if samples % world:
        yield error(
            "rollout.prompts_per_step",
            f"{samples} samples per step do not spread evenly over {world} devices",
            "make prompts_per_step x num_generations a multiple of the device count",
        )
