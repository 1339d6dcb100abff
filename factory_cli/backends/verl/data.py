"""Canonical rows -> the row dicts verl's datasets read from parquet. Pure.

RL rows follow verl's `examples/data_preprocess` layout (RLHFDataset, verl 0.9): `data_source` picks the
reward, `prompt` is a chat message list, `reward_model.ground_truth` reaches compute_score, and
`extra_info` carries everything else (our reward adapter hands its keys to the rewards as row fields).
SFT rows are MultiTurnSFTDataset's `messages` (+ `tools`).
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_DATA_SOURCE = "factory"
# Canonical grpo keys with a place of their own in the verl row.
RL_OWN_KEYS = frozenset({"prompt", "answer", "data_source", "ability", "reward_model", "extra_info"})


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as plain dicts (role, content and tool fields only, in a stable order)."""
    keep = ("role", "content", "tool_calls", "tool_call_id", "name")
    return [{key: message[key] for key in keep if message.get(key) is not None} for message in messages]


def verl_rl_row(row: dict[str, Any], index: int, split: str = "train") -> dict[str, Any]:
    """One canonical grpo row ({prompt, answer?, data_source?, ...extra}) as a verl RL parquet row."""
    extra: dict[str, Any] = {"index": index, "split": split}
    given = row.get("extra_info")
    if isinstance(given, dict):
        extra.update(given)
    extra.update({key: value for key, value in row.items() if key not in RL_OWN_KEYS})
    prompt = _messages(row["prompt"])
    # Batch-style (TRL) rewards take the prompt too; verl hands compute_score only extra_info.
    extra["prompt"] = prompt
    answer = row.get("answer")
    return {
        "data_source": str(row.get("data_source") or DEFAULT_DATA_SOURCE),
        "prompt": prompt,
        "ability": str(row.get("ability") or "general"),
        "reward_model": {"style": "rule", "ground_truth": None if answer is None else str(answer)},
        "extra_info": extra,
    }


def verl_sft_row(row: dict[str, Any]) -> dict[str, Any]:
    """One canonical sft row ({messages, tools?}) as a verl multi-turn SFT parquet row."""
    out: dict[str, Any] = {"messages": _messages(row["messages"])}
    tools = row.get("tools")
    if isinstance(tools, str) and tools.strip():
        tools = json.loads(tools)
    if tools:
        out["tools"] = tools if isinstance(tools, list) else [tools]
    return out
