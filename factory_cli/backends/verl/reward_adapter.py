"""The text of the module verl imports as its custom reward function: our rewards behind verl's compute_score. Pure.

verl (0.9, reward loop managers `naive` and `dapo`) calls
`compute_score(data_source=, solution_str=, ground_truth=, extra_info=, **kwargs)` once per completion and
accepts a float or a dict whose "score" is the reward; every other key of the dict is logged per sample
(reward_extra_info), so each reward's own value appears next to the weighted sum. The generated module
loads the rewards once per process with `factory_cli.rewards.loader.load_reward`, so the Ray workers need
factory installed in their environment (they share the driver's on one machine).

Each reward sees the canonical row exactly as the deepspeed backend passes it: the prompt, and every other key of
the row as a column. data.py stores the row as JSON in extra_info's `factory_row`, which compute_score decodes;
what verl adds to extra_info (index, split, num_turns, rollout_reward_scores) is not passed on. Called with an
extra_info that carries no such row (a hand-made call), its keys are the columns, with answer and data_source.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from factory_cli.backends.verl.data import ROW_KEY

RESERVED_KEYS = frozenset({"score", "acc"})

MODULE_TEMPLATE = '''\
"""verl reward hook written by factory: compute_score = the weighted sum of the job's rewards. Regenerated each run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from factory_cli.rewards.loader import load_reward

REWARDS: list[dict[str, Any]] = json.loads({rewards!r})
BASE_DIRS: list[str] = json.loads({base_dirs!r})
ROW_KEY = {row_key!r}
_LOADED: list[Any] = []


def _rewards() -> list[Any]:
    """The rewards, imported on first use (once per worker process)."""
    if not _LOADED:
        bases = [Path(d) for d in BASE_DIRS]
        for spec in REWARDS:
            _LOADED.append(load_reward(spec["name"], spec["function"], spec["weight"], spec["kwargs"], bases))
    return _LOADED


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict[str, float]:
    """verl's reward hook: {{"score": weighted sum, <reward label>: its value, ...}} for one completion."""
    info = dict(extra_info or {{}})
    encoded = info.get(ROW_KEY)
    if isinstance(encoded, str):  # the canonical row, as factory wrote it
        row = json.loads(encoded)
    else:
        row = {{**info, "answer": ground_truth, "data_source": data_source, "extra_info": info}}
    prompt = row.get("prompt")
    columns = {{key: [value] for key, value in row.items() if key != "prompt"}}
    scores: dict[str, float] = {{}}
    total = 0.0
    for spec, reward in zip(REWARDS, _rewards()):
        value = float(reward.score([solution_str], [prompt], columns)[0])
        if math.isnan(value):  # a reward that does not apply to this row
            value = 0.0
        scores[spec["key"]] = value
        total += spec["weight"] * value
    return {{"score": total, **scores}}
'''


def reward_keys(labels: Sequence[str]) -> list[str]:
    """Per-reward keys of the score dict: the labels, made unique and kept off verl's own keys."""
    keys: list[str] = []
    for label in labels:
        key = label if label not in RESERVED_KEYS else f"reward_{label}"
        suffix = 2
        while key in keys:
            key = f"{label}_{suffix}"
            suffix += 1
        keys.append(key)
    return keys


def reward_module_source(rewards: list[dict[str, Any]], base_dirs: Sequence[str] = ()) -> str:
    """Python source defining verl's compute_score over `rewards` ({name, function, weight, kwargs, label})."""
    labels = [str(r.get("label") or r.get("name") or str(r.get("function") or "").rsplit(":", 1)[-1]) for r in rewards]
    specs = [
        {
            "name": r.get("name"),
            "function": r.get("function"),
            "weight": float(r.get("weight", 1.0)),
            "kwargs": dict(r.get("kwargs") or {}),
            "key": key,
        }
        for r, key in zip(rewards, reward_keys(labels), strict=True)
    ]
    return MODULE_TEMPLATE.format(
        rewards=json.dumps(specs, ensure_ascii=False, sort_keys=True),
        base_dirs=json.dumps([str(d) for d in base_dirs]),
        row_key=ROW_KEY,
    )
