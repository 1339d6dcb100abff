"""Encoding batches of canonical rows: render (chat template) and tokenize, in this process or in worker processes,
a bounded number of batches at a time (docs/architecture.md §8).

`encode_batches` takes an iterator of row batches and yields, in the same order, each batch's per-row lengths,
supervised token counts and template errors, with the token columns (pt: input_ids; sft: input_ids, labels) already as
an Arrow record batch: workers send Arrow buffers back, not Python lists, and the caller writes them to disk as they
come. At most `IN_FLIGHT_PER_WORKER` batches per worker are read ahead, so memory holds a few batches, never the corpus.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from factory_cli.config.schema import JobBase
from factory_cli.data.chat_render import render_chat
from factory_cli.data.chat_templates import ChatTemplateError
from factory_cli.data.masking import IGNORE_INDEX, ConversationEncoder

# Per-row results of encoding besides the token columns: length before truncation, supervised tokens, error.
LEN, SUP, ERR = "length", "supervised", "error"
TOKEN_COLUMNS = {"pt": ("input_ids",), "sft": ("input_ids", "labels")}
IN_FLIGHT_PER_WORKER = 2


class StageEncoder:
    """Renders and tokenizes batches of one stage's canonical rows; the same code runs in-process and in workers.

    `render` is the Python half (chat templates), `tokenize` the Rust half (one batched fast-tokenizer call), so the
    in-process loop can tokenize one batch in a thread while it renders the next.
    """

    def __init__(self, job: JobBase, tokenizer: Any, chat_template: str | None) -> None:
        self.stage = job.stage
        self.tokenizer = tokenizer
        self.template = chat_template or ""
        self.max_length = job.data.max_length
        self.bos = tokenizer.bos_token if isinstance(tokenizer.bos_token, str) else ""
        self.eos = tokenizer.eos_token if isinstance(tokenizer.eos_token, str) else ""
        self.conversation = (
            ConversationEncoder(tokenizer, self.template, job.data.train_on_prompt) if job.stage == "sft" else None
        )

    def _ids(self, texts: list[str], special: bool) -> list[list[int]]:
        """Token ids of each text: straight from the Rust tokenizer (no offsets, no Python encodings) when the call
        through Transformers would be set up the same way (no truncation, no padding, same special-token split)."""
        backend = getattr(self.tokenizer, "_tokenizer", None)
        if (
            backend is not None
            and hasattr(backend, "encode_batch_fast")
            and backend.truncation is None
            and backend.padding is None
            and backend.encode_special_tokens == bool(getattr(self.tokenizer, "split_special_tokens", False))
        ):
            return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=special)]
        ids: list[list[int]] = self.tokenizer(texts, add_special_tokens=special, return_attention_mask=False)[
            "input_ids"
        ]
        return ids

    def _chat(self, messages: list[dict[str, Any]], generation: bool) -> str:
        return render_chat(
            self.template, messages, add_generation_prompt=generation, bos_token=self.bos, eos_token=self.eos
        )

    def render(self, rows: list[dict[str, Any]]) -> Rendered:
        """Texts to tokenize (per row: 1, or 2 for dpo) and the rows the template refused."""
        rendered = Rendered(size=len(rows))
        for j, row in enumerate(rows):
            try:
                if self.stage == "pt":
                    texts = [row["text"]]
                elif self.stage == "sft":
                    assert self.conversation is not None
                    text, spans = self.conversation.render(row["messages"], row.get("tools"))
                    texts = [text]
                    rendered.spans.append(spans)
                elif self.stage == "dpo":
                    texts = [self._chat(row["prompt"] + row[side], False) for side in ("chosen", "rejected")]
                else:
                    texts = [self._chat(row["prompt"], True)]
            except (ChatTemplateError, ValueError, TypeError) as exc:  # the template refused or choked on this row
                rendered.errors[j] = str(exc)
                continue
            rendered.texts.extend(texts)
            rendered.rows.append(j)
        return rendered

    def tokenize(self, rendered: Rendered) -> dict[str, list[Any]]:
        """Per row: input_ids / labels (pt, sft), token length before truncation, supervised tokens, error."""
        size = rendered.size
        lengths, supervised = [0] * size, [0] * size
        out: dict[str, list[Any]] = {LEN: lengths, SUP: supervised, ERR: rendered.errors}
        if not rendered.texts:
            if self.stage in ("pt", "sft"):
                out["input_ids"] = [None] * size
                out["labels"] = [None] * size
            return out
        if self.stage == "sft":
            assert self.conversation is not None
            all_ids, all_labels = self.conversation.encode_texts(rendered.texts, rendered.spans)
            input_ids: list[Any] = [None] * size
            labels: list[Any] = [None] * size
            for j, ids, row_labels in zip(rendered.rows, all_ids, all_labels, strict=True):
                lengths[j] = len(ids)
                if len(ids) > self.max_length:  # keep the start
                    ids, row_labels = ids[: self.max_length], row_labels[: self.max_length]
                input_ids[j], labels[j] = ids, row_labels
                supervised[j] = len(row_labels) - row_labels.count(IGNORE_INDEX)
            out["input_ids"], out["labels"] = input_ids, labels
            return out
        # pt: the tokenizer's own special tokens (BOS where the model expects one) + EOS; dpo/grpo: rendered text as is
        encoded = self._ids(rendered.texts, special=self.stage == "pt")
        if self.stage == "pt":
            input_ids = [None] * size
            eos = self.tokenizer.eos_token_id
            for j, ids in zip(rendered.rows, encoded, strict=True):
                if eos is not None and (not ids or ids[-1] != eos):
                    ids.append(eos)
                input_ids[j], lengths[j] = ids, len(ids)
            out["input_ids"] = input_ids
        elif self.stage == "dpo":
            for n, j in enumerate(rendered.rows):
                lengths[j] = max(len(encoded[2 * n]), len(encoded[2 * n + 1]))
        else:
            for j, ids in zip(rendered.rows, encoded, strict=True):
                lengths[j] = len(ids)
        return out


@dataclass
class Rendered:
    size: int
    texts: list[str] = field(default_factory=list)
    spans: list[list[tuple[int, int]]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # the batch rows that have texts, in order
    errors: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.errors = [None] * self.size


@dataclass
class EncodedBatch:
    """One encoded batch: per row its token length (before truncation), supervised tokens and template error (None
    when it rendered), and for pt / sft the token columns as Arrow (a null where the row failed)."""

    lengths: list[int]
    supervised: list[int]
    errors: list[str | None]
    tokens: Any = None  # pyarrow.RecordBatch, or None for dpo / grpo

    @property
    def size(self) -> int:
        return len(self.errors)


def token_schema(stage: str) -> Any:
    """The Arrow schema of a stage's token columns (int64 lists, as the engines' collators take them)."""
    import pyarrow as pa

    return pa.schema([(name, pa.list_(pa.int64())) for name in TOKEN_COLUMNS[stage]])


def encode_rows(encoder: StageEncoder, rows: list[dict[str, Any]]) -> EncodedBatch:
    """Render, tokenize and arrange one batch (what a worker process runs)."""
    return _arrange(encoder.stage, encoder.tokenize(encoder.render(rows)))


def _arrange(stage: str, out: dict[str, list[Any]]) -> EncodedBatch:
    tokens = None
    if stage in TOKEN_COLUMNS:
        import pyarrow as pa

        schema = token_schema(stage)
        arrays = [pa.array(out[name], type=schema.field(name).type) for name in TOKEN_COLUMNS[stage]]
        tokens = pa.RecordBatch.from_arrays(arrays, schema=schema)
    return EncodedBatch(lengths=out[LEN], supervised=out[SUP], errors=out[ERR], tokens=tokens)


_WORKER: StageEncoder | None = None


def _worker_init(encoder: StageEncoder) -> None:
    global _WORKER
    _WORKER = encoder


def _worker_encode(rows: list[dict[str, Any]]) -> EncodedBatch:
    assert _WORKER is not None
    return encode_rows(_WORKER, rows)


def encode_batches(
    encoder: StageEncoder, batches: Iterator[list[dict[str, Any]]], workers: int
) -> Iterator[EncodedBatch]:
    """Every batch encoded, in order: in worker processes (from a second batch on), or here with tokenization
    overlapping rendering. Reads at most a few batches ahead of what the caller has taken."""
    first = next(batches, None)
    if first is None:
        return
    second = next(batches, None)
    if second is None:
        yield encode_rows(encoder, first)
        return
    pending = _chain(first, second, batches)
    if workers > 1:
        yield from _encode_in_workers(encoder, pending, workers)
    else:
        yield from _encode_here(encoder, pending)


def _chain(
    first: list[dict[str, Any]], second: list[dict[str, Any]], rest: Iterator[list[dict[str, Any]]]
) -> Iterator[list[dict[str, Any]]]:
    yield first
    yield second
    yield from rest


def _encode_here(encoder: StageEncoder, batches: Iterator[list[dict[str, Any]]]) -> Iterator[EncodedBatch]:
    from concurrent.futures import Future, ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as tokenizing:
        pending: Future[dict[str, list[Any]]] | None = None
        for batch in batches:
            rendered = encoder.render(batch)
            if pending is not None:
                yield _arrange(encoder.stage, pending.result())
            pending = tokenizing.submit(encoder.tokenize, rendered)
        if pending is not None:
            yield _arrange(encoder.stage, pending.result())


def _encode_in_workers(
    encoder: StageEncoder, batches: Iterator[list[dict[str, Any]]], workers: int
) -> Iterator[EncodedBatch]:
    import multiprocessing
    import os

    # Workers start from a fork server, not a fork of this process: a fork copies the locks that this process's other
    # threads (the tokenizer's Rust pool, torch's, a thread pool of the in-process path) hold at that moment, and a
    # worker that inherits one held deadlocks on its first tokenize. The encoder reaches each worker pickled.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else None
    context = multiprocessing.get_context(method)
    # Workers must not use the Rust thread pool of the parent's tokenizer (tokenizers would warn).
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        with context.Pool(workers, initializer=_worker_init, initargs=(encoder,)) as pool:
            in_flight: deque[Any] = deque()
            for batch in batches:
                in_flight.append(pool.apply_async(_worker_encode, (batch,)))
                if len(in_flight) >= IN_FLIGHT_PER_WORKER * workers:
                    yield in_flight.popleft().get()
            while in_flight:
                yield in_flight.popleft().get()
    finally:
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
