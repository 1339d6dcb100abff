"""The assistant mask is exact: decoding the supervised tokens gives back exactly the assistant turns.

Every named template is checked with the SmolLM2 tokenizer extended by that family's special tokens (so `<|eot_id|>`,
`</s>`, `<|user|>`, ... are single special tokens, as in the family's own tokenizer), and SmolLM2's own template with
its own tokenizer; single- and multi-turn, with and without a system prompt.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from factory_cli.data.chat_render import render_chat
from factory_cli.data.chat_templates import TEMPLATE_NAMES, named_template
from factory_cli.data.masking import (
    IGNORE_INDEX,
    ConversationEncoder,
    resolve_chat_template,
    tokenize_conversation,
    tokenizer_chat_template,
)

DS_BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
DS_EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"
THINK = "<think>\n\n</think>\n\n"

# template -> (special tokens of the family's tokenizer, bos, eos)
FAMILIES: dict[str, tuple[list[str], str | None, str]] = {
    "chatml": (["<|im_start|>", "<|im_end|>"], None, "<|im_end|>"),
    "qwen3": (["<|im_start|>", "<|im_end|>"], None, "<|im_end|>"),
    "llama3": (["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], None, "<|eot_id|>"),
    "mistral": (["<s>", "</s>", "[INST]", "[/INST]"], "<s>", "</s>"),
    "glm4": (["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"], None, "<|endoftext|>"),
    "deepseek_r1": ([DS_BOS, DS_EOS, "<\uff5cUser\uff5c>", "<\uff5cAssistant\uff5c>"], DS_BOS, DS_EOS),
}

SYSTEM = {"role": "system", "content": "You are a careful assistant."}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


SINGLE = [user("What is 2 + 2?"), assistant("2 + 2 = 4.")]
MULTI = [
    user("Name a prime number."),
    assistant("7 is a prime number."),
    user("And an even one?"),
    assistant("2 is the only even prime."),
    user("Thanks! Anything else?"),
    assistant("Every prime above 2 is odd."),
]
CONVERSATIONS = {
    "single": SINGLE,
    "single+system": [SYSTEM, *SINGLE],
    "multi": MULTI,
    "multi+system": [SYSTEM, *MULTI],
    "echo": [user("Say ok"), assistant("ok"), user("ok"), assistant("Done: ok")],  # answer text also in prompts
}


def _chatml(content: str, last: bool, after_last_query: bool) -> str:
    return content + "<|im_end|>"


# How each family writes an assistant turn the model must generate (after the generation prompt).
EXPECTED_TURN: dict[str, Callable[[str, bool, bool], str]] = {
    "chatml": _chatml,
    "tokenizer": _chatml,
    "qwen3": lambda c, last, after_query: (THINK + c if after_query and last else c) + "<|im_end|>",
    "llama3": lambda c, last, after_query: c.strip() + "<|eot_id|>",
    "mistral": lambda c, last, after_query: " " + c.strip() + "</s>",
    # GLM-4 writes no end-of-turn marker: the next turn's <|user|> (its stop token) or an appended EOS is learned.
    "glm4": lambda c, last, after_query: "\n" + c + ("<|endoftext|>" if last else "<|user|>"),
    "deepseek_r1": lambda c, last, after_query: c + DS_EOS,
}


def expected_turns(name: str, messages: list[dict[str, str]]) -> list[str]:
    """The assistant turns of a plain conversation as the family's template writes them."""
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    last_assistant = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return [
        EXPECTED_TURN[name](m["content"], i == last_assistant, i > last_user)
        for i, m in enumerate(messages)
        if m["role"] == "assistant"
    ]


@pytest.fixture(scope="module")
def family_tokenizers(smollm2_tokenizer: Any) -> dict[str, Any]:
    """template name -> SmolLM2's tokenizer with the family's special tokens, BOS and EOS."""
    from tokenizers import AddedToken

    made: dict[str, Any] = {"tokenizer": smollm2_tokenizer}
    for name, (specials, bos, eos) in FAMILIES.items():
        tokenizer = copy.deepcopy(smollm2_tokenizer)
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials], special_tokens=True)
        if bos is not None:
            tokenizer.bos_token = bos
        tokenizer.eos_token = eos
        made[name] = tokenizer
    return made


