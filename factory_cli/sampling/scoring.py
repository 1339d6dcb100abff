"""Scoring with GRPO's reward machinery (factory_cli/rewards): the same built-ins, `file.py:function` rewards and
verl `compute_score` functions, combined as GRPO combines them (the weighted sum; a reward that returns None does
not apply to that answer and counts 0, as in factory_cli/backends/verl/reward_adapter.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory_cli.config.schema import RewardSpec
from factory_cli.rewards.loader import LoadedReward
from factory_cli.sampling.prompts import Prompt

PROBE_ROWS = 4


@dataclass(frozen=True)
class GroupScores:
    """The scores of one prompt's answers: the weighted total and each reward's own value, per answer."""

    totals: list[float]
    by_reward: dict[str, list[float]]


class Scorer:
    """The loaded rewards; `score(prompt, completions)` scores one prompt's group of answers."""

    def __init__(self, rewards: Sequence[LoadedReward]) -> None:
        self.rewards = list(rewards)
        self.labels = _unique_labels([reward.label for reward in self.rewards])

    @classmethod
    def load(cls, specs: Sequence[RewardSpec], base_dirs: Sequence[Path], probe: Sequence[Prompt] = ()) -> Scorer:
        """Import each reward (RewardLoadError with a hint) and call it once on the first prompts' own answers,
        as `factory check` does for GRPO (RewardCallError when it cannot score this data)."""
        from factory_cli.rewards.loader import load_reward
        from factory_cli.rewards.probe import probe_reward

        rewards = [load_reward(s.name, s.function, s.weight, s.kwargs, base_dirs) for s in specs]
        rows = [prompt.row for prompt in probe[:PROBE_ROWS]]
        for reward in rewards:
            probe_reward(reward, rows)
        return cls(rewards)

    def score(self, prompt: Prompt, completions: Sequence[str]) -> GroupScores:
        count = len(completions)
        columns: dict[str, Sequence[Any]] = {key: [value] * count for key, value in prompt.columns().items()}
        prompts = [prompt.messages] * count
        totals = [0.0] * count
        by_reward: dict[str, list[float]] = {}
        for label, reward in zip(self.labels, self.rewards, strict=True):
            values = [0.0 if math.isnan(v) else v for v in reward.score(completions, prompts, columns)]
            by_reward[label] = values
            totals = [total + reward.weight * value for total, value in zip(totals, values, strict=True)]
        return GroupScores(totals, by_reward)


def _unique_labels(labels: Sequence[str]) -> list[str]:
    out: list[str] = []
    for label in labels:
        name, suffix = label, 2
        while name in out:
            name, suffix = f"{label}_{suffix}", suffix + 1
        out.append(name)
    return out
