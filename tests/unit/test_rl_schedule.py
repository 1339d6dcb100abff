"""RL schedule arithmetic: the docs/domain.md test vector and the divisibility rules."""

from __future__ import annotations

import pytest

from factory_cli.rl_schedule import RLSchedule, rl_schedule


def test_domain_vector() -> None:
    """2048 + 6973 prompts, 32 per step, 8 samples, updates of 32, saving every 5 rollout steps."""
    schedule = rl_schedule([2048, 6973], 32, 8, 32, save_every_rollout_steps=5)
    assert schedule == RLSchedule(
        prompts_per_epoch=8992,
        rollout_steps_per_epoch=281,
        samples_per_step=256,
        samples_per_epoch=71_936,
        updates_per_rollout=8,
        train_iterations_per_epoch=2248,
        save_every_iterations=40,
    )


def test_each_file_is_truncated_on_its_own() -> None:
    # Two files of 48 keep 32 each; the same 96 prompts in one file make three full batches.
    assert rl_schedule([48, 48], 32, 8, 32).prompts_per_epoch == 64
    assert rl_schedule([96], 32, 8, 32).prompts_per_epoch == 96


def test_no_save_cadence_and_ppo_epochs() -> None:
    schedule = rl_schedule([64], 32, 4, 64, ppo_epochs=2)
    assert schedule.rollout_steps_per_epoch == 2
    assert schedule.updates_per_rollout == 2
    assert schedule.train_iterations_per_epoch == 8
    assert schedule.save_every_iterations is None
    assert rl_schedule([64], 32, 4, 64, save_every_rollout_steps=3, ppo_epochs=2).save_every_iterations == 12


def test_small_dataset_gives_no_steps() -> None:
    schedule = rl_schedule([31], 32, 8, 32)
    assert schedule.rollout_steps_per_epoch == 0
    assert schedule.samples_per_epoch == 0


def test_updates_must_divide_the_rollout() -> None:
    with pytest.raises(ValueError, match="do not split into updates of 48"):
        rl_schedule([100], 32, 8, 48)
    with pytest.raises(ValueError, match="prompts_per_step"):
        rl_schedule([100], 0, 8, 32)
    with pytest.raises(ValueError, match="negative"):
        rl_schedule([-1], 32, 8, 32)


def test_describe_names_every_number() -> None:
    line = rl_schedule([2048, 6973], 32, 8, 32, save_every_rollout_steps=5).describe()
    for number in ("8992", "281", "256", "71936", "8 actor updates", "2248", "every 40 iterations"):
        assert number in line