def template_of(name: str, tokenizer: Any) -> str:
    source = tokenizer_chat_template(tokenizer) if name == "tokenizer" else named_template(name)
    assert source is not None
    return source


def decode(tokenizer: Any, ids: list[int]) -> str:
    """Text of token ids; special tokens spelled out one by one (the GGUF tokenizer's decoder mangles some)."""
    specials = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    parts, run = [], []
    for token in [*ids, None]:
        if token is None or token in specials:
            if run:
                parts.append(tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False))
                run = []
            if token is not None:
                parts.append(tokenizer.convert_ids_to_tokens(token))
        else:
            run.append(token)
    return "".join(parts)


def supervised_runs(tokenizer: Any, ids: list[int], labels: list[int]) -> list[str]:
    """Decoded runs of consecutive supervised tokens; every supervised label must equal its input id."""
    assert len(ids) == len(labels)
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(ids, labels, strict=True):
        supervised = label != IGNORE_INDEX
        if supervised:
            assert label == token
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = supervised
    return [decode(tokenizer, run) for run in runs]


@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("name", [*TEMPLATE_NAMES, "tokenizer"])
def test_supervised_tokens_are_exactly_the_assistant_turns(
    family_tokenizers: dict[str, Any], name: str, conversation: str
) -> None:
    tokenizer = family_tokenizers[name]
    template = template_of(name, tokenizer)
    messages = CONVERSATIONS[conversation]
    ids, labels = tokenize_conversation(tokenizer, template, messages)
    assert supervised_runs(tokenizer, ids, labels) == expected_turns(name, messages)
    # The tokens are the template's text, tokenized once with no extra special tokens.
    text = render_chat(template, messages, bos_token=tokenizer.bos_token or "", eos_token=tokenizer.eos_token or "")
    appended = tokenizer.eos_token if name == "glm4" else ""
    assert decode(tokenizer, ids) == text + appended


def test_families_have_their_specials_as_single_tokens(family_tokenizers: dict[str, Any]) -> None:
    for name, (specials, _, _) in FAMILIES.items():
        tokenizer = family_tokenizers[name]
        for special in specials:
            assert len(tokenizer(special, add_special_tokens=False)["input_ids"]) == 1, (name, special)


def test_qwen3_reasoning_is_learned_on_the_last_turn_only(family_tokenizers: dict[str, Any]) -> None:
    tokenizer = family_tokenizers["qwen3"]
    messages = [
        user("2 + 3?"),
        assistant("<think>\nadd them\n</think>\n\n5"),
        user("times 2?"),
        assistant("<think>\ndouble 5\n</think>\n\n10"),
    ]
    ids, labels = tokenize_conversation(tokenizer, named_template("qwen3"), messages)
    assert supervised_runs(tokenizer, ids, labels) == ["5<|im_end|>", "<think>\ndouble 5\n</think>\n\n10<|im_end|>"]


def test_deepseek_r1_learns_the_answer_the_template_keeps(family_tokenizers: dict[str, Any]) -> None:
    tokenizer = family_tokenizers["deepseek_r1"]
    messages = [SYSTEM, user("2 + 3?"), assistant("<think>\nadd\n</think>\n\n5")]
    ids, labels = tokenize_conversation(tokenizer, named_template("deepseek_r1"), messages)
    assert supervised_runs(tokenizer, ids, labels) == ["\n\n5" + DS_EOS]


