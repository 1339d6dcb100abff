"""Every RowError of factory_cli/data/formats.py in full: the message a user reads (what is wrong, where, the fix) and
the field it names, one row per way a row can be wrong; then the conversions at their edges (tags, tool calls, content
parts, columns, answers, extra keys)."""

from __future__ import annotations

from typing import Any

import pytest

from factory_cli.data.formats import FormatSpec, RowError, convert_row

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
]


@pytest.mark.parametrize(
    ("row", "spec", "stage", "field", "message"), [p[1:] for p in ERRORS], ids=[p[0] for p in ERRORS]
)
def test_every_row_error_in_full(row: Any, spec: dict[str, Any], stage: str, field: str | None, message: str) -> None:
    with pytest.raises(RowError) as error:
        convert_row(row, FormatSpec(**spec), stage)
    assert (error.value.message, error.value.field) == (message, field)
    assert str(error.value) == message
