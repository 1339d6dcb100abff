"""Every format x stage conversion to canonical rows, LlamaFactory mappings, and the RowError messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory_cli.data.formats import (
    FORMATS,
    OPENAI_TAGS,
    FormatSpec,
    RowError,
    convert_row,
    detect_format,
)
from factory_cli.data.readers import read_rows


def spec(fmt: str = "auto", **kwargs: Any) -> FormatSpec:
    return FormatSpec(format=fmt, **kwargs)


def row_error(row: dict[str, Any], fs: FormatSpec, stage: str) -> RowError:
    with pytest.raises(RowError) as info:
        convert_row(row, fs, stage)
    return info.value


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


# ----------------------------------------------------------------------------------------------- alpaca


class TestAlpaca:
    def test_sft_joins_instruction_and_input_with_newline(self) -> None:
        row = {"instruction": "Summarize.", "input": "A long text.", "output": "Short."}
        assert convert_row(row, spec("alpaca"), "sft") == {
            "messages": [user("Summarize.\nA long text."), assistant("Short.")]
        }

    def test_sft_empty_input_is_not_joined(self) -> None:
        row = {"instruction": "Hi?", "input": "", "output": "Hello."}
        assert convert_row(row, spec("alpaca"), "sft")["messages"][0] == user("Hi?")

    def test_history_system_and_tools(self) -> None:
        row = {
            "instruction": "And 3+3?",
            "input": "",
            "output": "6",
            "system": "Be brief.",
            "history": [["1+1?", "2"], ["2+2?", "4"]],
            "tools": [{"name": "calc"}],
        }
        out = convert_row(row, spec("alpaca"), "sft")
        assert out["messages"] == [
            system("Be brief."),
            user("1+1?"),
            assistant("2"),
            user("2+2?"),
            assistant("4"),
            user("And 3+3?"),
            assistant("6"),
        ]
        assert json.loads(out["tools"]) == [{"name": "calc"}]

    def test_history_as_json_text_from_csv(self) -> None:
        row = {"instruction": "b", "input": "", "output": "B", "history": '[["a", "A"]]'}
        assert convert_row(row, spec("alpaca"), "sft")["messages"][:2] == [user("a"), assistant("A")]

    def test_bad_history_names_the_pair(self) -> None:
        err = row_error({"instruction": "q", "output": "a", "history": [["only one"]]}, spec("alpaca"), "sft")
        assert err.field == "history[0]"

    def test_default_system_applies_only_when_row_has_none(self) -> None:
        fs = spec("alpaca", system="Default.")
        plain = convert_row({"instruction": "q", "output": "a"}, fs, "sft")
        assert plain["messages"][0] == system("Default.")
        own = convert_row({"instruction": "q", "output": "a", "system": "Mine."}, fs, "sft")
        assert own["messages"][0] == system("Mine.")
        empty = convert_row({"instruction": "q", "output": "a", "system": ""}, fs, "sft")
        assert empty["messages"][0] == system("Default.")

    def test_llamafactory_column_remap(self) -> None:
        fs = spec("alpaca", columns={"prompt": "question", "query": "context", "response": "answer"})
        row = {"question": "Why?", "context": "Because.", "answer": "I see."}
        assert convert_row(row, fs, "sft")["messages"] == [user("Why?\nBecause."), assistant("I see.")]

    def test_column_mapped_to_empty_string_is_ignored(self) -> None:
        fs = spec("alpaca", columns={"system": ""})
        out = convert_row({"instruction": "q", "output": "a", "system": "ignored"}, fs, "sft")
        assert out["messages"][0] == user("q")

    def test_missing_and_empty_fields_are_named(self) -> None:
        assert row_error({"output": "a"}, spec("alpaca"), "sft").field == "instruction"
        assert row_error({"instruction": "q"}, spec("alpaca"), "sft").field == "output"
        err = row_error({"instruction": "q", "output": "  "}, spec("alpaca"), "sft")
        assert err.field == "output" and "empty" in err.message
        assert row_error({"instruction": "", "input": "", "output": "a"}, spec("alpaca"), "sft").field == "instruction"

    def test_dpo_with_ranking(self) -> None:
        row = {"instruction": "Capital of France?", "input": "", "chosen": "Paris.", "rejected": "Lyon."}
        assert convert_row(row, spec("alpaca", ranking=True), "dpo") == {
            "prompt": [user("Capital of France?")],
            "chosen": [assistant("Paris.")],
            "rejected": [assistant("Lyon.")],
        }

    def test_dpo_ranking_with_remapped_columns(self) -> None:
        fs = spec("alpaca", ranking=True, columns={"chosen": "good", "rejected": "bad"})
        out = convert_row({"instruction": "q", "good": "yes", "bad": "no"}, fs, "dpo")
        assert out["chosen"] == [assistant("yes")] and out["rejected"] == [assistant("no")]

    def test_dpo_without_pair_says_how_to_declare_it(self) -> None:
        err = row_error({"instruction": "q", "output": "a"}, spec("alpaca"), "dpo")
        assert err.field == "chosen"
        assert "ranking: true" in err.message and "columns" in err.message

    def test_dpo_ranking_declared_but_column_missing(self) -> None:
        err = row_error({"instruction": "q", "chosen": "a"}, spec("alpaca", ranking=True), "dpo")
        assert err.field == "rejected"

    def test_identical_pair_is_rejected(self) -> None:
        err = row_error({"instruction": "q", "chosen": "a", "rejected": "a"}, spec("alpaca", ranking=True), "dpo")
        assert "identical" in err.message

    def test_sft_from_ranking_data_learns_chosen(self) -> None:
        row = {"instruction": "q", "chosen": "good", "rejected": "bad"}
        assert convert_row(row, spec("alpaca", ranking=True), "sft")["messages"] == [user("q"), assistant("good")]

    def test_pt_uses_prompt_column_default_text(self) -> None:
        assert convert_row({"text": "Some prose."}, spec("alpaca"), "pt") == {"text": "Some prose."}
        fs = spec("alpaca", columns={"prompt": "body"})
        assert convert_row({"body": "Other prose."}, fs, "pt") == {"text": "Other prose."}
        assert row_error({"instruction": "x", "output": "y"}, spec("alpaca"), "pt").field == "text"
        assert row_error({"text": "   "}, spec("alpaca"), "pt").field == "text"

    def test_grpo_prompt_and_answer(self) -> None:
        row = {"instruction": "What is 6 x 7?", "input": "", "output": "42", "data_source": "demo"}
        assert convert_row(row, spec("alpaca"), "grpo") == {
            "prompt": [user("What is 6 x 7?")],
            "answer": "42",
            "data_source": "demo",
        }

    def test_grpo_answer_from_answer_or_solution_column(self) -> None:
        out = convert_row({"instruction": "q", "solution": 7}, spec("alpaca"), "grpo")
        assert out["answer"] == "7"
        assert "answer" not in convert_row({"instruction": "q"}, spec("alpaca"), "grpo")


# ----------------------------------------------------------------------------------------------- sharegpt


def sg(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"from": who, "value": text} for who, text in turns]


class TestShareGPT:
    def test_sft_with_system_turn(self) -> None:
        row = {
            "conversations": sg(
                ("system", "Sys."), ("human", "Hi"), ("gpt", "Hello"), ("human", "Bye"), ("gpt", "Ciao")
            )
        }
        assert convert_row(row, spec("sharegpt"), "sft") == {
            "messages": [system("Sys."), user("Hi"), assistant("Hello"), user("Bye"), assistant("Ciao")]
        }

    def test_system_column_and_default(self) -> None:
        row = {"conversations": sg(("human", "Hi"), ("gpt", "Hello")), "system": "Col."}
        assert convert_row(row, spec("sharegpt", system="Default."), "sft")["messages"][0] == system("Col.")
        del row["system"]
        assert convert_row(row, spec("sharegpt", system="Default."), "sft")["messages"][0] == system("Default.")

    def test_custom_tags_and_messages_column(self) -> None:
        fs = spec(
            "sharegpt",
            columns={"messages": "dialog"},
            tags={"role_tag": "speaker", "content_tag": "text", "user_tag": "q", "assistant_tag": "a"},
        )
        row = {"dialog": [{"speaker": "q", "text": "Hi"}, {"speaker": "a", "text": "Hello"}]}
        assert convert_row(row, fs, "sft")["messages"] == [user("Hi"), assistant("Hello")]

    def test_openai_tags_given_or_detected(self) -> None:
        row = {"conversations": [user("Hi"), assistant("Hello")]}
        assert convert_row(row, spec("sharegpt", tags=dict(OPENAI_TAGS)), "sft")["messages"] == [
            user("Hi"),
            assistant("Hello"),
        ]
        assert convert_row(row, spec("sharegpt"), "sft")["messages"] == [user("Hi"), assistant("Hello")]

    def test_function_call_and_observation_become_tool_calls_and_tool(self) -> None:
        call = json.dumps({"name": "weather", "arguments": {"city": "Oslo"}})
        row = {
            "conversations": sg(
                ("human", "Weather?"), ("function_call", call), ("observation", "3 C"), ("gpt", "Cold.")
            ),
            "tools": json.dumps([{"name": "weather", "parameters": {}}]),
        }
        out = convert_row(row, spec("sharegpt"), "sft")
        assert out["messages"] == [
            user("Weather?"),
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}],
            },
            {"role": "tool", "content": "3 C"},
            assistant("Cold."),
        ]
        assert json.loads(out["tools"])[0]["name"] == "weather"

    def test_bad_function_call_and_bad_tools(self) -> None:
        row = {"conversations": sg(("human", "x"), ("function_call", "not json"), ("observation", "r"), ("gpt", "y"))}
        assert row_error(row, spec("sharegpt"), "sft").field == "conversations[1].value"
        row = {"conversations": sg(("human", "x"), ("gpt", "y")), "tools": "{oops"}
        assert row_error(row, spec("sharegpt"), "sft").field == "tools"

    def test_alternation_is_validated_like_llamafactory(self) -> None:
        err = row_error({"conversations": sg(("human", "a"), ("human", "b"), ("gpt", "c"))}, spec("sharegpt"), "sft")
        assert err.field == "conversations[1]" and "alternate" in err.message
        err = row_error({"conversations": sg(("gpt", "a"), ("human", "b"))}, spec("sharegpt"), "sft")
        assert err.field == "conversations[0]"
        err = row_error({"conversations": sg(("human", "a"), ("gpt", "b"), ("human", "c"))}, spec("sharegpt"), "sft")
        assert err.field == "conversations" and "end with an assistant" in err.message
        err = row_error(
            {"conversations": sg(("human", "a"), ("observation", "b"), ("gpt", "c"))}, spec("sharegpt"), "sft"
        )
        assert err.field == "conversations[1]"

    def test_unknown_role_missing_keys_and_late_system(self) -> None:
        err = row_error({"conversations": sg(("human", "a"), ("bot", "b"))}, spec("sharegpt"), "sft")
        assert err.field == "conversations[1].from" and "bot" in err.message
        err = row_error({"conversations": [{"from": "human"}, {"from": "gpt", "value": "b"}]}, spec("sharegpt"), "sft")
        assert err.field == "conversations[0].value"
        err = row_error({"conversations": sg(("human", "a"), ("system", "s"), ("gpt", "b"))}, spec("sharegpt"), "sft")
        assert err.field == "conversations[1]"
        assert row_error({"conversations": []}, spec("sharegpt"), "sft").field == "conversations"
        assert row_error({"conversations": "text"}, spec("sharegpt"), "sft").field == "conversations"
        assert row_error({"dialog": []}, spec("sharegpt"), "sft").field == "conversations"

    def test_empty_assistant_turn(self) -> None:
        err = row_error({"conversations": sg(("human", "a"), ("gpt", " "))}, spec("sharegpt"), "sft")
        assert err.field == "conversations[1]" and "empty" in err.message

    def test_ranking_dpo(self) -> None:
        row = {
            "conversations": sg(("human", "a"), ("gpt", "b"), ("human", "c")),
            "chosen": {"from": "gpt", "value": "good"},
            "rejected": {"from": "gpt", "value": "bad"},
        }
        assert convert_row(row, spec("sharegpt", ranking=True), "dpo") == {
            "prompt": [user("a"), assistant("b"), user("c")],
            "chosen": [assistant("good")],
            "rejected": [assistant("bad")],
        }
        assert convert_row(row, spec("sharegpt", ranking=True), "sft")["messages"][-1] == assistant("good")

    def test_ranking_with_wrong_roles_or_prompt_parity(self) -> None:
        row = {
            "conversations": sg(("human", "a")),
            "chosen": {"from": "human", "value": "good"},
            "rejected": {"from": "gpt", "value": "bad"},
        }
        assert row_error(row, spec("sharegpt", ranking=True), "dpo").field == "chosen"
        row = {
            "conversations": sg(("human", "a"), ("gpt", "b")),
            "chosen": {"from": "gpt", "value": "good"},
            "rejected": {"from": "gpt", "value": "bad"},
        }
        assert "end with a user" in row_error(row, spec("sharegpt", ranking=True), "dpo").message

    def test_dpo_without_pair(self) -> None:
        err = row_error({"conversations": sg(("human", "a"), ("gpt", "b"))}, spec("sharegpt"), "dpo")
        assert err.field == "chosen" and "ranking: true" in err.message

    def test_grpo_takes_last_assistant_as_answer(self) -> None:
        row = {"conversations": sg(("human", "2+2?"), ("gpt", "4"))}
        assert convert_row(row, spec("sharegpt"), "grpo") == {"prompt": [user("2+2?")], "answer": "4"}

    def test_pt_is_not_possible(self) -> None:
        assert "text" in row_error({"conversations": sg(("human", "a"), ("gpt", "b"))}, spec("sharegpt"), "pt").message


# ----------------------------------------------------------------------------------------------- messages


class TestMessages:
    def test_sft_with_tools_and_tool_calls(self) -> None:
        row = {
            "messages": [
                system("S"),
                user("Weather?"),
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city": "Rome"}'}}
                    ],
                },
                {"role": "tool", "content": "25 C", "tool_call_id": "c1"},
                assistant("Warm."),
            ],
            "tools": [{"type": "function", "function": {"name": "w"}}],
        }
        out = convert_row(row, spec("messages"), "sft")
        assert out["messages"][2] == {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "w", "arguments": {"city": "Rome"}}, "id": "c1"}],
        }
        assert out["messages"][3] == {"role": "tool", "content": "25 C", "tool_call_id": "c1"}
        assert isinstance(out["tools"], str) and json.loads(out["tools"])[0]["function"]["name"] == "w"

    def test_text_content_parts_are_joined(self) -> None:
        row = {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
                assistant("Yo"),
            ]
        }
        assert convert_row(row, spec("messages"), "sft")["messages"][0] == user("Hi there")
        row["messages"][0]["content"] = [{"type": "image_url", "image_url": {"url": "x"}}]
        assert row_error(row, spec("messages"), "sft").field == "messages[0].content"

    def test_dpo_with_message_lists_and_strings(self) -> None:
        row = {"messages": [user("q")], "chosen": [assistant("good")], "rejected": "bad"}
        assert convert_row(row, spec("messages"), "dpo") == {
            "prompt": [user("q")],
            "chosen": [assistant("good")],
            "rejected": [assistant("bad")],
        }
        row = {"prompt": "q", "chosen": "good", "rejected": "bad"}
        assert convert_row(row, spec("messages"), "dpo")["prompt"] == [user("q")]

    def test_grpo_keeps_extra_keys(self) -> None:
        row = {"messages": [user("1+1?")], "answer": 2, "level": "easy"}
        assert convert_row(row, spec("messages"), "grpo") == {"prompt": [user("1+1?")], "answer": "2", "level": "easy"}

    def test_sft_must_end_with_assistant(self) -> None:
        assert row_error({"messages": [user("q")]}, spec("messages"), "sft").field == "messages"

    def test_unknown_role(self) -> None:
        err = row_error({"messages": [{"role": "narrator", "content": "x"}]}, spec("messages"), "sft")
        assert err.field == "messages[0].role"


# ----------------------------------------------------------------------------------------------- preference


class TestPreference:
    def test_strings(self) -> None:
        row = {"prompt": "q", "chosen": "good", "rejected": "bad"}
        assert convert_row(row, spec("preference", system="S"), "dpo") == {
            "prompt": [system("S"), user("q")],
            "chosen": [assistant("good")],
            "rejected": [assistant("bad")],
        }

    def test_conversational(self) -> None:
        row = {"prompt": [system("S"), user("q")], "chosen": [assistant("good")], "rejected": [assistant("bad")]}
        out = convert_row(row, spec("preference"), "dpo")
        assert out["prompt"] == [system("S"), user("q")]

    def test_implicit_prompt_is_split_off(self) -> None:
        row = {
            "chosen": [user("q"), assistant("a1"), user("q2"), assistant("good")],
            "rejected": [user("q"), assistant("a1"), user("q2"), assistant("bad")],
        }
        assert convert_row(row, spec("preference"), "dpo") == {
            "prompt": [user("q"), assistant("a1"), user("q2")],
            "chosen": [assistant("good")],
            "rejected": [assistant("bad")],
        }

    def test_implicit_prompt_errors(self) -> None:
        same = [user("q"), assistant("a")]
        assert "identical" in row_error({"chosen": same, "rejected": same}, spec("preference"), "dpo").message
        row = {"chosen": [user("q"), assistant("a")], "rejected": [user("other"), assistant("b")]}
        assert "prompt" in row_error(row, spec("preference"), "dpo").message

    def test_missing_rejected_is_named(self) -> None:
        assert row_error({"prompt": "q", "chosen": "a"}, spec("preference"), "dpo").field == "rejected"

    def test_sft_and_grpo(self) -> None:
        row = {"prompt": "q", "chosen": "good", "rejected": "bad", "answer": "good"}
        assert convert_row(row, spec("preference"), "sft") == {"messages": [user("q"), assistant("good")]}
        assert convert_row(row, spec("preference"), "grpo") == {"prompt": [user("q")], "answer": "good"}


# ----------------------------------------------------------------------------------------------- rl


class TestRL:
    @pytest.mark.parametrize(
        ("extra", "answer"),
        [
            ({"answer": "12"}, "12"),
            ({"solution": 12}, "12"),
            ({"ground_truth": 12.5}, "12.5"),
            ({"reward_model": {"style": "rule", "ground_truth": "12"}}, "12"),
            ({}, None),
        ],
    )
    def test_answer_sources(self, extra: dict[str, Any], answer: str | None) -> None:
        out = convert_row({"prompt": "3 x 4?", **extra}, spec("rl"), "grpo")
        assert out["prompt"] == [user("3 x 4?")]
        assert out.get("answer") == answer
        for key, value in extra.items():
            assert out[key] == value  # every other key kept as is

    def test_verl_parquet_rows_convert_unchanged(self, tmp_path: Path) -> None:
        rows = [
            {
                "data_source": "openai/gsm8k",
                "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
                "extra_info": {"split": "train", "index": i},
            }
            for i in range(5)
        ]
        path = tmp_path / "train.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        for (number, read), original in zip(read_rows(path), rows, strict=True):
            assert read == original
            out = convert_row(read, spec("auto"), "grpo")
            assert out == {**original, "answer": original["reward_model"]["ground_truth"]}, number

    def test_column_mapping(self) -> None:
        fs = spec("rl", columns={"prompt": "question", "answer": "final", "data_source": "source"})
        out = convert_row({"question": "q", "final": 3, "source": "s"}, fs, "grpo")
        assert out["prompt"] == [user("q")] and out["answer"] == "3" and out["data_source"] == "s"
        assert "question" not in out

    def test_question_key_is_a_prompt(self) -> None:
        assert convert_row({"question": "q", "answer": "1"}, spec("auto"), "grpo")["prompt"] == [user("q")]

    def test_sft_needs_a_completion(self) -> None:
        row = {"prompt": "q", "completion": "a"}
        assert convert_row(row, spec("rl"), "sft") == {"messages": [user("q"), assistant("a")]}
        assert row_error({"prompt": "q", "answer": "1"}, spec("rl"), "sft").field == "completion"

    def test_missing_or_empty_prompt_and_other_stages(self) -> None:
        assert row_error({"answer": "1"}, spec("rl"), "grpo").field == "prompt"
        assert row_error({"prompt": " "}, spec("rl"), "grpo").field == "prompt"
        assert row_error({"prompt": "q"}, spec("rl"), "dpo").field == "chosen"
        assert row_error({"prompt": "q"}, spec("rl"), "pt").field == "prompt"
        assert row_error({"prompt": [user("q"), user("q2")]}, spec("rl"), "grpo").field == "prompt[1]"
        err = row_error({"prompt": [user("q"), assistant("a"), assistant("b")]}, spec("rl"), "grpo")
        assert err.field == "prompt" and "end with a user" in err.message


# ----------------------------------------------------------------------------------------------- text


class TestText:
    def test_pt(self) -> None:
        assert convert_row({"text": "Hello world."}, spec("text"), "pt") == {"text": "Hello world."}
        assert convert_row({"body": "B"}, spec("text", columns={"text": "body"}), "pt") == {"text": "B"}
        assert convert_row({"body": "B"}, spec("text", columns={"prompt": "body"}), "pt") == {"text": "B"}

    def test_errors(self) -> None:
        assert row_error({"text": ""}, spec("text"), "pt").field == "text"
        assert row_error({"content": "x"}, spec("text"), "pt").field == "text"
        err = row_error({"text": "x"}, spec("text"), "sft")
        assert err.field == "text" and "pt" in err.message


# ----------------------------------------------------------------------------------------------- auto


class TestAuto:
    @pytest.mark.parametrize(
        ("row", "stage", "expected"),
        [
            ({"instruction": "q", "output": "a"}, "sft", "alpaca"),
            ({"instruction": "q", "chosen": "a", "rejected": "b"}, "dpo", "alpaca"),
            ({"conversations": []}, "sft", "sharegpt"),
            ({"messages": []}, "sft", "messages"),
            ({"prompt": "q", "chosen": "a", "rejected": "b"}, "dpo", "preference"),
            ({"chosen": [], "rejected": []}, "dpo", "preference"),
            ({"prompt": [], "reward_model": {}}, "grpo", "rl"),
            ({"problem": "q", "solution": "1"}, "grpo", "rl"),
            ({"text": "t"}, "pt", "text"),
            ({"text": "t", "prompt": "p"}, "pt", "text"),
        ],
    )
    def test_detect(self, row: dict[str, Any], stage: str, expected: str) -> None:
        assert detect_format(row, stage) == expected
        assert expected in FORMATS

    def test_unknown_keys_listed(self) -> None:
        with pytest.raises(RowError) as info:
            detect_format({"foo": 1, "bar": 2}, "sft")
        assert "foo" in info.value.message and "bar" in info.value.message
        assert all(name in info.value.message for name in FORMATS)

    def test_auto_converts_every_layout(self) -> None:
        auto = spec("auto")
        assert convert_row({"instruction": "q", "output": "a"}, auto, "sft")["messages"][-1] == assistant("a")
        assert convert_row({"conversations": sg(("human", "q"), ("gpt", "a"))}, auto, "sft")["messages"][0] == user("q")
        assert convert_row({"instruction": "q", "chosen": "a", "rejected": "b"}, auto, "dpo")["chosen"] == [
            assistant("a")
        ]
        assert convert_row({"text": "t"}, auto, "pt") == {"text": "t"}

    def test_auto_uses_the_column_mapping(self) -> None:
        fs = spec("auto", columns={"prompt": "query_text"})
        assert convert_row({"query_text": "q", "answer": "1"}, fs, "grpo")["prompt"] == [user("q")]

    def test_stage_mismatch_in_auto(self) -> None:
        err = row_error({"instruction": "q", "output": "a"}, spec("auto"), "dpo")
        assert "ranking" in err.message


# ----------------------------------------------------------------------------------------------- spec / api


def test_format_spec_validates() -> None:
    with pytest.raises(ValueError, match="did you mean `alpaca`"):
        FormatSpec(format="alpacca")
    with pytest.raises(ValueError, match="role_tagg"):
        FormatSpec(format="sharegpt", tags={"role_tagg": "x"})


def test_convert_row_rejects_bad_stage_and_non_mapping() -> None:
    with pytest.raises(ValueError, match="stage"):
        convert_row({"text": "x"}, spec("text"), "rm")
    with pytest.raises(RowError):
        convert_row(["not", "a", "row"], spec("text"), "pt")  # type: ignore[arg-type]


def test_row_error_carries_message_and_field() -> None:
    err = RowError("bad thing", "col")
    assert str(err) == "bad thing" and err.message == "bad thing" and err.field == "col"
    assert isinstance(err, ValueError)


def test_sft_messages_given_as_text_say_they_must_be_a_list() -> None:
    error = row_error({"messages": "hello"}, spec("messages"), "sft")
    assert "`messages` must be a list of messages" in str(error) and "got text" in str(error)
    assert convert_row({"messages": "2+2?", "answer": "4"}, spec("messages"), "grpo")["prompt"][0]["role"] == "user"