def test_glm4_learns_the_observation_token_before_a_tool_result(family_tokenizers: dict[str, Any]) -> None:
    tokenizer = family_tokenizers["glm4"]
    messages = [
        user("What is 6 x 7?"),
        assistant("Let me compute."),
        {"role": "tool", "content": "42"},
        assistant("It is 42."),
    ]
    ids, labels = tokenize_conversation(tokenizer, named_template("glm4"), messages)
    assert supervised_runs(tokenizer, ids, labels) == ["\nLet me compute.<|observation|>", "\nIt is 42.<|endoftext|>"]


def test_template_without_markers_or_generation_prompt_gets_an_eos(family_tokenizers: dict[str, Any]) -> None:
    tokenizer = family_tokenizers["glm4"]  # eos <|endoftext|>
    plain = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    ids, labels = tokenize_conversation(tokenizer, plain, SINGLE)
    # No generation prompt: the model has to write the role header itself, then stop.
    assert supervised_runs(tokenizer, ids, labels) == ["assistant: 2 + 2 = 4.\n<|endoftext|>"]


def test_train_on_prompt_supervises_every_token(smollm2_tokenizer: Any) -> None:
    template = tokenizer_chat_template(smollm2_tokenizer)
    assert template is not None
    ids, labels = tokenize_conversation(smollm2_tokenizer, template, MULTI, train_on_prompt=True)
    assert labels == ids
    masked_ids, masked = tokenize_conversation(smollm2_tokenizer, template, MULTI)
    assert masked_ids == ids and IGNORE_INDEX in masked


def test_batch_encoding_matches_one_by_one(smollm2_tokenizer: Any) -> None:
    template = named_template("chatml")
    conversations = list(CONVERSATIONS.values())
    encoder = ConversationEncoder(smollm2_tokenizer, template)
    batch_ids, batch_labels = encoder.encode_batch(conversations)
    for messages, ids, labels in zip(conversations, batch_ids, batch_labels, strict=True):
        assert (ids, labels) == tokenize_conversation(smollm2_tokenizer, template, messages)


def test_tools_given_as_json_text_reach_the_template(smollm2_tokenizer: Any) -> None:
    template = "{% if tools %}{{ tools[0]['name'] }}\n{% endif %}" + named_template("chatml")
    ids, labels = tokenize_conversation(smollm2_tokenizer, template, SINGLE, tools='[{"name": "calculator"}]')
    assert decode(smollm2_tokenizer, ids).startswith("calculator\n")
    assert supervised_runs(smollm2_tokenizer, ids, labels) == ["2 + 2 = 4.<|im_end|>"]


# ----------------------------------------------------------------------------------------------- resolve


def test_resolve_auto_prefers_the_tokenizers_own_template(smollm2_tokenizer: Any) -> None:
    own = tokenizer_chat_template(smollm2_tokenizer)
    assert own is not None and "SmolLM" in own
    assert resolve_chat_template("auto", smollm2_tokenizer, "llama3") == own
    assert resolve_chat_template("tokenizer", smollm2_tokenizer, None) == own


def test_resolve_auto_without_a_tokenizer_template(smollm2_tokenizer: Any) -> None:
    bare = copy.deepcopy(smollm2_tokenizer)
    bare.chat_template = None
    assert resolve_chat_template("auto", bare, "llama3") == named_template("llama3")
    assert resolve_chat_template("auto", bare, None) is None
    with pytest.raises(ValueError, match="no chat template"):
        resolve_chat_template("tokenizer", bare, None)


def test_resolve_names_and_files(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    assert resolve_chat_template("mistral", smollm2_tokenizer, None) == named_template("mistral")
    (tmp_path / "mine.jinja").write_text("{{ messages[0]['content'] }}", encoding="utf-8")
    assert resolve_chat_template("mine.jinja", smollm2_tokenizer, None, [tmp_path]) == "{{ messages[0]['content'] }}"
    with pytest.raises(ValueError, match="not found"):
        resolve_chat_template("missing.j2", smollm2_tokenizer, None, [tmp_path])
    with pytest.raises(ValueError, match="did you mean `chatml`"):
        resolve_chat_template("chatlm", smollm2_tokenizer, None)
