"""Canonical rows -> the parquet tables verl's datasets read, each row keeping exactly its own fields.

RL rows follow verl's `examples/data_preprocess` layout (RLHFDataset, verl 0.9): `data_source` picks the
reward, `prompt` is a chat message list, `reward_model.ground_truth` reaches compute_score, and `extra_info`
carries verl's own `index` plus the canonical row. SFT rows are MultiTurnSFTDataset's `messages` (+ `tools`).

Parquet gives all rows of a column one schema: stored as structs, a message would gain the fields of every other
row's messages (`tool_calls: None`, `name: None`), a tool schema the other rows' properties, extra_info the other
rows' keys. So the parts whose fields vary per row are stored as JSON:
* each message (RL `prompt`, SFT `messages`) as an `arrow.json` value: verl's RLHFDataset reads parquet with
  HF datasets, which decodes that type into the message's own dict; verl's SFT reader (pandas) does not, so SFT
  runs name `FactorySFTDataset` (sft_dataset.py) in `data.custom_cls` (SFT_DATASET_PAIRS), which decodes them;
* SFT `tools` as one `arrow.json` value, decoded by FactorySFTDataset;
* RL `extra_info` keeps a fixed schema (`index`, `split`, `factory_row`): `factory_row` is the canonical row as
  a JSON string, which the generated compute_score (reward_adapter.py) decodes, so rewards get the row's columns
  exactly as the deepspeed backend passes them.
`verl_table` builds the table with that schema; pyarrow is imported there only.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_DATA_SOURCE = "factory"
ROW_KEY = "factory_row"  # extra_info's field holding the canonical row as JSON (decoded by reward_adapter.py)
# verl's SFT trainer loads this class for factory's parquet (data.custom_cls of sft_trainer_engine.yaml).
SFT_DATASET_PAIRS: tuple[tuple[str, str], ...] = (
    ("data.custom_cls.path", "pkg://factory_cli.backends.verl.sft_dataset"),
    ("data.custom_cls.name", "FactorySFTDataset"),
)


def to_json(value: Any) -> str:
    """JSON text of a row part; a value JSON has no type for (a date read from parquet) becomes its string."""
    return json.dumps(value, ensure_ascii=False, default=str)


def verl_rl_row(row: dict[str, Any], index: int, split: str = "train") -> dict[str, Any]:
    """One canonical grpo row ({prompt, answer?, data_source?, ...extra}) as a verl RL row (messages as dicts)."""
    answer = row.get("answer")
    return {
        "data_source": str(row.get("data_source") or DEFAULT_DATA_SOURCE),
        "prompt": list(row["prompt"]),
        "ability": str(row.get("ability") or "general"),
        "reward_model": {"style": "rule", "ground_truth": None if answer is None else str(answer)},
        "extra_info": {"index": index, "split": split, ROW_KEY: to_json(row)},
    }


def verl_sft_row(row: dict[str, Any]) -> dict[str, Any]:
    """One canonical sft row ({messages, tools?: JSON text}) as a verl multi-turn SFT row (tools decoded)."""
    tools = row.get("tools")
    if isinstance(tools, str):
        tools = json.loads(tools) if tools.strip() else None
    if isinstance(tools, dict):
        tools = [tools]
    return {"messages": list(row["messages"]), "tools": tools or None}


def verl_table(rows: list[dict[str, Any]]) -> pa.Table:
    """verl rows (from verl_rl_row or verl_sft_row, not mixed) as a pyarrow table with the JSON-typed parts."""
    import pyarrow as pa

    json_type = pa.json_(pa.string())

    def json_values(values: list[Any]) -> pa.Array:
        storage = pa.array([None if v is None else to_json(v) for v in values], pa.string())
        return pa.ExtensionArray.from_storage(json_type, storage)

    def message_lists(key: str) -> pa.Array:
        offsets = [0]
        for row in rows:
            offsets.append(offsets[-1] + len(row[key]))
        flat = json_values([message for row in rows for message in row[key]])
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat)

    if rows and "messages" in rows[0]:
        return pa.table({"messages": message_lists("messages"), "tools": json_values([r["tools"] for r in rows])})
    reward = pa.struct([("style", pa.string()), ("ground_truth", pa.string())])
    extra = pa.struct([("index", pa.int64()), ("split", pa.string()), (ROW_KEY, pa.string())])
    return pa.table(
        {
            "data_source": pa.array([r["data_source"] for r in rows], pa.string()),
            "prompt": message_lists("prompt"),
            "ability": pa.array([r["ability"] for r in rows], pa.string()),
            "reward_model": pa.array([r["reward_model"] for r in rows], reward),
            "extra_info": pa.array([r["extra_info"] for r in rows], extra),
        }
    )
