"""The assistant mask at its edges: characters split over several tokens or covered by none, turns a text search
would find in the wrong place, markers that are not special tokens, and how a tokenizer's template and special tokens
are read (factory_cli/data/masking.py)."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest

from factory_cli.data.chat_templates import named_template
from factory_cli.data.masking import (
    IGNORE_INDEX,
    ConversationEncoder,
    _content_variants,
    _find_content,
    _special_token_strings,
    resolve_chat_template,
    tokenize_conversation,
    tokenizer_chat_template,
)

from .test_masking import DS_EOS, assistant, supervised_runs, user

# A template that writes no end-of-turn marker and no generation prompt.
PLAIN = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"


def spans_text(encoder: ConversationEncoder, messages: list[dict[str, Any]], tools: Any = None) -> list[str]:
    text, spans = encoder.render(messages, tools)
    return [text[start:end] for start, end in spans]


@pytest.fixture(scope="module")
def word_tokenizer() -> Any:
    """A fast word-level tokenizer: whitespace belongs to no token, and it adds <s> unless asked not to."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "aa", "bb", "cc", ",", "dd"])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", unk_token="<unk>")


# --------------------------------------------------------------------------------------------- token labels


def test_tokens_overlapping_a_span_are_labelled_where_whitespace_has_no_token(word_tokenizer: Any) -> None:
    encoder = ConversationEncoder(word_tokenizer, PLAIN)
    text = "aa bb cc dd"  # tokens aa(0-2) bb(3-5) cc(6-8) dd(9-11); the spaces belong to none
    cases = {
        (2, 5): [3],  # " bb": starts on a space
        (0, 3): [2],  # "aa ": ends on a space
        (1, 7): [2, 3, 4],  # "a bb c": partial tokens at both ends
        (2, 3): [],  # " ": no token
        (4, 4): [],  # empty, inside a token
        (8, 9): [],  # " " between cc and dd
    }
    ids, labels = encoder.encode_texts([text] * len(cases), [[span] for span in cases])
    assert ids == [[2, 3, 4, 6]] * len(cases)  # no <s>: the rendered text is tokenized as it is
    for (span, expected), row_ids, row_labels in zip(cases.items(), ids, labels, strict=True):
        assert [i for i, label in zip(row_ids, row_labels, strict=True) if label != IGNORE_INDEX] == expected, span
        assert all(label in (IGNORE_INDEX, i) for i, label in zip(row_ids, row_labels, strict=True))


def test_an_empty_span_does_not_stop_the_spans_after_it(word_tokenizer: Any) -> None:
    _, labels = ConversationEncoder(word_tokenizer, PLAIN).encode_texts(["aa bb cc"], [[(3, 3), (6, 8)]])
    assert labels == [[IGNORE_INDEX, IGNORE_INDEX, 4]]


def test_a_span_ending_on_the_first_character_of_a_token_takes_that_token(word_tokenizer: Any) -> None:
    # "aa,bb": aa(0-2) ,(2-3) bb(3-5), no gaps; (0, 4) ends inside bb.
    _, labels = ConversationEncoder(word_tokenizer, PLAIN).encode_texts(["aa,bb", "aa,bb"], [[(0, 4)], [(0, 2)]])
    assert labels == [[2, 5, 3], [2, IGNORE_INDEX, IGNORE_INDEX]]


def test_texts_and_spans_must_pair_up(word_tokenizer: Any) -> None:
    with pytest.raises(ValueError):
        ConversationEncoder(word_tokenizer, PLAIN).encode_texts(["aa", "bb"], [[(0, 2)]])


def test_a_character_split_over_several_tokens_is_learned_whole(smollm2_tokenizer: Any) -> None:
    # A byte-level vocabulary writes the llama emoji as three tokens over one character; a turn that ends on it (no
    # end-of-turn marker, the next turn's text follows) learns all three, or the model never learns to finish it.
    messages = [user("hi"), assistant("ok \U0001f999"), user("more"), assistant("fine")]
    ids, labels = tokenize_conversation(smollm2_tokenizer, PLAIN, messages)
    runs = supervised_runs(smollm2_tokenizer, ids, labels)
    assert runs == ["assistant: ok \U0001f999", "assistant: fine\n" + smollm2_tokenizer.eos_token]


