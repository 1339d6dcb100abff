"""Rows in any accepted layout -> the canonical row of a stage (docs/architecture.md §8).

Canonical rows:  pt   {"text"}
                 sft  {"messages": [{"role", "content", "tool_calls"?}...], "tools"?: JSON string}
                 dpo  {"prompt": messages, "chosen": messages, "rejected": messages}
                 grpo {"prompt": messages, "answer"?: str, "data_source"?: str, ...every other key of the row}

Roles are system, user, assistant and tool (an observation / function result); an assistant message may
carry OpenAI-style `tool_calls`. Layouts follow LlamaFactory's dataset_info.json conventions: `columns`
maps our name to the file's column, `tags` names the keys and role values of sharegpt messages, and
`ranking` marks alpaca/sharegpt preference data. A column mapped to "" is ignored. Pure Python: no torch.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("alpaca", "sharegpt", "messages", "preference", "rl", "text")
STAGES = ("pt", "sft", "dpo", "grpo")

# LlamaFactory's column defaults (plus system/history/tools/chosen/rejected read when present).
ALPACA_COLUMNS: Mapping[str, str] = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "system": "system",
    "history": "history",
    "tools": "tools",
    "chosen": "chosen",
    "rejected": "rejected",
}
SHAREGPT_COLUMNS: Mapping[str, str] = {
    "messages": "conversations",
    "system": "system",
    "tools": "tools",
    "chosen": "chosen",
    "rejected": "rejected",
}
SHAREGPT_TAGS: Mapping[str, str] = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
# LlamaFactory's "openai" formatting: sharegpt with these tags.
OPENAI_TAGS: Mapping[str, str] = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "observation_tag": "tool",
    "function_tag": "function_call",
    "system_tag": "system",
}
ANSWER_KEYS = ("answer", "solution", "ground_truth")
_PROMPT_KEYS = ("prompt", "question", "problem")
_COMPLETION_KEYS = ("completion", "response")

_FORMAT_HELP = (
    "alpaca (instruction/input/output), sharegpt (conversations of from/value), messages (OpenAI role/content), "
    "preference (prompt/chosen/rejected), rl (prompt + answer, verl parquet), text (text)"
)


class RowError(ValueError):
    """A row that cannot be converted; `field` names the offending column or message (e.g. `conversations[2].from`)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class FormatSpec:
    """How to read one dataset's rows: layout, LlamaFactory-style column/tag mapping, ranking, default system."""

    format: str
    columns: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    ranking: bool = False
    system: str | None = None

    def __post_init__(self) -> None:
        if self.format != "auto" and self.format not in FORMATS:
            close = difflib.get_close_matches(self.format, FORMATS, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise ValueError(f"unknown data format `{self.format}`{hint}; known: auto, {', '.join(FORMATS)}")
        unknown = sorted(set(self.tags) - set(SHAREGPT_TAGS))
        if unknown:
            raise ValueError(f"unknown sharegpt tag(s) {unknown}; known: {', '.join(SHAREGPT_TAGS)}")


Turn = tuple[dict[str, Any], str]  # a canonical message and where it came from in the row


@dataclass(frozen=True)
class _Tags:
    role: str
    content: str
    user: frozenset[str]
    assistant: frozenset[str]
    observation: frozenset[str]
    function: frozenset[str]
    system: frozenset[str]

    @classmethod
    def build(cls, tags: Mapping[str, str], *, lenient_roles: bool = False) -> _Tags:
        def roles(name: str) -> frozenset[str]:
            return frozenset({tags[name]} if tags.get(name) else ())

        built = cls(
            role=tags["role_tag"],
            content=tags["content_tag"],
            user=roles("user_tag"),
            assistant=roles("assistant_tag"),
            observation=roles("observation_tag"),
            function=roles("function_tag"),
            system=roles("system_tag"),
        )
        if lenient_roles:  # OpenAI-style rows in the wild also say function/ipython for tool results
            built = cls(
                built.role,
                built.content,
                built.user,
                built.assistant,
                built.observation | {"tool", "function", "ipython", "observation"},
                built.function,
                built.system | {"system", "developer"},
            )
        return built

    def known(self) -> list[str]:
        return sorted(self.user | self.assistant | self.observation | self.function | self.system)


@dataclass
class _Parsed:
    """A row read into messages, before the stage decides what it needs."""

    where: str  # the column holding the conversation / prompt, for errors about it as a whole
    turns: list[Turn] = field(default_factory=list)
    system: str | None = None
    tools: str | None = None
    chosen: list[Turn] | None = None
    rejected: list[Turn] | None = None
    answer: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    pair_hint: str = ""
    pair_field: str = "chosen"


# ----------------------------------------------------------------------------------------------- helpers


def _column(spec: FormatSpec, name: str, default: str | None) -> str | None:
    """The file's column for our `name`; None when mapped to "" (ignored)."""
    value = spec.columns.get(name, default)
    return value or None


def _keys(row: Mapping[str, Any]) -> str:
    return ", ".join(str(k) for k in row) or "none"


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _text(value: Any, where: str) -> str:
    """Message content as a string: str as is, numbers stringified, OpenAI text parts joined."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise RowError(f"`{where}` is a boolean, expected text", where)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(p, Mapping) for p in value):
        texts = []
        for part in value:
            if part.get("type", "text") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type")
                raise RowError(f"`{where}` has a non-text content part ({kind}); only text is supported", where)
            texts.append(part["text"])
        return "".join(texts)
    raise RowError(f"`{where}` must be text, got {_kind(value)}", where)


def _tools(value: Any, where: str) -> str | None:
    """Tool schemas as a JSON string (the canonical form), or None when absent."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            message = f"`{where}` is not valid JSON ({exc.msg}); tools must be a JSON list of schemas"
            raise RowError(message, where) from None
        if not isinstance(parsed, list | dict):
            raise RowError(f"`{where}` must be a JSON list of tool schemas, got {_kind(parsed)}", where)
        return value if parsed else None
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    raise RowError(f"`{where}` must be a list of tool schemas or its JSON string, got {_kind(value)}", where)


def _tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    """OpenAI-style tool calls ({type, function: {name, arguments: dict}}) from a list, a dict or JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowError(
                f'`{where}` is a function call but not JSON; expected {{"name": ..., "arguments": {{...}}}}', where
            ) from None
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RowError(f"`{where}` must hold a tool call or a list of them, got {_kind(value)}", where)
    calls = []
    for i, call in enumerate(value):
        if not isinstance(call, Mapping):
            raise RowError(f"`{where}` tool call {i + 1} is {_kind(call)}, expected an object", where)
        fn = call["function"] if isinstance(call.get("function"), Mapping) else call
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise RowError(f"`{where}` tool call {i + 1} has no function `name`", where)
        args = fn.get("arguments", fn.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                raise RowError(f"`{where}` tool call `{name}` has arguments that are not JSON", where) from None
        if not isinstance(args, Mapping):
            raise RowError(f"`{where}` tool call `{name}` arguments must be an object, got {_kind(args)}", where)
        item: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": dict(args)}}
        if call.get("id"):
            item["id"] = call["id"]
        calls.append(item)
    return calls


def _detect_tags(raw: Any, spec: FormatSpec, base: Mapping[str, str]) -> Mapping[str, str]:
    """`base` tags overridden by the spec; with no tags given, the other common scheme when the data uses it."""
    if spec.tags:
        return {**base, **spec.tags}
    first = raw[0] if isinstance(raw, list) and raw else None
    if isinstance(first, Mapping) and base["role_tag"] not in first:
        if "role" in first:
            return OPENAI_TAGS
        if "from" in first:
            return SHAREGPT_TAGS
    return base


def _message(raw: Any, tags: _Tags, where: str) -> dict[str, Any]:
    """One message in the file's tag scheme -> a canonical message (role system/user/assistant/tool)."""
    if not isinstance(raw, Mapping):
        raise RowError(f"`{where}` must be an object with `{tags.role}` and `{tags.content}`, got {_kind(raw)}", where)
    if tags.role not in raw:
        raise RowError(
            f"`{where}` has no `{tags.role}` key (keys: {_keys(raw)}); set tags.role_tag to the key of the role",
            f"{where}.{tags.role}",
        )
    tag = raw[tags.role]
    content_where = f"{where}.{tags.content}"
    has_calls = bool(raw.get("tool_calls"))
    if tags.content not in raw and not (tag in tags.assistant and has_calls):
        raise RowError(
            f"`{where}` has no `{tags.content}` key (keys: {_keys(raw)}); set tags.content_tag to the key of the text",
            content_where,
        )
    content = raw.get(tags.content)
    if tag in tags.system:
        return {"role": "system", "content": _text(content, content_where)}
    if tag in tags.user:
        return {"role": "user", "content": _text(content, content_where)}
    if tag in tags.observation:
        msg: dict[str, Any] = {"role": "tool", "content": _text(content, content_where)}
        for key in ("name", "tool_call_id"):
            if raw.get(key):
                msg[key] = raw[key]
        return msg
    if tag in tags.assistant:
        reply: dict[str, Any] = {"role": "assistant", "content": _text(content, content_where)}
        if has_calls:
            reply["tool_calls"] = _tool_calls(raw["tool_calls"], f"{where}.tool_calls")
        return reply
    if tag in tags.function:
        return {"role": "assistant", "content": "", "tool_calls": _tool_calls(content, content_where)}
    raise RowError(
        f"`{where}` has {tags.role}=`{tag}`, not one of the known roles ({', '.join(tags.known())}); "
        "map it with tags (user_tag, assistant_tag, observation_tag, function_tag, system_tag)",
        f"{where}.{tags.role}",
    )


def _align(raw: Any, tags: _Tags, where: str) -> tuple[str | None, list[Turn]]:
    """A message list -> (system prompt from a leading system message, the other turns)."""
    if not isinstance(raw, list):
        raise RowError(f"`{where}` must be a list of messages, got {_kind(raw)}", where)
    if not raw:
        raise RowError(f"`{where}` is an empty conversation", where)
    system = None
    turns: list[Turn] = []
    for i, item in enumerate(raw):
        item_where = f"{where}[{i}]"
        msg = _message(item, tags, item_where)
        if msg["role"] == "system":
            if i != 0:
                raise RowError(f"`{item_where}`: a system message is only allowed as the first message", item_where)
            system = msg["content"]
            continue
        turns.append((msg, item_where))
    return system, turns


def _side(value: Any, tags: _Tags, where: str, role: str) -> list[Turn]:
    """A prompt / chosen / rejected value: a string (one `role` message), one message, or a message list."""
    if isinstance(value, str):
        return [({"role": role, "content": value}, where)]
    if isinstance(value, Mapping):
        msg = _message(value, tags, where)
        if msg["role"] == "system":
            raise RowError(f"`{where}` is a system message; expected a {role} message", where)
        return [(msg, where)]
    if isinstance(value, list):
        system, turns = _align(value, tags, where)
        if system is not None:
            raise RowError(f"`{where}` starts with a system message; put it in the prompt", where)
        return turns
    raise RowError(f"`{where}` must be a string, a message or a list of messages, got {_kind(value)}", where)


def _answer_text(value: Any) -> str | None:
    """A reference answer as a string (numbers as written, structures as JSON); None when absent."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return str(value)


def _strip(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    return [dict(msg) for msg, _ in turns]


def _check_turns(turns: Sequence[Turn], where: str, end: str, stage: str) -> None:
    """Roles alternate like LlamaFactory demands: user first, user/tool then assistant; `end` is assistant|prompt."""
    if not turns:
        raise RowError(f"`{where}` has no user message", where)
    prev = ""
    for i, (msg, msg_where) in enumerate(turns):
        role = msg["role"]
        if i == 0 and role != "user":
            raise RowError(
                f"`{msg_where}`: the conversation must start with a user message (after an optional system "
                f"message), not {role}",
                msg_where,
            )
        if role == prev and role in ("user", "assistant"):
            message = f"`{msg_where}`: two {role} messages in a row; roles must alternate user/assistant"
            raise RowError(message, msg_where)
        if role == "tool" and prev not in ("assistant", "tool"):
            raise RowError(f"`{msg_where}`: a tool result must follow an assistant (function call) message", msg_where)
        prev = role
    if end == "assistant" and prev != "assistant":
        raise RowError(f"`{where}` must end with an assistant message for stage {stage} (it ends with {prev})", where)
    if end == "prompt" and prev == "assistant":
        raise RowError(
            f"`{where}` must end with a user (or tool) message for stage {stage}: the prompt to answer", where
        )


def _check_nonempty_assistant(turns: Sequence[Turn]) -> None:
    for msg, where in turns:
        if msg["role"] == "assistant" and not msg["content"].strip() and not msg.get("tool_calls"):
            raise RowError(f"`{where}`: empty assistant message", where)


def _check_response(turns: Sequence[Turn], where: str, name: str) -> None:
    if not turns:
        raise RowError(f"`{where}`: {name} is empty", where)
    for msg, msg_where in turns:
        if msg["role"] != "assistant":
            raise RowError(f"`{msg_where}`: {name} must hold assistant messages, not {msg['role']}", msg_where)
    _check_nonempty_assistant(turns)


# ----------------------------------------------------------------------------------------------- stages


def _head(parsed: _Parsed, spec: FormatSpec) -> list[dict[str, Any]]:
    system = parsed.system if parsed.system else spec.system
    return [{"role": "system", "content": system}] if system else []


def _emit(parsed: _Parsed, spec: FormatSpec, stage: str, fmt: str) -> dict[str, Any]:
    """The canonical row of `stage` from a parsed conversation; raises RowError for what the stage lacks."""
    head = _head(parsed, spec)
    if stage == "sft":
        turns = list(parsed.turns)
        if parsed.chosen is not None and (not turns or turns[-1][0]["role"] != "assistant"):
            turns += parsed.chosen  # preference data used for sft: learn the chosen answer
        _check_turns(turns, parsed.where, "assistant", stage)
        _check_nonempty_assistant(turns)
        row: dict[str, Any] = {"messages": head + _strip(turns)}
        if parsed.tools:
            row["tools"] = parsed.tools
        return row
    if stage == "dpo":
        if parsed.chosen is None or parsed.rejected is None:
            raise RowError(parsed.pair_hint, parsed.pair_field)
        _check_turns(parsed.turns, parsed.where, "prompt", stage)
        _check_response(parsed.chosen, parsed.chosen[0][1] if parsed.chosen else parsed.pair_field, "chosen")
        _check_response(parsed.rejected, parsed.rejected[0][1] if parsed.rejected else "rejected", "rejected")
        chosen, rejected = _strip(parsed.chosen), _strip(parsed.rejected)
        if chosen == rejected:
            raise RowError("chosen and rejected are identical, so the pair teaches nothing", parsed.pair_field)
        return {"prompt": head + _strip(parsed.turns), "chosen": chosen, "rejected": rejected}
    if stage == "grpo":
        turns, answer = list(parsed.turns), parsed.answer
        if turns and turns[-1][0]["role"] == "assistant":
            last = turns.pop()[0]
            if answer is None and last["content"].strip():
                answer = last["content"]
        _check_turns(turns, parsed.where, "prompt", stage)
        row = {"prompt": head + _strip(turns), **{k: v for k, v in parsed.extra.items() if k != "prompt"}}
        if answer is not None:
            row["answer"] = answer
        elif row.get("answer") is None:
            row.pop("answer", None)
        return row
    raise RowError(
        f"{fmt} rows hold conversations, not plain text; stage pt needs format `text` (a `text` column) "
        "or alpaca with columns.prompt naming the text column",
        parsed.where,
    )


# ----------------------------------------------------------------------------------------------- formats


def _pair_hint(fmt: str) -> str:
    if fmt == "alpaca":
        return (
            "this alpaca dataset has no chosen/rejected columns, which stage dpo needs: declare `ranking: true` "
            "and `columns: {chosen: <column>, rejected: <column>}` (LlamaFactory style), or use format `preference` "
            "with prompt/chosen/rejected"
        )
    if fmt == "sharegpt":
        return (
            "this sharegpt dataset has no chosen/rejected messages, which stage dpo needs: declare `ranking: true` "
            "with `columns: {chosen: <column>, rejected: <column>}` holding one assistant message each"
        )
    return f"this {fmt} row has no chosen/rejected, which stage dpo needs: add `chosen` and `rejected` columns"


def _row_system(row: Mapping[str, Any], spec: FormatSpec) -> str | None:
    col = _column(spec, "system", "system")
    if col and col in row:
        return _text(row[col], col) or None
    return None


def _pair(row: Mapping[str, Any], spec: FormatSpec, tags: _Tags, parsed: _Parsed) -> None:
    ccol, rcol = _column(spec, "chosen", "chosen"), _column(spec, "rejected", "rejected")
    if ccol and rcol and row.get(ccol) is not None and row.get(rcol) is not None:
        parsed.chosen = _side(row[ccol], tags, ccol, "assistant")
        parsed.rejected = _side(row[rcol], tags, rcol, "assistant")
    elif spec.ranking:
        missing = ccol if not ccol or row.get(ccol) is None else rcol
        parsed.pair_hint = (
            f"ranking row has no `{missing}` (keys: {_keys(row)}); map the preferred and the worse answer "
            "with columns.chosen / columns.rejected"
        )
        parsed.pair_field = missing or "chosen"
        return
    if ccol:
        parsed.pair_field = ccol


def _convert_alpaca(row: Mapping[str, Any], spec: FormatSpec, stage: str) -> dict[str, Any]:
    def col(name: str) -> str | None:
        return _column(spec, name, ALPACA_COLUMNS[name])

    pcol, qcol, rcol, hcol = col("prompt"), col("query"), col("response"), col("history")
    if stage == "pt":
        return _convert_pt_column(row, spec, "alpaca", spec.columns.get("prompt") or spec.columns.get("text") or "text")
    where = pcol or qcol or "instruction"
    parsed = _Parsed(where=where, pair_hint=_pair_hint("alpaca"))
    parsed.system = _row_system(row, spec)
    tcol = col("tools")
    if tcol and tcol in row:
        parsed.tools = _tools(row[tcol], tcol)

    history = row.get(hcol) if hcol else None
    if isinstance(history, str) and history.strip():  # a CSV cell
        try:
            history = json.loads(history)
        except json.JSONDecodeError:
            message = f"`{hcol}` must be a list of [user, assistant] pairs, got text that is not JSON"
            raise RowError(message, hcol) from None
    if history:
        if not isinstance(history, list):
            raise RowError(f"`{hcol}` must be a list of [user, assistant] pairs, got {_kind(history)}", hcol)
        for i, pair in enumerate(history):
            pair_where = f"{hcol}[{i}]"
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise RowError(f"`{pair_where}` must be a [user, assistant] pair", pair_where)
            parsed.turns.append(({"role": "user", "content": _text(pair[0], pair_where)}, pair_where))
            parsed.turns.append(({"role": "assistant", "content": _text(pair[1], pair_where)}, pair_where))

    present = [c for c in (pcol, qcol) if c and c in row]
    if not present:
        raise RowError(
            f"alpaca row has no `{where}` column (keys: {_keys(row)}); map the instruction column with columns.prompt",
            where,
        )
    parts = [_text(row[c], c) for c in present]
    user = "\n".join(p for p in parts if p)
    if not user.strip():
        raise RowError(f"empty prompt: `{where}` is empty", where)
    parsed.turns.append(({"role": "user", "content": user}, where))

    tags = _Tags.build(OPENAI_TAGS, lenient_roles=True)
    if spec.ranking or stage == "dpo" or (rcol and rcol not in row):
        _pair(row, spec, tags, parsed)
    if stage == "grpo":
        for key in (rcol, *ANSWER_KEYS):
            if key and row.get(key) not in (None, ""):
                parsed.answer = _answer_text(row[key])
                break
        consumed = {c for c in (pcol, qcol, rcol, hcol, col("system"), tcol) if c}
        parsed.extra = {k: v for k, v in row.items() if k not in consumed}
    elif stage == "sft" and parsed.chosen is None:
        if not rcol or rcol not in row:
            raise RowError(
                f"alpaca row has no `{rcol or 'output'}` column (keys: {_keys(row)}); "
                "map the response column with columns.response",
                rcol or "output",
            )
        response = _text(row[rcol], rcol)
        if not response.strip():
            raise RowError(f"empty response in `{rcol}`", rcol)
        parsed.turns.append(({"role": "assistant", "content": response}, rcol))
    return _emit(parsed, spec, stage, "alpaca")


def _convert_conversation(
    row: Mapping[str, Any], spec: FormatSpec, stage: str, fmt: str, default_col: str, base_tags: Mapping[str, str]
) -> dict[str, Any]:
    """sharegpt and messages: a message list under one column (+ system, tools, chosen/rejected)."""
    mcol = _column(spec, "messages", default_col) or default_col
    pcol = _column(spec, "prompt", "prompt")
    lenient = fmt == "messages"
    if mcol not in row and fmt == "messages" and pcol and pcol in row:
        mcol = pcol  # messages-style preference rows call the conversation `prompt`
    if mcol not in row:
        ccol, rcol = _column(spec, "chosen", "chosen"), _column(spec, "rejected", "rejected")
        if fmt == "messages" and ccol in row and rcol in row:
            return _convert_preference(row, spec, stage)
        raise RowError(
            f"{fmt} row has no `{mcol}` column (keys: {_keys(row)}); map the conversation column with columns.messages",
            mcol,
        )
    raw = row[mcol]
    tag_map = _detect_tags(raw, spec, base_tags)
    tags = _Tags.build(tag_map, lenient_roles=lenient or tag_map is OPENAI_TAGS)
    if stage == "pt":
        raise RowError(
            f"{fmt} rows hold conversations, not plain text; stage pt needs format `text` (a `text` column)", mcol
        )
    parsed = _Parsed(where=mcol, pair_hint=_pair_hint(fmt))
    if isinstance(raw, str) and fmt == "messages" and stage == "sft":
        raise RowError(
            f"`{mcol}` must be a list of messages ({{role, content}} ... ending with the assistant's), got text", mcol
        )
    if isinstance(raw, str) and fmt == "messages":  # a prompt given as text: one user turn
        parsed.turns = [({"role": "user", "content": raw}, mcol)]
    else:
        parsed.system, parsed.turns = _align(raw, tags, mcol)
    if parsed.system is None:
        parsed.system = _row_system(row, spec)
    tcol = _column(spec, "tools", "tools")
    if tcol and tcol in row:
        parsed.tools = _tools(row[tcol], tcol)
    _pair(row, spec, tags, parsed)
    if stage == "grpo":
        parsed.answer = _first_answer(row, spec)
        parsed.extra = {k: v for k, v in row.items() if k not in {mcol, _column(spec, "system", "system"), tcol}}
    return _emit(parsed, spec, stage, fmt)


def _convert_sharegpt(row: Mapping[str, Any], spec: FormatSpec, stage: str) -> dict[str, Any]:
    return _convert_conversation(row, spec, stage, "sharegpt", SHAREGPT_COLUMNS["messages"], SHAREGPT_TAGS)


def _convert_messages(row: Mapping[str, Any], spec: FormatSpec, stage: str) -> dict[str, Any]:
    return _convert_conversation(row, spec, stage, "messages", "messages", OPENAI_TAGS)


def _split_common_prefix(chosen: list[Turn], rejected: list[Turn], where: str) -> int:
    """Length of the shared prompt of two full conversations (TRL's implicit-prompt preference rows)."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n][0] == rejected[n][0]:
        n += 1
    if n == len(chosen) and n == len(rejected):
        raise RowError("chosen and rejected are identical, so the pair teaches nothing", where)

    def continues_an_answer(turns: list[Turn]) -> bool:
        return n < len(turns) and turns[n][0]["role"] == "assistant"

    # never split inside a run of assistant messages, of either side (one may be the other plus more messages)
    while (
        n > 0
        and chosen[n - 1][0]["role"] == "assistant"
        and (continues_an_answer(chosen) or continues_an_answer(rejected))
    ):
        n -= 1
    if n == 0:
        raise RowError(
            "no `prompt` column and chosen/rejected share no leading prompt messages; add a `prompt` column", where
        )
    return n


def _convert_preference(row: Mapping[str, Any], spec: FormatSpec, stage: str) -> dict[str, Any]:
    pcol = _column(spec, "prompt", "prompt") or "prompt"
    ccol = _column(spec, "chosen", "chosen") or "chosen"
    rcol = _column(spec, "rejected", "rejected") or "rejected"
    sample = next((v for v in (row.get(pcol), row.get(ccol)) if isinstance(v, list)), None)
    tags = _Tags.build(_detect_tags(sample, spec, OPENAI_TAGS), lenient_roles=True)
    if stage == "pt":
        raise RowError("preference rows hold conversations, not plain text; stage pt needs format `text`", pcol)
    parsed = _Parsed(where=pcol, pair_field=ccol, pair_hint=_pair_hint("preference"))
    parsed.system = _row_system(row, spec)
    for col in (ccol, rcol) if stage != "grpo" else ():
        if row.get(col) is None:
            raise RowError(f"preference row has no `{col}` (keys: {_keys(row)}); map it with columns.{col}", col)
    prompt = row.get(pcol)
    if prompt is None or prompt == "" or prompt == []:
        if stage == "grpo":
            raise RowError(f"preference row has no `{pcol}` (keys: {_keys(row)}); stage grpo needs a prompt", pcol)
        chosen_sys, chosen = _align(row[ccol], tags, ccol)
        rejected_sys, rejected = _align(row[rcol], tags, rcol)
        if chosen_sys != rejected_sys:
            raise RowError("chosen and rejected start with different system messages", ccol)
        n = _split_common_prefix(chosen, rejected, ccol)
        parsed.system = chosen_sys or parsed.system
        parsed.turns, parsed.chosen, parsed.rejected = chosen[:n], chosen[n:], rejected[n:]
        parsed.where = ccol
    else:
        if isinstance(prompt, list):
            system, parsed.turns = _align(prompt, tags, pcol)
            parsed.system = system or parsed.system
        else:
            parsed.turns = _side(prompt, tags, pcol, "user")
        if stage != "grpo":
            parsed.chosen = _side(row[ccol], tags, ccol, "assistant")
            parsed.rejected = _side(row[rcol], tags, rcol, "assistant")
    if stage == "grpo":
        parsed.answer = _first_answer(row, spec)
        parsed.extra = {k: v for k, v in row.items() if k not in {pcol, ccol, rcol, _column(spec, "system", "system")}}
    return _emit(parsed, spec, stage, "preference")


def _first_answer(row: Mapping[str, Any], spec: FormatSpec) -> str | None:
    """The reference answer: columns.answer, else answer/solution/ground_truth, else reward_model.ground_truth."""
    mapped = spec.columns.get("answer")
    if mapped:
        return _answer_text(row.get(mapped))
    for key in ANSWER_KEYS:
        if row.get(key) is not None:
            return _answer_text(row[key])
    reward_model = row.get("reward_model")
    if isinstance(reward_model, Mapping) and reward_model.get("ground_truth") is not None:
        return _answer_text(reward_model["ground_truth"])
    return None


def _convert_rl(row: Mapping[str, Any], spec: FormatSpec, stage: str) -> dict[str, Any]:
    mapped = spec.columns.get("prompt")
    pcol = mapped or next((k for k in _PROMPT_KEYS if k in row), "prompt")
    if stage == "dpo":
        ccol, rcol = _column(spec, "chosen", "chosen"), _column(spec, "rejected", "rejected")
        if ccol in row and rcol in row:
            return _convert_preference(row, spec, stage)
        raise RowError(_pair_hint("rl"), ccol)
    if stage == "pt":
        raise RowError("rl rows hold prompts, not plain text; stage pt needs format `text` (a `text` column)", pcol)
    if pcol not in row:
        raise RowError(f"rl row has no `{pcol}` column (keys: {_keys(row)}); map it with columns.prompt", pcol)
    raw = row[pcol]
    tags = _Tags.build(_detect_tags(raw, spec, OPENAI_TAGS), lenient_roles=True)
    parsed = _Parsed(where=pcol, pair_hint=_pair_hint("rl"))
    if isinstance(raw, str):
        if not raw.strip():
            raise RowError(f"empty prompt in `{pcol}`", pcol)
        parsed.turns = [({"role": "user", "content": raw}, pcol)]
    elif isinstance(raw, Mapping):
        parsed.turns = _side(raw, tags, pcol, "user")
    else:
        parsed.system, parsed.turns = _align(raw, tags, pcol)
    consumed = {pcol}
    scol = _column(spec, "system", "system")
    if parsed.system is None and scol and isinstance(row.get(scol), str):
        parsed.system = row[scol] or None
        consumed.add(scol)
    if stage == "sft":
        ccol = spec.columns.get("completion") or next((k for k in _COMPLETION_KEYS if k in row), "completion")
        if row.get(ccol) in (None, ""):
            raise RowError(
                f"rl row has a prompt but no `{ccol}` to learn for stage sft: add a `completion` column, "
                "or train it with stage grpo",
                ccol,
            )
        parsed.turns += _side(row[ccol], tags, ccol, "assistant")
        return _emit(parsed, spec, stage, "rl")
    parsed.answer = _first_answer(row, spec)
    parsed.extra = {k: v for k, v in row.items() if k not in consumed}
    dcol = spec.columns.get("data_source")
    if dcol and dcol != "data_source" and dcol in parsed.extra:
        parsed.extra["data_source"] = parsed.extra.pop(dcol)
    return _emit(parsed, spec, stage, "rl")


def _convert_pt_column(row: Mapping[str, Any], spec: FormatSpec, fmt: str, tcol: str) -> dict[str, Any]:
    if tcol not in row:
        raise RowError(
            f"{fmt} row has no `{tcol}` column for stage pt (keys: {_keys(row)}); "
            "name the text column with columns.prompt (LlamaFactory) or columns.text",
            tcol,
        )
    text = _text(row[tcol], tcol)
    if fmt == "alpaca":
        qcol = _column(spec, "query", None)
        if qcol and qcol in row and _text(row[qcol], qcol):
            text = f"{text}\n{_text(row[qcol], qcol)}"
    if not text.strip():
        raise RowError(f"empty text in `{tcol}`", tcol)
    return {"text": text}


def _convert_text(row: Mapping[str, Any], spec: FormatSpec, stage: str) -> dict[str, Any]:
    tcol = spec.columns.get("text") or spec.columns.get("prompt") or "text"
    if stage != "pt":
        raise RowError(
            f"text rows have plain text only, which suits stage pt; stage {stage} needs conversations ({_FORMAT_HELP})",
            tcol,
        )
    return _convert_pt_column(row, spec, "text", tcol)


_CONVERTERS: dict[str, Callable[[Mapping[str, Any], FormatSpec, str], dict[str, Any]]] = {
    "alpaca": _convert_alpaca,
    "sharegpt": _convert_sharegpt,
    "messages": _convert_messages,
    "preference": _convert_preference,
    "rl": _convert_rl,
    "text": _convert_text,
}


# ----------------------------------------------------------------------------------------------- public


def detect_format(row: Mapping[str, Any], stage: str) -> str:
    """The layout of a row, told from its keys; raises RowError listing the keys seen and the formats known."""
    keys = set(row)
    if stage == "pt" and "text" in keys:
        return "text"
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys:
        return "alpaca"
    if "chosen" in keys and "rejected" in keys:
        return "preference"
    if keys & set(_PROMPT_KEYS):
        return "rl"
    if "text" in keys:
        return "text"
    raise RowError(
        f"cannot tell the format of a row with keys [{_keys(row)}]; known formats: {_FORMAT_HELP}. "
        "Set `format:` (and `columns:` to map your column names) for this dataset"
    )


def convert_row(row: Mapping[str, Any], spec: FormatSpec, stage: str) -> dict[str, Any]:
    """The canonical row of `stage` for one dataset row; raises RowError naming the missing or bad field."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage `{stage}`; known: {', '.join(STAGES)}")
    if not isinstance(row, Mapping):
        raise RowError(f"a row must be an object (a mapping of columns), got {_kind(row)}")
    fmt = spec.format
    if fmt == "auto":
        probe = dict(row)
        for ours, theirs in spec.columns.items():
            if theirs and theirs in row:
                probe.setdefault(ours, row[theirs])
        fmt = detect_format(probe, stage)
    converted = _CONVERTERS[fmt](row, spec, stage)
    _refuse_lone_surrogates(converted, "")
    return converted


def _refuse_lone_surrogates(value: Any, where: str) -> None:
    """JSON's `\\ud800` escapes decode to half a character that no tokenizer can encode: the row is invalid."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(value[exc.start])
            raise RowError(
                f"holds a lone surrogate \\u{code:04x} at character {exc.start}, which is not valid Unicode",
                where or None,
            ) from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _refuse_lone_surrogates(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_lone_surrogates(item, f"{where}[{index}]")
