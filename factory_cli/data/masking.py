"""Chat templates with an exact assistant mask: the tokens of a conversation the model learns (docs/architecture.md §8).

A conversation is rendered with its chat template once, the assistant turns are found as character spans of that
text, and the text is tokenized once with the fast tokenizer; a token is supervised when its characters overlap an
assistant span. An assistant span is what the model has to generate after the generation prompt: the turn's text
(e.g. Qwen3's `<think>` block, Mistral's leading space) up to and including the end-of-turn marker the template
writes after it (`<|im_end|>`, `<|eot_id|>`, `</s>`, ...), without the whitespace that follows the marker.
Templates that write no end-of-turn marker (GLM-4) get the next turn's opening special token (`<|user|>`, GLM's stop
token) supervised, and the tokenizer's EOS appended and supervised after the final turn, so the model learns to stop.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from factory_cli.data.chat_render import render_chat
from factory_cli.data.chat_templates import named_template

IGNORE_INDEX = -100
TEMPLATE_SUFFIXES = (".jinja", ".j2")

Span = tuple[int, int]


def tokenizer_chat_template(tokenizer: Any) -> str | None:
    """The tokenizer's own chat template source (the default one when it has several), or None."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default") or next(iter(template.values()), None)
    return template if isinstance(template, str) and template.strip() else None


def resolve_chat_template(
    template: str, tokenizer: Any, registry_template: str | None, base_dirs: Sequence[Path] = ()
) -> str | None:
    """`model.template` -> Jinja source: auto (tokenizer's own, else the registry's), tokenizer, a name or a file."""
    own = tokenizer_chat_template(tokenizer)
    if template == "auto":
        if own is not None:
            return own
        return named_template(registry_template) if registry_template else None
    if template == "tokenizer":
        if own is None:
            raise ValueError(
                "model.template is `tokenizer` but the tokenizer has no chat template; "
                "give a template name (chatml, llama3, ...) or a .jinja file"
            )
        return own
    if template.endswith(TEMPLATE_SUFFIXES):
        from factory_cli.data.sources import find_local_path

        path = find_local_path(template, base_dirs)
        if path is None or not path.is_file():
            raise ValueError(f"chat template file not found: {template}")
        return path.read_text(encoding="utf-8")
    return named_template(template)


def _special_token_strings(tokenizer: Any) -> tuple[str, ...]:
    """Text of the tokenizer's special tokens, longest first (to recognise a turn opener such as `<|user|>`)."""
    found: set[str] = set()
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    for token in decoder.values():
        if getattr(token, "special", False) and str(token):
            found.add(str(getattr(token, "content", token)))
    for name in ("bos_token", "eos_token"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, str) and value:
            found.add(value)
    return tuple(sorted(found, key=len, reverse=True))


def _content_variants(content: str) -> list[str]:
    """Ways a template may have written a message's content: as is, trimmed, or with its reasoning cut off."""
    variants = [content, content.strip()]
    if "</think>" in content:
        answer = content.split("</think>")[-1]
        variants += [answer, answer.lstrip("\n"), answer.strip()]
    unique: list[str] = []
    for variant in variants:
        if variant and variant not in unique:
            unique.append(variant)
    return unique


def _find_content(text: str, content: str, start: int) -> Span | None:
    """The earliest occurrence (from `start`) of any written form of `content` in `text`, longest on ties."""
    best: Span | None = None
    for variant in _content_variants(content):
        pos = text.find(variant, start)
        if pos >= 0 and (best is None or pos < best[0] or (pos == best[0] and pos + len(variant) > best[1])):
            best = (pos, pos + len(variant))
    return best


def _ends_with_content(text: str, content: str) -> bool:
    return any(text.endswith(variant) for variant in _content_variants(content))


