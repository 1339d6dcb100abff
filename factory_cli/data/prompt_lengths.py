"""How many rows training would drop because their prompt alone fills the length limit, counted by `factory check`
before any GPU time is spent (config/checks.py).

At train time these rows are dropped: sft rows with no assistant token within `data.max_length`
(data/pipeline.py `REASON_NO_ASSISTANT`), grpo prompts longer than `grpo.max_prompt_length`
(`REASON_LONG_PROMPT`), and dpo pairs whose prompt fills `data.max_length` (TRL's DPOTrainer drops them under its
default `keep_start` truncation). A dataset where every row is dropped trains nothing.

Check must not import transformers (or torch), so it cannot render the chat template: it tokenizes the prompt's
message contents with the Rust `tokenizers` library from the model's own tokenizer.json. The template only adds
tokens, so the count is a lower bound: a row counted here is dropped at train time.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIRST_CHARS_PER_TOKEN = 4  # first try: tokenize limit x this many characters (English runs ~4 characters a token)
CHECK_SECONDS = 2.0  # tokenizing stops after this long; the rows left unmeasured make the count a sample
BATCH = 64


@dataclass(frozen=True)
class PromptLengths:
    """Of `checked` rows (the first of those given), `dropped` have a prompt of at least `limit` tokens (more than,
    for grpo); `first` is the index of the first of them."""

    checked: int
    dropped: int
    limit: int
    first: int | None


@functools.cache
def _load(tokenizer_json: str) -> tuple[Any, int]:
    """The tokenizer and the length of its longest token in characters (no token covers more of a text)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(tokenizer_json)
    return tokenizer, max((len(token) for token in tokenizer.get_vocab()), default=1)


def find_tokenizer_json(folder: Path | None) -> Path | None:
    """The fast tokenizer file of a model or tokenizer folder, when there is one."""
    if folder is None or not folder.is_dir():
        return None
    candidate = folder / "tokenizer.json"
    return candidate if candidate.is_file() else None


def prompt_text(row: dict[str, Any], stage: str) -> str:
    """The message contents a canonical row's prompt is made of: sft, the messages before the first assistant
    message; dpo and grpo, the `prompt` messages."""
    if stage == "sft":
        messages = row.get("messages") or []
        upto = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
        messages = messages[:upto]
    else:
        messages = row.get("prompt") or []
    return "\n".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))


def count_long_prompts(
    tokenizer_json: Path, rows: Sequence[dict[str, Any]], stage: str, limit: int, strict: bool
) -> PromptLengths:
    """Count the rows whose prompt has at least `limit` tokens (`strict`: more than `limit`, as grpo's prompt limit
    is), measuring as little as decides it: a prompt of fewer UTF-8 bytes than the limit is short (no token is less
    than a byte), one of at least limit x the longest token's characters is long; the others are tokenized, first a
    prefix of limit x FIRST_CHARS_PER_TOKEN characters, then of limit x the longest token, for at most
    CHECK_SECONDS (the rows measured by then are the count's `checked`)."""
    tokenizer, longest = _load(str(tokenizer_json))
    need = limit + 1 if strict else limit
    started = time.perf_counter()
    dropped: list[int] = []
    checked = 0
    for start in range(0, len(rows), BATCH):
        if time.perf_counter() - started > CHECK_SECONDS:
            break
        texts = [prompt_text(row, stage) for row in rows[start : start + BATCH]]
        long = [_decided_by_size(text, need, longest) for text in texts]
        for cut in (need * FIRST_CHARS_PER_TOKEN, need * longest):
            undecided = [j for j, known in enumerate(long) if known is None]
            if not undecided:
                break
            encodings = tokenizer.encode_batch([texts[j][:cut] for j in undecided], add_special_tokens=False)
            for j, encoding in zip(undecided, encodings, strict=True):
                if len(encoding.ids) >= need:
                    long[j] = True
                elif len(texts[j]) <= cut:  # measured whole
                    long[j] = False
        dropped += [start + j for j, known in enumerate(long) if known]
        checked = min(len(rows), start + BATCH)
    return PromptLengths(checked, len(dropped), limit, dropped[0] if dropped else None)


def _decided_by_size(text: str, need: int, longest: int) -> bool | None:
    """True / False when the text's size alone says it has at least `need` tokens or fewer; None when it must be
    tokenized."""
    if len(text.encode("utf-8")) < need:
        return False
    return True if len(text) >= need * longest else None
