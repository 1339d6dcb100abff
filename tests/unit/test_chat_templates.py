"""Named chat templates render exactly like the families' official templates; the renderer behaves like transformers."""

from __future__ import annotations

import pytest

from factory_cli.data.chat_render import render_chat
from factory_cli.data.chat_templates import TEMPLATE_NAMES, ChatTemplateError, named_template

SYSTEM = {"role": "system", "content": "You are terse."}
CONVERSATION = [SYSTEM, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
PROMPT = [SYSTEM, {"role": "user", "content": "Hi"}]

DS_BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
DS_EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"
DS_USER = "<\uff5cUser\uff5c>"
DS_ASSISTANT = "<\uff5cAssistant\uff5c>"

# name -> (conversation rendered, prompt rendered with add_generation_prompt=True)
EXPECTED = {
    "chatml": (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n",
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    ),
    "qwen3": (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n",
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    ),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "mistral": (
        "<s>[INST] You are terse.\n\nHi[/INST] Hello!</s>",
        "<s>[INST] You are terse.\n\nHi[/INST]",
    ),
    "glm4": (
        "[gMASK]<sop><|system|>\nYou are terse.<|user|>\nHi<|assistant|>\nHello!",
        "[gMASK]<sop><|system|>\nYou are terse.<|user|>\nHi<|assistant|>",
    ),
    "deepseek_r1": (
        f"{DS_BOS}You are terse.{DS_USER}Hi{DS_ASSISTANT}Hello!{DS_EOS}",
        f"{DS_BOS}You are terse.{DS_USER}Hi{DS_ASSISTANT}<think>\n",
    ),
}


def test_template_names() -> None:
    assert set(TEMPLATE_NAMES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_two_turn_conversation(name: str) -> None:
    assert render_chat(named_template(name), CONVERSATION) == EXPECTED[name][0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_generation_prompt(name: str) -> None:
    assert render_chat(named_template(name), PROMPT, add_generation_prompt=True) == EXPECTED[name][1]


def test_multi_turn_without_system() -> None:
    messages = [
        {"role": "user", "content": "A"},
        {"role": "assistant", "content": " B "},
        {"role": "user", "content": "C"},
        {"role": "assistant", "content": "D"},
    ]
    assert render_chat(named_template("llama3"), messages) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nA<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nB<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nC<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nD<|eot_id|>"
    )
    assert render_chat(named_template("mistral"), messages) == "<s>[INST] A[/INST] B</s>[INST] C[/INST] D</s>"
    assert render_chat(named_template("deepseek_r1"), messages) == (
        f"{DS_BOS}{DS_USER}A{DS_ASSISTANT} B {DS_EOS}{DS_USER}C{DS_ASSISTANT}D{DS_EOS}"
    )


def test_mistral_puts_the_system_prompt_in_the_last_user_turn() -> None:
    messages = [
        SYSTEM,
        {"role": "user", "content": "A"},
        {"role": "assistant", "content": "B"},
        {"role": "user", "content": "C"},
    ]
    assert (
        render_chat(named_template("mistral"), messages) == "<s>[INST] A[/INST] B</s>[INST] You are terse.\n\nC[/INST]"
    )


def test_mistral_refuses_non_alternating_roles() -> None:
    messages = [{"role": "user", "content": "A"}, {"role": "user", "content": "B"}]
    with pytest.raises(ChatTemplateError, match="alternate"):
        render_chat(named_template("mistral"), messages)


def test_qwen3_reasoning_and_enable_thinking() -> None:
    messages = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>\nold reasoning\n</think>\n\nA1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "<think>\nnew reasoning\n</think>\n\nA2"},
    ]
    assert render_chat(named_template("qwen3"), messages) == (
        "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n<think>\nnew reasoning\n</think>\n\nA2<|im_end|>\n"
    )
    prompt = [{"role": "user", "content": "Q"}]
    assert render_chat(named_template("qwen3"), prompt, add_generation_prompt=True, enable_thinking=False) == (
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_deepseek_r1_drops_reasoning_and_joins_system_prompts() -> None:
    messages = [
        {"role": "system", "content": "S1"},
        {"role": "system", "content": "S2"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "<think>hmm</think>A"},
    ]
    assert render_chat(named_template("deepseek_r1"), messages) == f"{DS_BOS}S1\n\nS2{DS_USER}Q{DS_ASSISTANT}A{DS_EOS}"


def test_glm4_renders_tool_results_as_observations_and_skips_empty_messages() -> None:
    messages = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": ""},
        {"role": "tool", "content": "R"},
    ]
    assert render_chat(named_template("glm4"), messages) == "[gMASK]<sop><|user|>\nQ<|observation|>\nR"


def test_named_templates_refuse_tool_roles_they_do_not_cover() -> None:
    messages = [{"role": "user", "content": "Q"}, {"role": "tool", "content": "R"}]
    for name in ("qwen3", "mistral", "deepseek_r1"):
        with pytest.raises(ChatTemplateError, match="tool"):
            render_chat(named_template(name), messages)


def test_named_template_lookup() -> None:
    assert named_template("deepseek-r1") == named_template("deepseek_r1") == named_template(" DeepSeek_R1 ")
    with pytest.raises(ValueError, match="did you mean `llama3`") as info:
        named_template("llama-3")
    assert "chatml" in str(info.value)
    with pytest.raises(ValueError, match="known"):
        named_template("zzz")


class TestRenderer:
    def test_transformers_conventions(self) -> None:
        source = (
            "{{ bos_token }}{% for m in messages %}\n"
            "    {{ m.role }}:{{ m.content }}\n"
            "{% endfor %}"
            "{% if tools %}{{ tools | tojson }}{% endif %}"
            "{% if add_generation_prompt %}>{% endif %}{{ eos_token }}"
        )
        out = render_chat(
            source,
            [{"role": "user", "content": "x"}],
            add_generation_prompt=True,
            tools=[{"name": "a<b"}],
            bos_token="<s>",
            eos_token="</s>",
        )
        # trim_blocks + lstrip_blocks, and tojson without HTML escaping
        assert out == '<s>    user:x\n[{"name": "a<b"}]></s>'

    def test_extra_variables_and_loop_controls(self) -> None:
        source = (
            "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}{{ flag }}"
        )
        assert (
            render_chat(source, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], flag="!") == "a!"
        )

    def test_generation_tag_is_rendered_as_its_body(self) -> None:
        source = "{% for m in messages %}{% generation %}[{{ m.content }}]{% endgeneration %}{% endfor %}"
        assert render_chat(source, [{"role": "assistant", "content": "x"}]) == "[x]"

    def test_raise_exception(self) -> None:
        with pytest.raises(ChatTemplateError, match="no system allowed"):
            render_chat("{{ raise_exception('no system allowed') }}", [])

    def test_syntax_error(self) -> None:
        with pytest.raises(ChatTemplateError, match="does not compile"):
            render_chat("{% for m in messages %}", [])

    def test_sandbox_forbids_mutation(self) -> None:
        with pytest.raises(ChatTemplateError):
            render_chat("{% set xs = [] %}{{ xs.append(1) }}", [])

    def test_strftime_now_is_available(self) -> None:
        assert len(render_chat("{{ strftime_now('%Y') }}", [])) == 4
