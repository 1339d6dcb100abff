"""verl parquet rows keep each row's own fields: messages, tool schemas and the canonical row round-trip exactly, and
the generated compute_score hands the rewards exactly the canonical row. (verl's own readers and reward managers
read these files in tests/engines/test_verl_contract.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from factory_cli.backends import get_backend
from factory_cli.backends.verl import backend as verl_backend
from factory_cli.backends.verl.data import ROW_KEY, SFT_DATASET_PAIRS, verl_rl_row, verl_sft_row, verl_table
from factory_cli.backends.verl.reward_adapter import reward_module_source
from tests.unit.test_verl_plan import job_of

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
    },
}
# Two canonical sft rows whose messages, tool calls and tool schemas have different fields.
SFT_ROWS: list[dict[str, Any]] = [
    {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}],
            },
            {"role": "tool", "content": "sunny", "name": "weather"},
            {"role": "assistant", "content": "Sunny."},
        ],
        "tools": json.dumps([WEATHER]),
    },
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+3?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}
                ],
            },
            {"role": "tool", "content": "5", "tool_call_id": "c1"},
            {"role": "assistant", "content": "5"},
        ],
        "tools": json.dumps(ADD),
    },
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
]
# Two canonical grpo rows with different extra columns (and a prompt message with a field of its own).
RL_ROWS: list[dict[str, Any]] = [
    {
        "prompt": [{"role": "user", "content": "1+1?"}],
        "answer": "2",
        "data_source": "demo_math",
        "level": 1,
        "tools": json.dumps([WEATHER]),
    },
    {
        "prompt": [{"role": "system", "content": "Think."}, {"role": "tool", "content": "x=3", "name": "calc"}],
        "answer": 3,
        "topic": {"area": "algebra", "tags": ["easy"]},
    },
]


def _write(tmp_path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    path = tmp_path / "rows.parquet"
    pq.write_table(verl_table(rows), path)
    return pq.read_table(path).to_pylist()


def test_rl_row_layout() -> None:
    row = verl_rl_row(RL_ROWS[0], 7)
    assert row["data_source"] == "demo_math" and row["ability"] == "general"
    assert row["prompt"] == RL_ROWS[0]["prompt"]
    assert row["reward_model"] == {"style": "rule", "ground_truth": "2"}
    assert row["extra_info"] == {"index": 7, "split": "train", ROW_KEY: json.dumps(RL_ROWS[0])}
    bare = verl_rl_row({"prompt": [{"role": "user", "content": "hi"}]}, 0, "test")
    assert bare["data_source"] == "factory" and bare["reward_model"]["ground_truth"] is None
    assert bare["extra_info"]["split"] == "test"


def test_sft_row_decodes_tools() -> None:
    assert verl_sft_row(SFT_ROWS[0]) == {"messages": SFT_ROWS[0]["messages"], "tools": [WEATHER]}
    assert verl_sft_row(SFT_ROWS[1])["tools"] == [ADD]  # one schema: a list of one
    assert verl_sft_row(SFT_ROWS[2])["tools"] is None
    assert verl_sft_row({**SFT_ROWS[2], "tools": " "})["tools"] is None


def test_sft_parquet_round_trips_each_row_exactly(tmp_path: Path) -> None:
    rows = [verl_sft_row(r) for r in SFT_ROWS]
    read = _write(tmp_path, rows)
    for row, back in zip(rows, read, strict=True):
        assert [json.loads(m) for m in back["messages"]] == row["messages"]
        assert (None if back["tools"] is None else json.loads(back["tools"])) == row["tools"]


def test_rl_parquet_round_trips_each_row_exactly(tmp_path: Path) -> None:
    rows = [verl_rl_row(r, i) for i, r in enumerate(RL_ROWS)]
    read = _write(tmp_path, rows)
    schema = pq.read_schema(tmp_path / "rows.parquet")
    assert schema.field("prompt").type == pa.list_(pa.json_(pa.string()))
    for original, back in zip(RL_ROWS, read, strict=True):
        assert [json.loads(m) for m in back["prompt"]] == original["prompt"]
        assert json.loads(back["extra_info"][ROW_KEY]) == original
        assert sorted(back["extra_info"]) == ["factory_row", "index", "split"]


def test_plain_parquet_would_merge_fields(tmp_path: Path) -> None:
    """Why the JSON: pyarrow's inferred structs give every row the fields of all rows."""
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.Table.from_pylist([verl_sft_row(r) for r in SFT_ROWS]), path)
    first = pq.read_table(path).to_pylist()[0]
    assert first["messages"][0] == {"role": "user", "content": "Weather in Paris?", "tool_calls": None,
                                    "name": None, "tool_call_id": None}  # fmt: skip


def _recording_reward(tmp_path: Path) -> tuple[list[dict[str, Any]], Path]:
    reward = tmp_path / "seen.py"
    reward.write_text(
        "import json\n"
        "def seen(prompts, completions, out, **columns):\n"
        "    with open(out, 'a', encoding='utf-8') as handle:\n"
        "        handle.write(json.dumps({'prompts': prompts, 'columns': columns}) + '\\n')\n"
        "    return [1.0 for _ in completions]\n",
        encoding="utf-8",
    )
    out = tmp_path / "seen.jsonl"
    spec = {"name": None, "function": "seen.py:seen", "weight": 1.0, "kwargs": {"out": str(out)}, "label": "seen"}
    return [spec], out


def test_compute_score_passes_the_canonical_row(tmp_path: Path) -> None:
    specs, out = _recording_reward(tmp_path)
    namespace: dict[str, Any] = {}
    exec(reward_module_source(specs, [str(tmp_path)]), namespace)
    for index, original in enumerate(RL_ROWS):
        row = verl_rl_row(original, index)
        # verl adds its own keys to extra_info before calling compute_score (reward_manager naive)
        extra = {**row["extra_info"], "num_turns": 2, "rollout_reward_scores": {}}
        result = namespace["compute_score"](row["data_source"], "answer", row["reward_model"]["ground_truth"], extra)
        assert result == {"score": 1.0, "seen": 1.0}
    seen = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    for original, call in zip(RL_ROWS, seen, strict=True):
        assert call["prompts"] == [original["prompt"]]
        assert call["columns"] == {key: [value] for key, value in original.items() if key != "prompt"}


def test_backend_writes_the_json_typed_table(tmp_path: Path) -> None:
    job = job_of("verl_grpo.yaml")
    path = tmp_path / "train.parquet"
    verl_backend.write_parquet(path, verl_backend.verl_rows(job, RL_ROWS, "train"))
    assert pq.read_schema(path).field("prompt").type == pa.list_(pa.json_(pa.string()))


def test_sft_plan_loads_the_factory_dataset_class() -> None:
    overrides = get_backend("verl").plan(job_of("verl_sft.yaml"), "cuda").engine_config["overrides"]
    assert all(f"{key}={value}" in overrides for key, value in SFT_DATASET_PAIRS)