class ConversationEncoder:
    """Renders, masks and tokenizes conversations for one tokenizer + chat template (reuse it across rows)."""

    def __init__(self, tokenizer: Any, template: str, train_on_prompt: bool = False) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.train_on_prompt = train_on_prompt
        self.bos_token = tokenizer.bos_token if isinstance(tokenizer.bos_token, str) else ""
        self.eos_token = tokenizer.eos_token if isinstance(tokenizer.eos_token, str) else ""
        self.specials = _special_token_strings(tokenizer)

    def _render(self, messages: list[dict[str, Any]], tools: Any, add_generation_prompt: bool = False) -> str:
        return render_chat(
            self.template,
            messages,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def render(self, messages: list[dict[str, Any]], tools: Any = None) -> tuple[str, list[Span]]:
        """The conversation's text (EOS appended when the template ends without a marker) and assistant spans."""
        tools = json.loads(tools) if isinstance(tools, str) else tools
        full = self._render(messages, tools)
        # Incremental rendering: for assistant turn i, its own render minus the generation prompt before it.
        uptos: dict[int, str] = {}
        turns: dict[int, tuple[int, str]] = {}  # assistant index -> (start, turn text) in its own render
        incremental = True
        for i, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            prefix = self._render(messages[:i], tools, add_generation_prompt=True)
            upto = full if i == len(messages) - 1 else self._render(messages[: i + 1], tools)
            uptos[i] = upto
            if upto.startswith(prefix):
                turns[i] = (len(prefix), upto[len(prefix) :])
                incremental = incremental and full.startswith(upto)
            else:
                incremental = False
        spans: list[Span] = []
        cursor = 0
        for i, message in enumerate(messages):
            role = message.get("role")
            content = message.get("content")
            content = content if isinstance(content, str) else ""
            if role == "system" or (incremental and role != "assistant"):
                continue  # some templates move the system prompt (Mistral: into the last user turn)
            if role != "assistant":
                found = _find_content(full, content, cursor) if content else None
                cursor = found[1] if found is not None else cursor
                continue
            span = self._turn_span(full, turns.get(i), content, cursor, incremental)
            if span is None and content:
                span = self._content_span(full, uptos[i], content, cursor)
            if span is not None:
                if span[1] > len(full):  # the EOS appended after a final turn that has no end-of-turn marker
                    full += self.eos_token
                spans.append(span)
                cursor = span[1]
        return full, spans

    def _turn_span(
        self, full: str, turn: tuple[int, str] | None, content: str, cursor: int, incremental: bool
    ) -> Span | None:
        """Span of a turn's own text (generation prompt excluded) in the full text, where the full text has it."""
        if turn is None:
            return None
        start, text = turn
        stripped = text.rstrip()
        if not stripped:
            return None
        if not incremental:  # earlier turns may render differently once later turns follow (Qwen3 think blocks)
            start = full.find(stripped, cursor)
            if start < 0:
                return None
        end = start + len(stripped)
        if content and _ends_with_content(stripped, content):  # no end-of-turn marker after the content
            end = self._no_marker_end(full, start + len(text), end)
        return start, end

    def _content_span(self, full: str, upto: str, content: str, cursor: int) -> Span | None:
        """Span of a turn located by its content, plus the end-of-turn marker its own render puts after it."""
        found = _find_content(full, content, cursor)
        if found is None:
            return None
        start, end = found
        marker = ""
        tail = upto.rstrip()
        for variant in _content_variants(content):
            pos = tail.rfind(variant)
            if pos >= 0:
                marker = tail[pos + len(variant) :]
                break
        if not marker:
            return start, self._no_marker_end(full, end, end)
        return start, end + len(marker) if full.startswith(marker, end) else end

    def _no_marker_end(self, full: str, after: int, end: int) -> int:
        """Span end for a turn with no end-of-turn marker: through the next special token, or an appended EOS."""
        for token in self.specials:
            if full.startswith(token, after):
                return after + len(token)
        if after >= len(full) and self.eos_token:
            return len(full) + len(self.eos_token)
        return end

    def encode_texts(self, texts: list[str], spans: list[list[Span]]) -> tuple[list[list[int]], list[list[int]]]:
        """Tokenize rendered texts in one batch and label the tokens that overlap their spans."""
        batch = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)
        all_ids: list[list[int]] = batch["input_ids"]
        if self.train_on_prompt:
            return all_ids, [list(ids) for ids in all_ids]
        encodings = batch.encodings
        all_labels: list[list[int]] = []
        for ids, encoding, row_spans in zip(all_ids, encodings, spans, strict=True):
            labels = [IGNORE_INDEX] * len(ids)
            offsets = None
            for start, end in row_spans:
                if end <= start:
                    continue
                first = encoding.char_to_token(start)
                last = encoding.char_to_token(end - 1)
                if first is None or last is None:  # characters no token covers: search the offsets instead
                    if offsets is None:
                        offsets = encoding.offsets
                    first = bisect_right([o[1] for o in offsets], start)
                    last = bisect_left([o[0] for o in offsets], end) - 1
                else:  # the last character may be split over several tokens (a byte-level vocabulary's bytes)
                    while (chars := encoding.token_to_chars(last + 1)) is not None and chars[0] < end:
                        last += 1
                if last >= first:
                    labels[first : last + 1] = ids[first : last + 1]
            all_labels.append(labels)
        return all_ids, all_labels

    def encode_batch(
        self, conversations: Sequence[list[dict[str, Any]]], tools: Sequence[Any] | None = None
    ) -> tuple[list[list[int]], list[list[int]]]:
        """(input_ids, labels) for each conversation; raises ChatTemplateError if the template refuses one."""
        texts: list[str] = []
        spans: list[list[Span]] = []
        for i, messages in enumerate(conversations):
            text, row_spans = self.render(messages, tools[i] if tools is not None else None)
            texts.append(text)
            spans.append(row_spans)
        return self.encode_texts(texts, spans)


def tokenize_conversation(
    tokenizer: Any, template: str, messages: list[dict[str, Any]], tools: Any = None, train_on_prompt: bool = False
) -> tuple[list[int], list[int]]:
    """(input_ids, labels): labels are -100 except on assistant turns (all tokens when train_on_prompt)."""
    ids, labels = ConversationEncoder(tokenizer, template, train_on_prompt).encode_batch([messages], [tools])
    return ids[0], labels[0]
