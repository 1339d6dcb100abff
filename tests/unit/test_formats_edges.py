"""Every RowError of factory_cli/data/formats.py in full: the message a user reads (what is wrong, where, the fix) and
the field it names, one row per way a row can be wrong; then the conversions at their edges (tags, tool calls, content
parts, columns, answers, extra keys)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from factory_cli.data.formats import FormatSpec, RowError, convert_row
from tests.unit.test_formats import assistant, system, user

# (case, row, FormatSpec arguments, stage, field, message)
ERRORS: list[tuple[str, Any, dict[str, Any], str, str | None, str]] = [
    (
        "bool content",
        {"messages": [{"role": "user", "content": True}, {"role": "assistant", "content": "a"}]},
        {"format": "messages"},
        "sft",
        "messages[0].content",
        "`messages[0].content` is a boolean, expected text",
    ),
    (
        "image part",
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": "x"}]},
                {"role": "assistant", "content": "a"},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages[0].content",
        "`messages[0].content` has a non-text content part (image_url); only text is supported",
    ),
    (
        "text part not str",
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": 5}]},
                {"role": "assistant", "content": "a"},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages[0].content",
        "`messages[0].content` has a non-text content part (text); only text is supported",
    ),
    (
        "dict content",
        {"messages": [{"role": "user", "content": {"a": 1}}, {"role": "assistant", "content": "a"}]},
        {"format": "messages"},
        "sft",
        "messages[0].content",
        "`messages[0].content` must be text, got dict",
    ),
    (
        "tools not json",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": "[{"},
        {"format": "messages"},
        "sft",
        "tools",
        "`tools` is not valid JSON (Expecting property name enclosed in double quotes); tools must be a JSON "
        "list of schemas",
    ),
    (
        "tools json number",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": "5"},
        {"format": "messages"},
        "sft",
        "tools",
        "`tools` must be a JSON list of tool schemas, got int",
    ),
    (
        "tools number",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": 5},
        {"format": "messages"},
        "sft",
        "tools",
        "`tools` must be a list of tool schemas or its JSON string, got int",
    ),
    (
        "function call not json",
        {
            "conversations": [
                {"from": "human", "value": "q"},
                {"from": "function_call", "value": "call("},
                {"from": "observation", "value": "r"},
                {"from": "gpt", "value": "a"},
            ]
        },
        {"format": "sharegpt"},
        "sft",
        "conversations[1].value",
        '`conversations[1].value` is a function call but not JSON; expected {"name": ..., "arguments": {...}}',
    ),
    (
        "tool_calls number",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": 5}]},
        {"format": "messages"},
        "sft",
        "messages[1].tool_calls",
        "`messages[1].tool_calls` must hold a tool call or a list of them, got int",
    ),
    (
        "tool call not object",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [5]}]},
        {"format": "messages"},
        "sft",
        "messages[1].tool_calls",
        "`messages[1].tool_calls` tool call 1 is int, expected an object",
    ),
    (
        "tool call no name",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {}}}]},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages[1].tool_calls",
        "`messages[1].tool_calls` tool call 1 has no function `name`",
    ),
    (
        "tool call args not json",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}]},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages[1].tool_calls",
        "`messages[1].tool_calls` tool call `f` has arguments that are not JSON",
    ),
    (
        "tool call args number",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": 5}}]},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages[1].tool_calls",
        "`messages[1].tool_calls` tool call `f` arguments must be an object, got int",
    ),
    (
        "message not object",
        {"messages": ["hi", {"role": "assistant", "content": "a"}]},
        {"format": "messages"},
        "sft",
        "messages[0]",
        "`messages[0]` must be an object with `role` and `content`, got str",
    ),
    (
        "no role",
        {"messages": [{"content": "q"}, {"role": "assistant", "content": "a"}]},
        {"format": "messages"},
        "sft",
        "messages[0].role",
        "`messages[0]` has no `role` key (keys: content); set tags.role_tag to the key of the role",
    ),
    (
        "no content",
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},
        {"format": "messages"},
        "sft",
        "messages[0].content",
        "`messages[0]` has no `content` key (keys: role); set tags.content_tag to the key of the text",
    ),
    (
        "unknown role",
        {"messages": [{"role": "narrator", "content": "x"}]},
        {"format": "messages"},
        "sft",
        "messages[0].role",
        "`messages[0]` has role=`narrator`, not one of the known roles (assistant, developer, function, "
        "function_call, ipython, observation, system, tool, user); map it with tags (user_tag, "
        "assistant_tag, observation_tag, function_tag, system_tag)",
    ),
    (
        "conversation text",
        {"conversations": "text"},
        {"format": "sharegpt"},
        "sft",
        "conversations",
        "`conversations` must be a list of messages, got str",
    ),
    (
        "empty conversation",
        {"conversations": []},
        {"format": "sharegpt"},
        "sft",
        "conversations",
        "`conversations` is an empty conversation",
    ),
    (
        "system later",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "system", "content": "s"},
                {"role": "assistant", "content": "a"},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages[1]",
        "`messages[1]`: a system message is only allowed as the first message",
    ),
    (
        "chosen system message",
        {"prompt": "q", "chosen": {"role": "system", "content": "s"}, "rejected": "b"},
        {"format": "preference"},
        "dpo",
        "chosen",
        "`chosen` is a system message; expected a assistant message",
    ),
    (
        "chosen starts with system",
        {
            "prompt": "q",
            "chosen": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
            "rejected": "b",
        },
        {"format": "preference"},
        "dpo",
        "chosen",
        "`chosen` starts with a system message; put it in the prompt",
    ),
    (
        "chosen number",
        {"prompt": "q", "chosen": 5, "rejected": "b"},
        {"format": "preference"},
        "dpo",
        "chosen",
        "`chosen` must be a string, a message or a list of messages, got int",
    ),
    (
        "no user",
        {"messages": [{"role": "system", "content": "s"}]},
        {"format": "messages"},
        "sft",
        "messages",
        "`messages` has no user message",
    ),
    (
        "starts with assistant",
        {
            "messages": [
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "b"},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages[0]",
        "`messages[0]`: the conversation must start with a user message (after an optional system message), "
        "not assistant",
    ),
    (
        "two users",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "user", "content": "r"},
                {"role": "assistant", "content": "a"},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages[1]",
        "`messages[1]`: two user messages in a row; roles must alternate user/assistant",
    ),
    (
        "two assistants",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "assistant", "content": "b"},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages[2]",
        "`messages[2]`: two assistant messages in a row; roles must alternate user/assistant",
    ),
    (
        "tool after user",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "tool", "content": "r"},
                {"role": "assistant", "content": "a"},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages[1]",
        "`messages[1]`: a tool result must follow an assistant (function call) message",
    ),
    (
        "ends with user",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "r"},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages",
        "`messages` must end with an assistant message for stage sft (it ends with user)",
    ),
    (
        "empty assistant",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
        {"format": "messages"},
        "sft",
        "messages[1]",
        "`messages[1]`: empty assistant message",
    ),
    (
        "chosen empty after split",
        {
            "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "rejected": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "r"},
                {"role": "assistant", "content": "b"},
            ],
        },
        {"format": "preference"},
        "dpo",
        "chosen",
        "`chosen` must end with a user (or tool) message for stage dpo: the prompt to answer",
    ),
    (
        "rejected empty after split",
        {
            "chosen": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "r"},
                {"role": "assistant", "content": "b"},
            ],
            "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        },
        {"format": "preference"},
        "dpo",
        "chosen",
        "`chosen` must end with a user (or tool) message for stage dpo: the prompt to answer",
    ),
    (
        "chosen user message",
        {"prompt": "q", "chosen": {"role": "user", "content": "x"}, "rejected": "b"},
        {"format": "preference"},
        "dpo",
        "chosen",
        "`chosen`: chosen must hold assistant messages, not user",
    ),
    (
        "rejected user message",
        {"prompt": "q", "chosen": "a", "rejected": [{"role": "user", "content": "x"}]},
        {"format": "preference"},
        "dpo",
        "rejected[0]",
        "`rejected[0]`: rejected must hold assistant messages, not user",
    ),
    (
        "empty chosen text",
        {"prompt": "q", "chosen": " ", "rejected": "b"},
        {"format": "preference"},
        "dpo",
        "chosen",
        "`chosen`: empty assistant message",
    ),
    (
        "alpaca dpo",
        {"instruction": "q", "output": "a"},
        {"format": "alpaca"},
        "dpo",
        "chosen",
        "this alpaca dataset has no chosen/rejected columns, which stage dpo needs: declare `ranking: true` "
        "and `columns: {chosen: <column>, rejected: <column>}` (LlamaFactory style), or use format "
        "`preference` with prompt/chosen/rejected",
    ),
    (
        "sharegpt dpo",
        {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
        {"format": "sharegpt"},
        "dpo",
        "chosen",
        "this sharegpt dataset has no chosen/rejected messages, which stage dpo needs: declare `ranking: "
        "true` with `columns: {chosen: <column>, rejected: <column>}` holding one assistant message each",
    ),
    (
        "messages dpo",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"format": "messages"},
        "dpo",
        "chosen",
        "this messages row has no chosen/rejected, which stage dpo needs: add `chosen` and `rejected` columns",
    ),
    (
        "identical pair",
        {"prompt": "q", "chosen": "a", "rejected": "a"},
        {"format": "preference"},
        "dpo",
        "chosen",
        "chosen and rejected are identical, so the pair teaches nothing",
    ),
    (
        "ranking no chosen",
        {"instruction": "q", "rejected": "b"},
        {"format": "alpaca", "ranking": True},
        "dpo",
        "chosen",
        "ranking row has no `chosen` (keys: instruction, rejected); map the preferred and the worse answer "
        "with columns.chosen / columns.rejected",
    ),
    (
        "ranking no rejected",
        {"instruction": "q", "chosen": "a"},
        {"format": "alpaca", "ranking": True},
        "dpo",
        "rejected",
        "ranking row has no `rejected` (keys: instruction, chosen); map the preferred and the worse answer "
        "with columns.chosen / columns.rejected",
    ),
    (
        "ranking chosen unmapped",
        {"instruction": "q", "chosen": "a", "rejected": "b"},
        {"format": "alpaca", "ranking": True, "columns": {"chosen": ""}},
        "dpo",
        "chosen",
        "ranking row has no `None` (keys: instruction, chosen, rejected); map the preferred and the worse "
        "answer with columns.chosen / columns.rejected",
    ),
    (
        "mapped pair column named",
        {"instruction": "q", "output": "a"},
        {"format": "alpaca", "columns": {"chosen": "better"}},
        "dpo",
        "better",
        "this alpaca dataset has no chosen/rejected columns, which stage dpo needs: declare `ranking: true` "
        "and `columns: {chosen: <column>, rejected: <column>}` (LlamaFactory style), or use format "
        "`preference` with prompt/chosen/rejected",
    ),
    (
        "history not json",
        {"instruction": "q", "output": "a", "history": "[["},
        {"format": "alpaca"},
        "sft",
        "history",
        "`history` must be a list of [user, assistant] pairs, got text that is not JSON",
    ),
    (
        "history dict",
        {"instruction": "q", "output": "a", "history": {"a": 1}},
        {"format": "alpaca"},
        "sft",
        "history",
        "`history` must be a list of [user, assistant] pairs, got dict",
    ),
    (
        "history pair",
        {"instruction": "q", "output": "a", "history": [["only"]]},
        {"format": "alpaca"},
        "sft",
        "history[0]",
        "`history[0]` must be a [user, assistant] pair",
    ),
    (
        "alpaca no instruction",
        {"output": "a", "x": 1},
        {"format": "alpaca"},
        "sft",
        "instruction",
        "alpaca row has no `instruction` column (keys: output, x); map the instruction column with columns.prompt",
    ),
    (
        "alpaca empty prompt",
        {"instruction": " ", "input": "", "output": "a"},
        {"format": "alpaca"},
        "sft",
        "instruction",
        "empty prompt: `instruction` is empty",
    ),
    (
        "alpaca no output",
        {"instruction": "q"},
        {"format": "alpaca"},
        "sft",
        "output",
        "alpaca row has no `output` column (keys: instruction); map the response column with columns.response",
    ),
    (
        "alpaca response unmapped",
        {"instruction": "q", "output": "a"},
        {"format": "alpaca", "columns": {"response": ""}},
        "sft",
        "output",
        "alpaca row has no `output` column (keys: instruction, output); map the response column with columns.response",
    ),
    (
        "alpaca empty output",
        {"instruction": "q", "output": " "},
        {"format": "alpaca"},
        "sft",
        "output",
        "empty response in `output`",
    ),
    (
        "sharegpt no column",
        {"dialog": []},
        {"format": "sharegpt"},
        "sft",
        "conversations",
        "sharegpt row has no `conversations` column (keys: dialog); map the conversation column with columns.messages",
    ),
    (
        "sharegpt pt",
        {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
        {"format": "sharegpt"},
        "pt",
        "conversations",
        "sharegpt rows hold conversations, not plain text; stage pt needs format `text` (a `text` column)",
    ),
    (
        "messages text sft",
        {"messages": "hi"},
        {"format": "messages"},
        "sft",
        "messages",
        "`messages` must be a list of messages ({role, content} ... ending with the assistant's), got text",
    ),
    (
        "different systems",
        {
            "chosen": [
                {"role": "system", "content": "a"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "x"},
            ],
            "rejected": [
                {"role": "system", "content": "b"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "y"},
            ],
        },
        {"format": "preference"},
        "dpo",
        "chosen",
        "chosen and rejected start with different system messages",
    ),
    (
        "identical conversations",
        {
            "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}],
            "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}],
        },
        {"format": "preference"},
        "dpo",
        "chosen",
        "chosen and rejected are identical, so the pair teaches nothing",
    ),
    (
        "no shared prompt",
        {
            "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}],
            "rejected": [{"role": "user", "content": "r"}, {"role": "assistant", "content": "y"}],
        },
        {"format": "preference"},
        "dpo",
        "chosen",
        "no `prompt` column and chosen/rejected share no leading prompt messages; add a `prompt` column",
    ),
    (
        "preference pt",
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"format": "preference"},
        "pt",
        "prompt",
        "preference rows hold conversations, not plain text; stage pt needs format `text`",
    ),
    (
        "preference no rejected",
        {"prompt": "q", "chosen": "a"},
        {"format": "preference"},
        "dpo",
        "rejected",
        "preference row has no `rejected` (keys: prompt, chosen); map it with columns.rejected",
    ),
    (
        "preference grpo no prompt",
        {"chosen": "a", "rejected": "b"},
        {"format": "preference"},
        "grpo",
        "prompt",
        "preference row has no `prompt` (keys: chosen, rejected); stage grpo needs a prompt",
    ),
    (
        "rl dpo",
        {"prompt": "q"},
        {"format": "rl"},
        "dpo",
        "chosen",
        "this rl row has no chosen/rejected, which stage dpo needs: add `chosen` and `rejected` columns",
    ),
    (
        "rl pt",
        {"prompt": "q"},
        {"format": "rl"},
        "pt",
        "prompt",
        "rl rows hold prompts, not plain text; stage pt needs format `text` (a `text` column)",
    ),
    (
        "rl no prompt",
        {"answer": "1"},
        {"format": "rl"},
        "grpo",
        "prompt",
        "rl row has no `prompt` column (keys: answer); map it with columns.prompt",
    ),
    ("rl empty prompt", {"question": " "}, {"format": "rl"}, "grpo", "question", "empty prompt in `question`"),
    (
        "rl sft no completion",
        {"prompt": "q", "response": ""},
        {"format": "rl"},
        "sft",
        "response",
        "rl row has a prompt but no `response` to learn for stage sft: add a `completion` column, or train "
        "it with stage grpo",
    ),
    (
        "alpaca pt no text",
        {"instruction": "x", "output": "y"},
        {"format": "alpaca"},
        "pt",
        "text",
        "alpaca row has no `text` column for stage pt (keys: instruction, output); name the text column with "
        "columns.prompt (LlamaFactory) or columns.text",
    ),
    ("text empty", {"text": " \n"}, {"format": "text"}, "pt", "text", "empty text in `text`"),
    (
        "text sft",
        {"text": "x"},
        {"format": "text"},
        "sft",
        "text",
        "text rows have plain text only, which suits stage pt; stage sft needs conversations (alpaca "
        "(instruction/input/output), sharegpt (conversations of from/value), messages (OpenAI role/content), "
        "preference (prompt/chosen/rejected), rl (prompt + answer, verl parquet), text (text))",
    ),
    (
        "auto unknown",
        {"a": 1, "b": 2},
        {"format": "auto"},
        "sft",
        None,
        "cannot tell the format of a row with keys [a, b]; known formats: alpaca (instruction/input/output), "
        "sharegpt (conversations of from/value), messages (OpenAI role/content), preference "
        "(prompt/chosen/rejected), rl (prompt + answer, verl parquet), text (text). Set `format:` (and "
        "`columns:` to map your column names) for this dataset",
    ),
    (
        "auto no keys",
        {},
        {"format": "auto"},
        "sft",
        None,
        "cannot tell the format of a row with keys [none]; known formats: alpaca (instruction/input/output), "
        "sharegpt (conversations of from/value), messages (OpenAI role/content), preference "
        "(prompt/chosen/rejected), rl (prompt + answer, verl parquet), text (text). Set `format:` (and "
        "`columns:` to map your column names) for this dataset",
    ),
    ("not a mapping", [1], {"format": "auto"}, "sft", None, "a row must be an object (a mapping of columns), got list"),
    (
        "lone surrogate",
        {"messages": [{"role": "user", "content": "a\ud800b"}, {"role": "assistant", "content": "c"}]},
        {"format": "messages"},
        "sft",
        "messages[0].content",
        "holds a lone surrogate \\ud800 at character 1, which is not valid Unicode",
    ),
    (
        "lone surrogate in text",
        {"text": "\udfff"},
        {"format": "text"},
        "pt",
        "text",
        "holds a lone surrogate \\udfff at character 0, which is not valid Unicode",
    ),
    (
        "bool system content",
        {
            "messages": [
                {"role": "system", "content": True},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages[0].content",
        "`messages[0].content` is a boolean, expected text",
    ),
    (
        "bool tool content",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [{"name": "f"}]},
                {"role": "tool", "content": False},
                {"role": "assistant", "content": "a"},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages[2].content",
        "`messages[2].content` is a boolean, expected text",
    ),
    (
        "bool assistant content",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": True}]},
        {"format": "messages"},
        "sft",
        "messages[1].content",
        "`messages[1].content` is a boolean, expected text",
    ),
    (
        "bool history user",
        {"instruction": "q", "output": "a", "history": [[True, "x"]]},
        {"format": "alpaca"},
        "sft",
        "history[0]",
        "`history[0]` is a boolean, expected text",
    ),
    (
        "bool history assistant",
        {"instruction": "q", "output": "a", "history": [["x", True]]},
        {"format": "alpaca"},
        "sft",
        "history[0]",
        "`history[0]` is a boolean, expected text",
    ),
    (
        "bool instruction",
        {"instruction": True, "output": "a"},
        {"format": "alpaca"},
        "sft",
        "instruction",
        "`instruction` is a boolean, expected text",
    ),
    (
        "bool output",
        {"instruction": "q", "output": True},
        {"format": "alpaca"},
        "sft",
        "output",
        "`output` is a boolean, expected text",
    ),
    (
        "bool system column",
        {"instruction": "q", "output": "a", "system": True},
        {"format": "alpaca"},
        "sft",
        "system",
        "`system` is a boolean, expected text",
    ),
    ("bool pt text", {"text": True}, {"format": "text"}, "pt", "text", "`text` is a boolean, expected text"),
    (
        "alpaca tools bad",
        {"instruction": "q", "output": "a", "tools": 5},
        {"format": "alpaca"},
        "sft",
        "tools",
        "`tools` must be a list of tool schemas or its JSON string, got int",
    ),
    (
        "tool call no name in list",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [{"name": "f"}, {"name": ""}]},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages[1].tool_calls",
        "`messages[1].tool_calls` tool call 2 has no function `name`",
    ),
    (
        "tool_calls empty dict",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": {}}]},
        {"format": "messages"},
        "sft",
        "messages[1]",
        "`messages[1]`: empty assistant message",
    ),
    (
        "chosen message no role",
        {"prompt": "q", "chosen": {"content": "x"}, "rejected": "b"},
        {"format": "preference"},
        "dpo",
        "chosen.role",
        "`chosen` has no `role` key (keys: content); set tags.role_tag to the key of the role",
    ),
    (
        "chosen list bad item",
        {"prompt": "q", "chosen": [{"role": "assistant", "content": "a"}, 5], "rejected": "b"},
        {"format": "preference"},
        "dpo",
        "chosen[1]",
        "`chosen[1]` must be an object with `role` and `content`, got int",
    ),
    (
        "rl mapping prompt bad",
        {"prompt": {"role": "user"}},
        {"format": "rl"},
        "grpo",
        "prompt.content",
        "`prompt` has no `content` key (keys: role); set tags.content_tag to the key of the text",
    ),
    (
        "rl sft completion bad",
        {"prompt": "q", "completion": 5},
        {"format": "rl"},
        "sft",
        "completion",
        "`completion` must be a string, a message or a list of messages, got int",
    ),
    (
        "rl sft completion user",
        {"prompt": "q", "completion": {"role": "user", "content": "x"}},
        {"format": "rl"},
        "sft",
        "completion",
        "`completion`: two user messages in a row; roles must alternate user/assistant",
    ),
    (
        "preference prompt list bad",
        {"prompt": [5], "chosen": "a", "rejected": "b"},
        {"format": "preference"},
        "dpo",
        "prompt[0]",
        "`prompt[0]` must be an object with `role` and `content`, got int",
    ),
    (
        "preference prompt mapping bad",
        {"prompt": {"content": "q"}, "chosen": "a", "rejected": "b"},
        {"format": "preference"},
        "dpo",
        "prompt.role",
        "`prompt` has no `role` key (keys: content); set tags.role_tag to the key of the role",
    ),
    (
        "implicit chosen bad",
        {"chosen": [5], "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]},
        {"format": "preference"},
        "dpo",
        "chosen[0]",
        "`chosen[0]` must be an object with `role` and `content`, got int",
    ),
    (
        "implicit rejected bad",
        {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}], "rejected": "x"},
        {"format": "preference"},
        "dpo",
        "rejected",
        "`rejected` must be a list of messages, got str",
    ),
    (
        "surrogate in a tool call",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": {"x": "\ud800"}}]},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages[1].tool_calls[0].function.arguments.x",
        "holds a lone surrogate \\ud800 at character 0, which is not valid Unicode",
    ),
    (
        "surrogate in extra list",
        {"prompt": "q", "tags": ["ok", "\udc00"]},
        {"format": "rl"},
        "grpo",
        "tags[1]",
        "holds a lone surrogate \\udc00 at character 0, which is not valid Unicode",
    ),
    (
        "ranking pair mapped",
        {"instruction": "q", "good": "a"},
        {"format": "alpaca", "ranking": True, "columns": {"chosen": "good", "rejected": "bad"}},
        "dpo",
        "bad",
        "ranking row has no `bad` (keys: instruction, good); map the preferred and the worse answer with "
        "columns.chosen / columns.rejected",
    ),
    (
        "pair missing rejected, chosen mapped",
        {"instruction": "q", "output": "a"},
        {"format": "alpaca", "columns": {"chosen": "better", "rejected": ""}},
        "dpo",
        "better",
        "this alpaca dataset has no chosen/rejected columns, which stage dpo needs: declare `ranking: true` "
        "and `columns: {chosen: <column>, rejected: <column>}` (LlamaFactory style), or use format "
        "`preference` with prompt/chosen/rejected",
    ),
    (
        "sharegpt rejected bad",
        {
            "conversations": [{"from": "human", "value": "q"}],
            "chosen": {"from": "gpt", "value": "a"},
            "rejected": {"from": "human", "value": "b"},
        },
        {"format": "sharegpt", "ranking": True},
        "dpo",
        "rejected",
        "`rejected`: rejected must hold assistant messages, not user",
    ),
    (
        "sharegpt unknown role tool",
        {
            "conversations": [
                {"from": "human", "value": "q"},
                {"from": "tool", "value": "r"},
                {"from": "gpt", "value": "a"},
            ]
        },
        {"format": "sharegpt"},
        "sft",
        "conversations[1].from",
        "`conversations[1]` has from=`tool`, not one of the known roles (function_call, gpt, human, "
        "observation, system); map it with tags (user_tag, assistant_tag, observation_tag, function_tag, "
        "system_tag)",
    ),
    (
        "rl dpo mapped pair missing",
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"format": "rl", "columns": {"chosen": "good"}},
        "dpo",
        "good",
        "this rl row has no chosen/rejected, which stage dpo needs: add `chosen` and `rejected` columns",
    ),
    (
        "empty dict content",
        {"messages": [{"role": "user", "content": {}}, {"role": "assistant", "content": "a"}]},
        {"format": "messages"},
        "sft",
        "messages[0].content",
        "`messages[0].content` must be text, got dict",
    ),
    (
        "tools json null",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": "null"},
        {"format": "messages"},
        "sft",
        "tools",
        "`tools` must be a JSON list of tool schemas, got null",
    ),
    (
        "grpo prompt ends with two assistants",
        {
            "prompt": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "assistant", "content": "b"},
            ]
        },
        {"format": "rl"},
        "grpo",
        "prompt",
        "`prompt` must end with a user (or tool) message for stage grpo: the prompt to answer",
    ),
    (
        "rl prompt is a system message",
        {"prompt": {"role": "system", "content": "s"}},
        {"format": "rl"},
        "grpo",
        "prompt",
        "`prompt` is a system message; expected a user message",
    ),
    (
        "text without its column",
        {"content": "x"},
        {"format": "text"},
        "pt",
        "text",
        "text row has no `text` column for stage pt (keys: content); "
        "name the text column with columns.prompt (LlamaFactory) or columns.text",
    ),
    (
        "image part with a caption",
        {
            "messages": [
                {"role": "user", "content": [{"type": "image", "text": "c"}]},
                {"role": "assistant", "content": "a"},
            ]
        },
        {"format": "messages"},
        "sft",
        "messages[0].content",
        "`messages[0].content` has a non-text content part (image); only text is supported",
    ),
    (
        "alpaca prompt column ignored",
        {"input": " ", "output": "a"},
        {"format": "alpaca", "columns": {"prompt": ""}},
        "sft",
        "input",
        "empty prompt: `input` is empty",
    ),
    (
        "alpaca prompt and query ignored",
        {"output": "a"},
        {"format": "alpaca", "columns": {"prompt": "", "query": ""}},
        "sft",
        "instruction",
        "alpaca row has no `instruction` column (keys: output); map the instruction column with columns.prompt",
    ),
    (
        "preference prompt ends with an answer",
        {
            "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "chosen": "x",
            "rejected": "y",
        },
        {"format": "preference"},
        "dpo",
        "prompt",
        "`prompt` must end with a user (or tool) message for stage dpo: the prompt to answer",
    ),
    (
        "identical pair under a mapped column",
        {"prompt": "q", "good": "a", "rejected": "a"},
        {"format": "preference", "columns": {"chosen": "good"}},
        "dpo",
        "good",
        "chosen and rejected are identical, so the pair teaches nothing",
    ),
    (
        "user message with tool calls and no content",
        {"messages": [{"role": "user", "tool_calls": [{"name": "f"}]}, {"role": "assistant", "content": "a"}]},
        {"format": "messages"},
        "sft",
        "messages[0].content",
        "`messages[0]` has no `content` key (keys: role, tool_calls); set tags.content_tag to the key of the text",
    ),
    (
        "pair of answers only",
        {
            "chosen": [{"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}],
            "rejected": [{"role": "user", "content": "q"}],
        },
        {"format": "preference"},
        "dpo",
        "chosen",
        "no `prompt` column and chosen/rejected share no leading prompt messages; add a `prompt` column",
    ),
    (
        "pair sharing only an answer",
        {
            "chosen": [{"role": "assistant", "content": "a1"}, {"role": "assistant", "content": "a2"}],
            "rejected": [{"role": "assistant", "content": "a1"}, {"role": "assistant", "content": "a3"}],
        },
        {"format": "preference"},
        "dpo",
        "chosen",
        "no `prompt` column and chosen/rejected share no leading prompt messages; add a `prompt` column",
    ),
]


@pytest.mark.parametrize(
    ("row", "spec", "stage", "field", "message"), [p[1:] for p in ERRORS], ids=[p[0] for p in ERRORS]
)
def test_every_row_error_in_full(row: Any, spec: dict[str, Any], stage: str, field: str | None, message: str) -> None:
    with pytest.raises(RowError) as error:
        convert_row(row, FormatSpec(**spec), stage)
    assert (error.value.message, error.value.field) == (message, field)
    assert str(error.value) == message


# ----------------------------------------------------------------------------------------------- conversions


TOOLS = [{"name": "add", "parameters": {"type": "object"}}]


def test_messages_with_every_column_renamed() -> None:
    spec = FormatSpec("messages", columns={"messages": "dialog", "system": "sys", "tools": "fns"})
    row = {"dialog": [user("q"), assistant("a")], "sys": "Be brief.", "fns": TOOLS}
    assert convert_row(row, spec, "sft") == {
        "messages": [system("Be brief."), user("q"), assistant("a")],
        "tools": '[{"name": "add", "parameters": {"type": "object"}}]',
    }
    grpo = convert_row({"dialog": [user("q")], "sys": "S", "fns": TOOLS, "system": "kept", "level": 3}, spec, "grpo")
    assert grpo == {"prompt": [system("S"), user("q")], "system": "kept", "level": 3}


def test_a_conversation_for_grpo_keeps_every_other_key() -> None:
    row = {"messages": [user("q")], "system": "S", "tools": TOOLS, "answer": 4, "data_source": "gsm8k"}
    assert convert_row(row, FormatSpec("messages"), "grpo") == {
        "prompt": [system("S"), user("q")],
        "answer": "4",
        "data_source": "gsm8k",
    }


def test_messages_preference_rows_calling_the_conversation_prompt() -> None:
    row = {"prompt": [user("q")], "chosen": [assistant("good")], "rejected": [assistant("bad")]}
    expected = {"prompt": [user("q")], "chosen": [assistant("good")], "rejected": [assistant("bad")]}
    assert convert_row(row, FormatSpec("messages"), "dpo") == expected
    renamed = {"question": [user("q")], "chosen": [assistant("good")], "rejected": [assistant("bad")]}
    assert convert_row(renamed, FormatSpec("messages", columns={"prompt": "question"}), "dpo") == expected


def test_messages_rows_of_two_full_conversations_share_their_prompt() -> None:
    row = {"chosen": [user("q"), assistant("good")], "rejected": [user("q"), assistant("bad")]}
    expected = {"prompt": [user("q")], "chosen": [assistant("good")], "rejected": [assistant("bad")]}
    assert convert_row(row, FormatSpec("messages"), "dpo") == expected
    renamed = {"better": row["chosen"], "worse": row["rejected"]}
    spec = FormatSpec("messages", columns={"chosen": "better", "rejected": "worse"})
    assert convert_row(renamed, spec, "dpo") == expected
    assert convert_row(renamed, FormatSpec("preference", columns={"chosen": "better", "rejected": "worse"}), "dpo") == (
        expected
    )
    with pytest.raises(RowError) as only_one:
        convert_row({"chosen": row["chosen"]}, FormatSpec("messages"), "dpo")
    assert only_one.value.field == "messages"


def test_openai_roles_in_the_wild_are_read_by_messages_not_by_sharegpt() -> None:
    row = {
        "messages": [
            {"role": "developer", "content": "S"},
            user("q"),
            {"role": "assistant", "content": "", "tool_calls": [{"name": "add", "arguments": {"a": 1}}]},
            {"role": "ipython", "content": "2", "name": "add", "tool_call_id": "c1"},
            {"role": "function", "content": "3"},
            {"role": "observation", "content": "4"},
            assistant("done"),
        ]
    }
    call = {"type": "function", "function": {"name": "add", "arguments": {"a": 1}}}
    assert convert_row(row, FormatSpec("messages"), "sft")["messages"] == [
        system("S"),
        user("q"),
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "2", "name": "add", "tool_call_id": "c1"},
        {"role": "tool", "content": "3"},
        {"role": "tool", "content": "4"},
        assistant("done"),
    ]
    # sharegpt data written with role/content keys is read with the OpenAI tags, leniently too
    openai_keys = {"conversations": [{"role": "developer", "content": "S"}, user("q"), assistant("a")]}
    assert convert_row(openai_keys, FormatSpec("sharegpt"), "sft")["messages"] == [
        system("S"),
        user("q"),
        assistant("a"),
    ]
    # messages data written with from/value keys is read with sharegpt's
    sharegpt_keys = {"messages": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert convert_row(sharegpt_keys, FormatSpec("messages"), "sft")["messages"] == [user("q"), assistant("a")]


def test_tool_calls_in_every_written_form() -> None:
    def calls(value: Any) -> list[dict[str, Any]]:
        row = {"messages": [user("q"), {"role": "assistant", "content": "", "tool_calls": value}]}
        return convert_row(row, FormatSpec("messages"), "sft")["messages"][1]["tool_calls"]

    add = {"type": "function", "function": {"name": "add", "arguments": {"a": 1}}}
    assert calls({"name": "add", "arguments": {"a": 1}}) == [add]
    assert calls('{"name": "add", "arguments": "{\\"a\\": 1}"}') == [add]
    assert calls([{"id": "c1", "type": "function", "function": {"name": "add", "arguments": {"a": 1}}}]) == [
        {**add, "id": "c1"}
    ]
    assert calls([{"name": "add", "parameters": {"a": 1}}]) == [add]  # `parameters` as some datasets name them
    assert calls([{"name": "add", "arguments": "  "}]) == [
        {"type": "function", "function": {"name": "add", "arguments": {}}}
    ]
    assert calls([{"name": "add"}]) == [{"type": "function", "function": {"name": "add", "arguments": {}}}]
    assert calls([{"name": "add", "arguments": {"a": 1}, "parameters": {"b": 2}}]) == [add]
    # sharegpt's function_call turn: the call is the content
    row = {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": '{"name": "add"}'}]}
    row["conversations"] += [{"from": "observation", "value": "2"}, {"from": "gpt", "value": "2"}]
    assert convert_row(row, FormatSpec("sharegpt"), "sft")["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {}}}],
    }


def test_content_in_parts_numbers_and_none() -> None:
    parts = [{"type": "text", "text": "a"}, {"text": "b"}]
    row = {"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": 4.5}]}
    assert convert_row(row, FormatSpec("messages"), "sft")["messages"] == [user("ab"), assistant("4.5")]
    row = {"messages": [user("q"), {"role": "assistant", "content": None, "tool_calls": [{"name": "f"}]}]}
    assert convert_row(row, FormatSpec("messages"), "sft")["messages"][1]["content"] == ""
    with pytest.raises(RowError) as mixed:
        convert_row(
            {"messages": [{"role": "user", "content": ["a", {"text": "b"}]}, assistant("x")]},
            FormatSpec("messages"),
            "sft",
        )
    assert mixed.value.message == "`messages[0].content` must be text, got list"


def test_tools_in_every_written_form() -> None:
    def tools(value: Any) -> Any:
        return convert_row(
            {"messages": [user("q"), assistant("a")], "tools": value}, FormatSpec("messages"), "sft"
        ).get("tools")

    assert tools(None) is None and tools("") is None and tools([]) is None and tools("[]") is None
    assert tools('[{"name": "f"}]') == '[{"name": "f"}]'  # JSON text kept as written
    assert tools({"name": "f"}) == '{"name": "f"}'
    assert tools([{"name": "Straße"}]) == '[{"name": "Straße"}]'  # not escaped


def test_alpaca_with_every_column_renamed() -> None:
    columns = {"prompt": "q", "query": "ctx", "response": "ans", "system": "sys", "history": "hist", "tools": "fns"}
    spec = FormatSpec("alpaca", columns=columns)
    row = {"q": "Sum", "ctx": "1 2", "ans": "3", "sys": "S", "hist": '[["hi", "hello"]]', "fns": TOOLS, "id": 7}
    assert convert_row(row, spec, "sft") == {
        "messages": [system("S"), user("hi"), assistant("hello"), user("Sum\n1 2"), assistant("3")],
        "tools": '[{"name": "add", "parameters": {"type": "object"}}]',
    }
    assert convert_row(row, spec, "grpo") == {
        "prompt": [system("S"), user("hi"), assistant("hello"), user("Sum\n1 2")],
        "answer": "3",
        "id": 7,
    }
    assert convert_row({"q": "Sum", "solution": 3, "output": "x"}, spec, "grpo") == {
        "prompt": [user("Sum")],
        "answer": "3",
        "solution": 3,
        "output": "x",
    }
    assert convert_row({"instruction": "Sum", "ground_truth": [1, "é"]}, FormatSpec("alpaca"), "grpo") == {
        "prompt": [user("Sum")],
        "answer": '[1, "é"]',
        "ground_truth": [1, "é"],
    }


def test_alpaca_preference_data() -> None:
    spec = FormatSpec("alpaca", ranking=True, columns={"chosen": "good", "rejected": "bad"})
    row = {"instruction": "q", "good": "yes", "bad": "no"}
    assert convert_row(row, spec, "dpo") == {
        "prompt": [user("q")],
        "chosen": [assistant("yes")],
        "rejected": [assistant("no")],
    }
    assert convert_row(row, spec, "sft")["messages"] == [user("q"), assistant("yes")]  # learns the chosen answer
    # chosen/rejected columns without ranking and without an output column: still a pair
    unranked = {"instruction": "q", "chosen": "yes", "rejected": "no"}
    assert convert_row(unranked, FormatSpec("alpaca"), "sft")["messages"] == [user("q"), assistant("yes")]
    # a developer message is a system message here too (OpenAI roles, read leniently)
    developer = {"instruction": "q", "chosen": [{"role": "developer", "content": "S"}, assistant("y")], "rejected": "n"}
    with pytest.raises(RowError) as error:
        convert_row(developer, FormatSpec("alpaca", ranking=True), "dpo")
    assert error.value.message == "`chosen` starts with a system message; put it in the prompt"


def test_alpaca_for_pretraining_reads_the_mapped_text_and_query() -> None:
    spec = FormatSpec("alpaca", columns={"prompt": "body", "query": "more"})
    assert convert_row({"body": "x", "more": "y"}, spec, "pt") == {"text": "x\ny"}
    assert convert_row({"body": "x", "more": ""}, spec, "pt") == {"text": "x"}
    assert convert_row({"body": "x"}, spec, "pt") == {"text": "x"}
    assert convert_row({"body": "x", "input": "y"}, FormatSpec("alpaca", columns={"text": "body"}), "pt") == {
        "text": "x"
    }
    with pytest.raises(RowError) as bad:
        convert_row({"body": "x", "more": True}, spec, "pt")
    assert bad.value.field == "more"
    assert convert_row({"text": "t"}, FormatSpec("alpaca"), "pt") == {"text": "t"}
    assert convert_row({"body": "t"}, FormatSpec("text", columns={"prompt": "body"}), "pt") == {"text": "t"}
    assert convert_row({"body": "t", "input": "u"}, FormatSpec("text", columns={"text": "body"}), "pt") == {"text": "t"}


def test_preference_with_every_column_renamed() -> None:
    spec = FormatSpec("preference", columns={"prompt": "q", "chosen": "good", "rejected": "bad", "system": "sys"})
    row = {"q": "Q", "good": "yes", "bad": "no", "sys": "S"}
    assert convert_row(row, spec, "dpo") == {
        "prompt": [system("S"), user("Q")],
        "chosen": [assistant("yes")],
        "rejected": [assistant("no")],
    }
    assert convert_row({**row, "answer": "yes", "level": 1}, spec, "grpo") == {
        "prompt": [system("S"), user("Q")],
        "answer": "yes",
        "level": 1,
    }
    prompt_list = {"q": [system("P"), user("Q")], "good": "yes", "bad": "no", "sys": "S"}
    assert convert_row(prompt_list, spec, "dpo")["prompt"] == [system("P"), user("Q")]
    no_system = {"q": [user("Q")], "good": "yes", "bad": "no", "sys": "S"}
    assert convert_row(no_system, spec, "dpo")["prompt"] == [system("S"), user("Q")]


def test_preference_in_sharegpt_tags_is_told_from_its_lists() -> None:
    def sg(*pairs: tuple[str, str]) -> list[dict[str, str]]:
        return [{"from": f, "value": v} for f, v in pairs]

    implicit = {"chosen": sg(("human", "q"), ("gpt", "yes")), "rejected": sg(("human", "q"), ("gpt", "no"))}
    expected = {"prompt": [user("q")], "chosen": [assistant("yes")], "rejected": [assistant("no")]}
    assert convert_row(implicit, FormatSpec("preference"), "dpo") == expected
    prompt_list = {"prompt": sg(("human", "q")), "chosen": "yes", "rejected": "no"}
    assert convert_row(prompt_list, FormatSpec("preference"), "dpo") == expected


def test_implicit_prompts_keep_the_system_and_never_split_assistant_runs() -> None:
    row = {
        "chosen": [system("S"), user("q"), assistant("a1"), user("r"), assistant("yes")],
        "rejected": [system("S"), user("q"), assistant("a1"), user("r"), assistant("no")],
    }
    assert convert_row(row, FormatSpec("preference", system="default"), "dpo") == {
        "prompt": [system("S"), user("q"), assistant("a1"), user("r")],
        "chosen": [assistant("yes")],
        "rejected": [assistant("no")],
    }
    assert convert_row({**row, "system": "col"}, FormatSpec("preference"), "dpo")["prompt"][0] == system("S")
    run = {
        "chosen": [user("q"), assistant("a1"), assistant("a2"), assistant("yes")],
        "rejected": [user("q"), assistant("a1"), assistant("a2"), assistant("no")],
    }
    assert convert_row(run, FormatSpec("preference"), "dpo") == {
        "prompt": [user("q")],
        "chosen": [assistant("a1"), assistant("a2"), assistant("yes")],
        "rejected": [assistant("a1"), assistant("a2"), assistant("no")],
    }
    no_system = {"chosen": [user("q"), assistant("yes")], "rejected": [user("q"), assistant("no")], "system": "col"}
    assert convert_row(no_system, FormatSpec("preference"), "dpo")["prompt"] == [system("col"), user("q")]
    longer = {"chosen": [user("q"), assistant("yes")], "rejected": [user("q"), assistant("yes"), assistant("more")]}
    assert convert_row(longer, FormatSpec("preference"), "dpo") == {
        "prompt": [user("q")],
        "chosen": [assistant("yes")],
        "rejected": [assistant("yes"), assistant("more")],
    }


def test_rl_prompts_in_every_form() -> None:
    spec = FormatSpec("rl")
    assert convert_row({"question": "q", "solution": "4"}, spec, "grpo") == {
        "prompt": [user("q")],
        "solution": "4",
        "answer": "4",
    }
    assert convert_row({"problem": user("q")}, spec, "grpo") == {"prompt": [user("q")]}
    assert convert_row({"prompt": [{"from": "human", "value": "q"}]}, spec, "grpo") == {"prompt": [user("q")]}
    assert convert_row({"prompt": [system("S"), user("q")], "system": "ignored"}, spec, "grpo") == {
        "prompt": [system("S"), user("q")],
        "system": "ignored",
    }
    assert convert_row({"prompt": "q", "system": "S"}, spec, "grpo") == {"prompt": [system("S"), user("q")]}
    assert convert_row({"prompt": "q", "system": ""}, spec, "grpo") == {"prompt": [user("q")]}
    assert convert_row({"prompt": "q", "system": 3}, spec, "grpo") == {"prompt": [user("q")], "system": 3}
    renamed = FormatSpec("rl", columns={"prompt": "ask", "system": "sys", "data_source": "origin", "answer": "gold"})
    assert convert_row({"ask": "q", "sys": "S", "origin": "gsm8k", "gold": 4, "answer": "x"}, renamed, "grpo") == {
        "prompt": [system("S"), user("q")],
        "data_source": "gsm8k",
        "gold": 4,
        "answer": "4",
    }
    same = FormatSpec("rl", columns={"data_source": "data_source"})
    assert convert_row({"prompt": "q", "data_source": "d"}, same, "grpo") == {"prompt": [user("q")], "data_source": "d"}
    assert convert_row({"prompt": "q", "reward_model": {"ground_truth": 7}}, spec, "grpo")["answer"] == "7"
    assert "answer" not in convert_row({"prompt": "q", "reward_model": {"style": "rule"}}, spec, "grpo")
    assert "answer" not in convert_row({"prompt": "q", "answer": None}, spec, "grpo")
    # an answer column mapped elsewhere that is empty leaves the row's own `answer` key as it is
    gold = FormatSpec("rl", columns={"answer": "gold"})
    assert convert_row({"prompt": "q", "gold": None, "answer": "x"}, gold, "grpo") == {
        "prompt": [user("q")],
        "gold": None,
        "answer": "x",
    }


def test_rl_rows_for_sft_and_dpo() -> None:
    spec = FormatSpec("rl")
    assert convert_row({"prompt": "q", "response": "a"}, spec, "sft") == {"messages": [user("q"), assistant("a")]}
    renamed = FormatSpec("rl", columns={"completion": "out"})
    assert convert_row({"prompt": "q", "out": assistant("a"), "response": "x"}, renamed, "sft") == {
        "messages": [user("q"), assistant("a")]
    }
    pair = {"prompt": "q", "chosen": "yes", "rejected": "no"}
    expected = {"prompt": [user("q")], "chosen": [assistant("yes")], "rejected": [assistant("no")]}
    assert convert_row(pair, spec, "dpo") == expected
    mapped = FormatSpec("rl", columns={"chosen": "good", "rejected": "bad"})
    assert convert_row({"prompt": "q", "good": "yes", "bad": "no"}, mapped, "dpo") == expected
    with pytest.raises(RowError) as only_chosen:
        convert_row({"prompt": "q", "chosen": "yes"}, spec, "dpo")
    assert only_chosen.value.field == "chosen"
    with pytest.raises(RowError) as only_rejected:
        convert_row({"prompt": "q", "rejected": "no"}, spec, "dpo")
    assert only_rejected.value.field == "chosen"


def test_grpo_takes_the_answer_from_a_final_assistant_turn() -> None:
    spec = FormatSpec("messages")
    assert convert_row({"messages": [user("q"), assistant("4")]}, spec, "grpo") == {
        "prompt": [user("q")],
        "answer": "4",
    }
    assert convert_row({"messages": [user("q"), assistant("4")], "answer": "5"}, spec, "grpo")["answer"] == "5"
    assert convert_row({"messages": [user("q"), assistant(" ")]}, spec, "grpo") == {"prompt": [user("q")]}
    # a prompt column named `prompt` among the extra keys never replaces the prompt
    assert convert_row({"question": "q", "prompt": "p"}, FormatSpec("rl", columns={"prompt": "question"}), "grpo") == {
        "prompt": [user("q")]
    }


def test_sft_of_a_sharegpt_pair_learns_the_chosen_answer() -> None:
    row = {
        "conversations": [{"from": "human", "value": "q"}],
        "chosen": {"from": "gpt", "value": "yes"},
        "rejected": {"from": "gpt", "value": "no"},
    }
    spec = FormatSpec("sharegpt", ranking=True)
    assert convert_row(row, spec, "sft") == {"messages": [user("q"), assistant("yes")]}
    full = {**row, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "own"}]}
    assert convert_row(full, spec, "sft") == {"messages": [user("q"), assistant("own")]}


def test_auto_detection_follows_the_mapped_columns() -> None:
    assert convert_row({"body": "x"}, FormatSpec("auto", columns={"text": "body"}), "pt") == {"text": "x"}
    assert convert_row({"text": "x", "instruction": "i"}, FormatSpec("auto"), "pt") == {"text": "x"}
    row = {"instruction": "q", "output": "a", "text": "t"}
    assert convert_row(row, FormatSpec("auto"), "sft") == {"messages": [user("q"), assistant("a")]}
    assert convert_row({"chosen": "a", "rejected": "b", "prompt": "q"}, FormatSpec("auto"), "dpo")["chosen"] == [
        assistant("a")
    ]
    assert convert_row({"prompt": "q", "chosen": "a"}, FormatSpec("auto"), "grpo") == {
        "prompt": [user("q")],
        "chosen": "a",
    }
    assert convert_row({"text": "t"}, FormatSpec("auto"), "pt") == {"text": "t"}
    assert convert_row({"text": "t", "messages": []}, FormatSpec("auto"), "pt") == {"text": "t"}  # pt reads text first
    with pytest.raises(RowError) as text_for_sft:
        convert_row({"text": "t"}, FormatSpec("auto"), "sft")
    assert text_for_sft.value.message.startswith("text rows have plain text only")
    ignored = FormatSpec("auto", columns={"text": ""})
    assert convert_row({"text": "t"}, ignored, "pt") == {"text": "t"}
    with pytest.raises(RowError):
        convert_row({"body": "t"}, FormatSpec("auto", columns={"prompt": "missing"}), "sft")


def test_format_names_and_tags_are_checked_when_the_spec_is_made() -> None:
    with pytest.raises(ValueError) as close:
        FormatSpec("sharegtp")
    assert str(close.value) == (
        "unknown data format `sharegtp` (did you mean `sharegpt`?); known: auto, alpaca, sharegpt, messages, "
        "preference, rl, text"
    )
    with pytest.raises(ValueError) as far:
        FormatSpec("xyz")
    assert str(far.value) == "unknown data format `xyz`; known: auto, alpaca, sharegpt, messages, preference, rl, text"
    with pytest.raises(ValueError) as tags:
        FormatSpec("sharegpt", tags={"role_tagg": "r", "user": "u"})
    assert str(tags.value) == (
        "unknown sharegpt tag(s) ['role_tagg', 'user']; known: role_tag, content_tag, user_tag, assistant_tag, "
        "observation_tag, function_tag, system_tag"
    )
    with pytest.raises(ValueError) as stage:
        convert_row({"text": "x"}, FormatSpec("text"), "ppo")
    assert str(stage.value) == "unknown stage `ppo`; known: pt, sft, dpo, grpo"


def test_custom_tags_replace_the_roles_they_name() -> None:
    spec = FormatSpec("sharegpt", tags={"user_tag": "me", "assistant_tag": "bot", "system_tag": ""})
    row = {"conversations": [{"from": "me", "value": "q"}, {"from": "bot", "value": "a"}]}
    assert convert_row(row, spec, "sft") == {"messages": [user("q"), assistant("a")]}
    with pytest.raises(RowError) as unknown:
        convert_row({"conversations": [{"from": "system", "value": "s"}, *row["conversations"]]}, spec, "sft")
    assert "not one of the known roles (bot, function_call, me, observation)" in unknown.value.message


def test_alpaca_rows_with_an_output_and_a_pair() -> None:
    row = {"instruction": "q", "output": "own", "chosen": "yes", "rejected": "no"}
    assert convert_row(row, FormatSpec("alpaca"), "sft") == {"messages": [user("q"), assistant("own")]}
    assert convert_row(row, FormatSpec("alpaca"), "dpo") == {
        "prompt": [user("q")],
        "chosen": [assistant("yes")],
        "rejected": [assistant("no")],
    }


def test_preference_rows_at_their_edges() -> None:
    assert convert_row({"prompt": "q", "answer": "4"}, FormatSpec("preference"), "grpo") == {
        "prompt": [user("q")],
        "answer": "4",
    }
    empty_prompt = {"prompt": "", "chosen": [user("q"), assistant("yes")], "rejected": [user("q"), assistant("no")]}
    assert convert_row(empty_prompt, FormatSpec("preference"), "dpo") == {
        "prompt": [user("q")],
        "chosen": [assistant("yes")],
        "rejected": [assistant("no")],
    }


def test_text_rows_never_append_a_query() -> None:
    spec = FormatSpec("text", columns={"text": "body", "query": "more"})
    assert convert_row({"body": "x", "more": "y"}, spec, "pt") == {"text": "x"}


def test_rl_rows_at_their_edges() -> None:
    origin = FormatSpec("rl", columns={"data_source": "origin"})
    assert convert_row({"prompt": "q"}, origin, "grpo") == {"prompt": [user("q")]}  # the mapped column may be absent
    developer = {"prompt": [{"role": "developer", "content": "S"}, user("q")]}
    assert convert_row(developer, FormatSpec("rl"), "grpo") == {"prompt": [system("S"), user("q")]}
    dated = convert_row({"prompt": "q", "answer": datetime.date(2024, 1, 2)}, FormatSpec("rl"), "grpo")
    assert dated["answer"] == "2024-01-02"  # not JSON: written as text


def test_messages_in_sharegpt_keys_accept_a_tool_role() -> None:
    row = {
        "messages": [
            {"from": "human", "value": "q"},
            {"from": "function_call", "value": '{"name": "f"}'},
            {"from": "tool", "value": "r"},
            {"from": "gpt", "value": "a"},
        ]
    }
    assert convert_row(row, FormatSpec("messages"), "sft")["messages"][2:] == [
        {"role": "tool", "content": "r"},
        assistant("a"),
    ]


def test_messages_rows_whose_conversation_is_called_prompt() -> None:
    assert convert_row({"prompt": [user("q"), assistant("a")]}, FormatSpec("messages"), "sft") == {
        "messages": [user("q"), assistant("a")]
    }
    renamed = FormatSpec("messages", columns={"prompt": "question"})
    assert convert_row({"question": [user("q")]}, renamed, "grpo") == {"prompt": [user("q")]}
    both = {"messages": [user("q"), assistant("a")], "prompt": [user("other"), assistant("x")]}
    assert convert_row(both, FormatSpec("messages"), "sft") == {"messages": [user("q"), assistant("a")]}
    calls = {"messages": [user("q"), {"role": "assistant", "tool_calls": [{"name": "f"}]}]}  # no content key
    assert convert_row(calls, FormatSpec("messages"), "sft")["messages"][1]["content"] == ""


def test_preference_rows_for_grpo_and_implicit_prompts_of_several_turns() -> None:
    row = {
        "prompt": [{"role": "developer", "content": "S"}, user("q")],
        "solution": "4",
        "system": "col",
        "chosen": "a",
    }
    assert convert_row(row, FormatSpec("preference"), "grpo") == {
        "prompt": [system("S"), user("q")],
        "answer": "4",
        "solution": "4",
    }
    turns = [user("q"), assistant("a"), user("r"), assistant("a1"), assistant("a2")]
    pair = {"chosen": [*turns, assistant("yes")], "rejected": [*turns, assistant("no")]}
    assert convert_row(pair, FormatSpec("preference"), "dpo") == {
        "prompt": [user("q"), assistant("a"), user("r")],
        "chosen": [assistant("a1"), assistant("a2"), assistant("yes")],
        "rejected": [assistant("a1"), assistant("a2"), assistant("no")],
    }


def test_an_empty_answer_column_falls_through_to_the_next() -> None:
    assert convert_row({"instruction": "q", "output": "", "answer": "4"}, FormatSpec("alpaca"), "grpo") == {
        "prompt": [user("q")],
        "answer": "4",
    }