# ------------------------------------------------------------------------------------------ assistant spans


def test_a_turn_is_found_by_its_position_not_by_an_equal_text_before_it(smollm2_tokenizer: Any) -> None:
    encoder = ConversationEncoder(smollm2_tokenizer, named_template("chatml"))
    messages = [{"role": "system", "content": "Sure"}, user("Say sure"), assistant("Sure")]
    text, spans = encoder.render(messages)
    assert [text[s:e] for s, e in spans] == ["Sure<|im_end|>"]
    assert spans[0][0] == text.rindex("Sure<|im_end|>")


def test_a_conversation_may_end_with_a_user_turn(smollm2_tokenizer: Any) -> None:
    encoder = ConversationEncoder(smollm2_tokenizer, named_template("chatml"))
    assert spans_text(encoder, [user("q"), assistant("a"), user("thanks")]) == ["a<|im_end|>"]


def test_equal_earlier_turns_of_a_reasoning_template_each_get_their_own_span(smollm2_tokenizer: Any) -> None:
    # Qwen3 drops earlier turns' reasoning once later turns follow, so turns are searched for, from the last one.
    encoder = ConversationEncoder(smollm2_tokenizer, named_template("qwen3"))
    messages = [
        user("a?"),
        assistant("<think>\nr\n</think>\n\nSame"),
        user("b?"),
        assistant("Same"),
        user("c?"),
        assistant("<think>\ns\n</think>\n\nEnd"),
    ]
    text, spans = encoder.render(messages)
    last = "<think>\ns\n</think>\n\nEnd<|im_end|>"
    assert [text[s:e] for s, e in spans] == ["Same<|im_end|>", "Same<|im_end|>", last]
    assert spans[0][1] <= spans[1][0] < spans[1][1] <= spans[2][0]


def test_tools_reach_a_template_that_writes_them_in_the_assistant_turn(smollm2_tokenizer: Any) -> None:
    template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and tools %}[tools] "
        "{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    encoder = ConversationEncoder(smollm2_tokenizer, template)
    messages = [user("q"), assistant("a"), user("r"), assistant("b")]
    assert spans_text(encoder, messages, [{"name": "t"}]) == ["[tools] a<|im_end|>", "[tools] b<|im_end|>"]


def test_turns_of_a_template_without_markers_end_with_their_text(smollm2_tokenizer: Any) -> None:
    # No end-of-turn marker and the next turn is plain text: the turn ends with its content; the last one gets EOS.
    encoder = ConversationEncoder(smollm2_tokenizer, PLAIN)
    messages = [user("q"), assistant("a"), user("r"), assistant("b")]
    eos = smollm2_tokenizer.eos_token
    assert spans_text(encoder, messages) == ["assistant: a", "assistant: b\n" + eos]


def test_a_marker_that_is_not_a_special_token_is_learned(smollm2_tokenizer: Any) -> None:
    # SmolLM2's tokenizer lacks DeepSeek's special tokens: the end-of-sentence marker is plain text after the answer,
    # found from the turn's own render.
    assert DS_EOS not in _special_token_strings(smollm2_tokenizer)
    encoder = ConversationEncoder(smollm2_tokenizer, named_template("deepseek_r1"))
    messages = [user("2 + 3?"), assistant("<think>\nadd\n</think>\n\n5"), user("and 2 + 4?"), assistant("6")]
    assert spans_text(encoder, messages) == ["\n\n5" + DS_EOS, "6" + DS_EOS]


def test_bos_and_eos_reach_the_template(smollm2_tokenizer: Any) -> None:
    template = "{{ bos_token }}" + PLAIN + "{{ eos_token }}"
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    text, _ = ConversationEncoder(tokenizer, template).render([user("q"), assistant("a")])
    assert text == f"{tokenizer.bos_token}user: q\nassistant: a\n{tokenizer.eos_token}"
    tokenizer.bos_token = None
    text, _ = ConversationEncoder(tokenizer, template).render([user("q"), assistant("a")])
    assert text == f"user: q\nassistant: a\n{tokenizer.eos_token}"
    each = "{% for m in messages %}{{ m.role }}: {{ m.content }}{{ eos_token }}\n{% endfor %}"
    text, _ = ConversationEncoder(tokenizer, each).render([user("q"), assistant("a")])
    assert text == f"user: q{tokenizer.eos_token}\nassistant: a{tokenizer.eos_token}\n"


