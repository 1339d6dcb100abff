"""Prompts for generation: a conversation rendered by the tokenizer's `apply_chat_template`, generation prompt added.

The tokenizer's own chat template is the one used; a named template (factory_cli/data/chat_templates.py) stands in
only for a tokenizer that has none. The template writes the special tokens (BOS, turn markers), so the rendered text
is tokenized without adding them again, as `apply_chat_template(tokenize=True)` does.
"""

from __future__ import annotations

from typing import Any


def prompt_template(tokenizer: Any, fallback: str | None = None) -> str | None:
    """The Jinja source prompts are rendered with: the tokenizer's own chat template, else the named `fallback`
    template (chatml, llama3, ...), else None (no chat template: plain text)."""
    from factory_cli.data.chat_templates import named_template
    from factory_cli.data.masking import tokenizer_chat_template

    own = tokenizer_chat_template(tokenizer)
    if own is not None:
        return own
    return named_template(fallback) if fallback else None


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]], template: str) -> str:
    """`messages` and the generation prompt as text, rendered by `tokenizer.apply_chat_template` with `template`."""
    return str(
        tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)
    )


def encode_prompt(
    tokenizer: Any, messages: list[dict[str, Any]], template: str | None, *, plain_text: str | None = None
) -> list[int]:
    """Token ids of a prompt: `messages` rendered with `template` (see `prompt_template`); without a template,
    `plain_text` (default: the user turns, one per line) with the special tokens the tokenizer adds to plain text."""
    if template is not None:
        return list(tokenizer(render_prompt(tokenizer, messages, template), add_special_tokens=False)["input_ids"])
    if plain_text is None:
        plain_text = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    return list(tokenizer(plain_text)["input_ids"])
