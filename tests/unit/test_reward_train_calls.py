"""Rewards as GRPOTrainer calls them at train time (backends/deepspeed/trainers.py `trl_reward_functions`): TRL's
own arguments reach a TRL-signature function unchanged, and every result is checked as `factory check`'s probe checks
it, so a batch reward that fails stops the run with its name and the user's line instead of training on garbage."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory_cli.backends.deepspeed.trainers import trl_reward_functions
from factory_cli.rewards.loader import RewardCallError

REWARDS = """\
def seen_by_trl(prompts, completions, answer, trainer_state, **kwargs):
    assert trainer_state.global_step == 7 and "completion_ids" in kwargs
    return [1.0 if c[0]["content"] == a else 0.0 for c, a in zip(completions, answer)]

def one_short(completions, **kwargs):
    return [1.0] * (len(completions) - 1)

def not_finite(completions, **kwargs):
    return [float("nan")] * len(completions)

def as_strings(completions, **kwargs):
    return [len(c.strip()) for c in completions]

def per_row(completion, answer, **kwargs):
    return float(completion == answer)
"""


class _State:
    global_step = 7


def _call(tmp_path: Path, name: str) -> list[float]:
    file = tmp_path / "my_rewards.py"
    file.write_text(REWARDS)
    spec = {"name": None, "function": f"{file}:{name}", "weight": 1.0, "kwargs": {}}
    (function,) = trl_reward_functions([spec], [tmp_path])
    assert function.__name__ == name
    prompts = [[{"role": "user", "content": "2+3?"}]] * 2
    completions = [[{"role": "assistant", "content": "5"}], [{"role": "assistant", "content": "6"}]]
    result: list[float] = function(
        prompts=prompts,
        completions=completions,
        completion_ids=[[1], [2]],
        answer=["5", "5"],
        trainer_state=_State(),
        log_metric=lambda *_: None,
    )
    return result


def test_trl_signature_gets_trls_own_arguments(tmp_path: Path) -> None:
    assert _call(tmp_path, "seen_by_trl") == [1.0, 0.0]
    assert _call(tmp_path, "per_row") == [1.0, 0.0]  # a per-sample reward gets the completion's text and its row


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("one_short", "reward `one_short` returned a list of 1 for a batch of 2 completions"),
        ("not_finite", "reward `not_finite` returned nan on row 0 of the batch"),
        ("as_strings", "reward `as_strings` raised AttributeError: 'list' object has no attribute 'strip' on a batch"),
    ],
)
def test_a_batch_reward_that_fails_at_train_time_stops_with_its_name(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(RewardCallError) as info:
        _call(tmp_path, name)
    assert info.value.message.startswith(message), info.value.message
    if name == "as_strings":  # the user's own line, not TRL's or factory's
        assert "my_rewards.py:12" in (info.value.hint or ""), info.value.hint