def test_a_tokenizer_without_bos_or_eos_renders_none(smollm2_tokenizer: Any) -> None:
    template = "[{{ bos_token }}]" + PLAIN + "{{ eos_token }}"
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.bos_token = None
    tokenizer.eos_token = None
    text, spans = ConversationEncoder(tokenizer, template).render([user("q"), assistant("a")])
    assert text == "[]user: q\nassistant: a\n"  # and no EOS to append after the last turn
    assert [text[s:e] for s, e in spans] == ["assistant: a"]


# ------------------------------------------------------------------------------------------ content forms


def test_content_variants_cover_trimmed_and_reasoning_free_forms() -> None:
    assert _content_variants("  ok \n") == ["  ok \n", "ok"]
    assert _content_variants("") == []
    # The answer after the last </think>, with its leading newlines cut, and trimmed.
    assert _content_variants("<think>r</think>\n ok \n") == [
        "<think>r</think>\n ok \n",
        "<think>r</think>\n ok",
        "\n ok \n",
        " ok \n",
        "ok",
    ]
    assert _content_variants("<think>a</think>b</think>\nXc") == ["<think>a</think>b</think>\nXc", "\nXc", "Xc"]


def test_find_content_takes_the_earliest_form_and_the_longest_on_ties() -> None:
    assert _find_content("ok x", "ok ", 0) == (0, 3)
    assert _find_content("ok x ok ", "ok ", 1) == (5, 8)
    assert _find_content("a: ok", " ok", 0) == (2, 5)
    assert _find_content("ok ok", " ok", 0) == (0, 2)  # a later form found earlier wins
    assert _find_content("xx\n\nok", "<think>r</think>\n\nok", 0) == (2, 6)
    assert _find_content("nothing here", "ok", 0) is None


# ------------------------------------------------------------------------------------ template and specials


def test_tokenizer_chat_template_reads_a_template_dict_and_rejects_blanks() -> None:
    assert tokenizer_chat_template(SimpleNamespace(chat_template={"tool_use": "T", "default": "D"})) == "D"
    assert tokenizer_chat_template(SimpleNamespace(chat_template={"tool_use": "T", "rag": "R"})) == "T"
    assert tokenizer_chat_template(SimpleNamespace(chat_template={})) is None
    assert tokenizer_chat_template(SimpleNamespace(chat_template="  \n")) is None
    assert tokenizer_chat_template(SimpleNamespace(chat_template=None)) is None
    assert tokenizer_chat_template(SimpleNamespace()) is None


def test_a_tokenizer_without_a_template_is_told_what_to_give(smollm2_tokenizer: Any) -> None:
    bare = copy.deepcopy(smollm2_tokenizer)
    bare.chat_template = None
    with pytest.raises(ValueError) as error:
        resolve_chat_template("tokenizer", bare, "llama3")
    assert str(error.value) == (
        "model.template is `tokenizer` but the tokenizer has no chat template; "
        "give a template name (chatml, llama3, ...) or a .jinja file"
    )


def test_special_token_strings_are_the_special_added_tokens_bos_and_eos_longest_first(smollm2_tokenizer: Any) -> None:
    from tokenizers import AddedToken

    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.add_tokens([AddedToken("<plain-added>", special=False, normalized=False)])
    tokenizer.bos_token = "<my-bos>"  # neither is an added token of the vocabulary
    tokenizer.eos_token = "<my-end-of-sequence>"
    specials = _special_token_strings(tokenizer)
    added = {str(t) for t in tokenizer.added_tokens_decoder.values() if t.special}
    assert set(specials) == added | {"<my-bos>", "<my-end-of-sequence>"}
    assert "<plain-added>" not in specials
    assert [len(s) for s in specials] == sorted((len(s) for s in specials), reverse=True)
    assert specials[0] == "<my-end-of-sequence>"  # the longest
    assert _special_token_strings(SimpleNamespace(bos_token="<s>", eos_token=None)) == ("<s>",)


