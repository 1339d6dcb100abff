"""RL schedule arithmetic: prompts -> rollout steps -> generated samples -> actor updates -> training iterations. Pure.

The rule (docs/domain.md): each dataset file is truncated to a whole number of rollout batches; every rollout step
generates `samples_per_prompt` completions per prompt; the actor then takes one optimizer step per
`update_batch_size` samples (times `ppo_epochs` passes over the rollout). Saving every N rollout steps is
saving every N x updates-per-rollout training iterations.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RLSchedule:
    """How one epoch of RL training divides into rollout steps and actor updates."""

    prompts_per_epoch: int
    rollout_steps_per_epoch: int
    samples_per_step: int
    samples_per_epoch: int
    updates_per_rollout: int
    train_iterations_per_epoch: int
    save_every_iterations: int | None

    def describe(self) -> str:
        """One line for a plan note or a log."""
        line = (
            f"{self.prompts_per_epoch} prompts/epoch -> {self.rollout_steps_per_epoch} rollout steps of "
            f"{self.samples_per_step} samples ({self.samples_per_epoch} generated/epoch) -> "
            f"{self.updates_per_rollout} actor updates per rollout step = "
            f"{self.train_iterations_per_epoch} training iterations/epoch"
        )
        if self.save_every_iterations is not None:
            line += f"; a checkpoint every {self.save_every_iterations} iterations"
        return line


def rl_schedule(
    dataset_sizes: list[int],
    prompts_per_step: int,
    samples_per_prompt: int,
    update_batch_size: int,
    save_every_rollout_steps: int | None = None,
    ppo_epochs: int = 1,
) -> RLSchedule:
    """The schedule for datasets of `dataset_sizes` prompts; raises ValueError when the batches do not divide.

    `update_batch_size` counts samples (completions), so one rollout step of `prompts_per_step x
    samples_per_prompt` samples gives that many divided by it actor updates; `ppo_epochs` (verl's ppo_epochs,
    TRL's num_iterations) repeats them.
    """
    for name, value in (
        ("prompts_per_step", prompts_per_step),
        ("samples_per_prompt", samples_per_prompt),
        ("update_batch_size", update_batch_size),
        ("ppo_epochs", ppo_epochs),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if any(size < 0 for size in dataset_sizes):
        raise ValueError(f"dataset sizes cannot be negative: {dataset_sizes}")
    samples_per_step = prompts_per_step * samples_per_prompt
    if samples_per_step % update_batch_size:
        raise ValueError(
            f"{samples_per_step} samples per rollout step ({prompts_per_step} prompts x {samples_per_prompt}) "
            f"do not split into updates of {update_batch_size}"
        )
    prompts_per_epoch = sum(size // prompts_per_step * prompts_per_step for size in dataset_sizes)
    rollout_steps = prompts_per_epoch // prompts_per_step
    updates_per_rollout = samples_per_step // update_batch_size
    iterations_per_rollout = updates_per_rollout * ppo_epochs
    return RLSchedule(
        prompts_per_epoch=prompts_per_epoch,
        rollout_steps_per_epoch=rollout_steps,
        samples_per_step=samples_per_step,
        samples_per_epoch=rollout_steps * samples_per_step,
        updates_per_rollout=updates_per_rollout,
        train_iterations_per_epoch=rollout_steps * iterations_per_rollout,
        save_every_iterations=(
            save_every_rollout_steps * iterations_per_rollout if save_every_rollout_steps is not None else None
        ),
    )