def test_a_byte_split_character_of_two_tokens_ends_the_turn_exactly(smollm2_tokenizer: Any) -> None:
    # SmolLM2 writes ß as two tokens over one character; the newline after it is the next token, not the turn's.
    messages = [user("hi"), assistant("groß"), user("more"), assistant("fine")]
    ids, labels = tokenize_conversation(smollm2_tokenizer, PLAIN, messages)
    assert supervised_runs(smollm2_tokenizer, ids, labels)[0] == "assistant: groß"


# Templates whose generation prompt is not how they write an assistant turn: each turn is found by its content.
SAYS = (
    "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant says: {% endif %}"
)
LAST_ENDS = (
    "{% for m in messages %}{% if m.role == 'user' %}Q: {{ m.content }}\n"
    "{% else %}{{ m.content }}{% if loop.last %}<END>{% else %}<SEP>{% endif %}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}A:{% endif %}"
)


def test_turns_found_by_their_content_without_a_marker(smollm2_tokenizer: Any) -> None:
    encoder = ConversationEncoder(smollm2_tokenizer, SAYS)
    messages = [user("q"), assistant("Alpha"), user("r"), assistant("Beta")]
    assert spans_text(encoder, messages) == ["Alpha", "Beta"]


def test_turns_found_by_their_content_keep_only_the_marker_the_full_text_has(smollm2_tokenizer: Any) -> None:
    encoder = ConversationEncoder(smollm2_tokenizer, LAST_ENDS)
    # its own render ends the turn with <END>; in the full text a later turn follows, after <SEP>
    assert spans_text(encoder, [assistant("hi"), user("q"), assistant("ok")]) == ["hi", "ok<END>"]
    assert spans_text(encoder, [assistant("hi")]) == ["hi<END>"]  # the turn opens the text


def test_a_text_opening_with_a_special_token_does_not_end_turns_early(smollm2_tokenizer: Any) -> None:
    encoder = ConversationEncoder(smollm2_tokenizer, "<|im_start|>" + PLAIN)
    messages = [user("q"), assistant("a"), user("r"), assistant("b")]
    assert spans_text(encoder, messages) == ["assistant: a", "assistant: b\n" + smollm2_tokenizer.eos_token]


def test_equal_answers_of_a_template_that_moves_the_system_prompt_get_their_own_spans(smollm2_tokenizer: Any) -> None:
    # Mistral writes the system prompt into the last user turn, so earlier renders differ from the full text and each
    # turn is searched for from where the one before ended.
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.bos_token, tokenizer.eos_token = "<s>", "</s>"
    encoder = ConversationEncoder(tokenizer, named_template("mistral"))
    messages = [
        {"role": "system", "content": "S"},
        user("q1"),
        assistant("Same"),
        user("q2"),
        assistant("Same"),
        user("q3"),
        assistant("End"),
    ]
    text, spans = encoder.render(messages)
    assert text == "<s>[INST] q1[/INST] Same</s>[INST] q2[/INST] Same</s>[INST] S\n\nq3[/INST] End</s>"
    assert spans == [(19, 28), (44, 53), (72, 80)]


def test_a_turn_is_not_found_in_an_earlier_system_prompt_after_an_empty_user_turn(smollm2_tokenizer: Any) -> None:
    encoder = ConversationEncoder(smollm2_tokenizer, named_template("chatml"))
    text, spans = encoder.render([{"role": "system", "content": "Sure"}, user(""), assistant("Sure")])
    assert spans == [(text.rindex("Sure<|im_end|>"), len(text) - 1)]


def test_a_user_turn_equal_to_an_earlier_answer_is_found_after_it(smollm2_tokenizer: Any) -> None:
    encoder = ConversationEncoder(smollm2_tokenizer, named_template("qwen3"))
    messages = [
        user("a?"),
        assistant("<think>\nr\n</think>\n\nSame"),
        user("Same"),
        assistant("Same"),
        user("c?"),
        assistant("<think>\ns\n</think>\n\nEnd"),
    ]
    text, spans = encoder.render(messages)
    asked = text.index("<|im_start|>user\nSame")
    assert [text[s:e] for s, e in spans] == [
        "Same<|im_end|>",
        "Same<|im_end|>",
        "<think>\ns\n</think>\n\nEnd<|im_end|>",
    ]
    assert spans[0][1] < asked < spans[1][0]
