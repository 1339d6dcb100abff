"""Token-level perplexity on a dataset, with the tokens masked the way training masks them.

sft rows: only the assistant tokens of the canonical conversation (exact chat-template masks, as in training);
dpo rows: the assistant tokens of prompt + chosen; grpo rows: the reference answer as the assistant turn;
pt text: every token (BOS/EOS as the tokenizer and the pt pipeline add them). torch is imported inside functions.

Why not transformers' `Trainer.evaluate` over the training collator and exp(eval_loss) (measured on the shared 2-core
development machine; test_ppl_is_the_training_loss_on_one_batch_and_does_not_depend_on_batching in
tests/integration/test_evaluation.py keeps the first two points true):
* it is the same number only when one batch holds every row (tiny random Llama, 64 demo-sft-alpaca rows: 49874.618
  here, 49874.662 from Trainer): same masks, same loss;
* with several batches its eval_loss is the mean of per-batch mean losses, so the result moves with the batch size
  (49807.7 at batch 8 on the tiny model; SmolLM2-135M: 6.055 vs 6.148 here, -1.5%), where exp(total NLL / total
  scored tokens) does not; and it keeps no per-sequence NLL, so no standard error;
* it is slower: 5.8 s vs 4.5 s (tiny, 64 rows, medians of 3), 18.7 s vs 12.4 s (200 rows), 50.4 s vs 27.8 s
  (SmolLM2-135M, 64 rows), batch 8 for both: this loop batches rows of similar length.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory_cli.config.errors import UsageError
from factory_cli.config.schema import DatasetSpec
from factory_cli.evaluation.report import TaskResult

IGNORE_INDEX = -100
DEFAULT_MAX_LENGTH = 2048  # data.max_length's default: score what training would have seen
TOKENS_PER_BATCH = 16384  # padded tokens per forward pass: bounds the logits' memory for long rows
MASKING = {"pt": "all tokens", "sft": "assistant tokens", "dpo": "chosen answer tokens", "grpo": "answer tokens"}


@dataclass(frozen=True)
class PplSource:
    """Which rows `ppl` scores: datasets (job-style specs), how to read them, and the stage when the job says."""

    specs: tuple[DatasetSpec, ...]
    label: str
    dataset_dir: str | None = None
    stage: str | None = None
    base_dirs: tuple[Path, ...] = ()
    max_length: int | None = None


@dataclass
class PplRows:
    """Canonical rows to score, each with its stage, and what was read / skipped."""

    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    read: int = 0
    invalid: int = 0
    first_error: str | None = None


def _stage_of(raw: dict[str, Any], entry: Any) -> str:
    """A dataset's stage from its registry entry, else told from the layout of its first row."""
    from factory_cli.data.formats import RowError, detect_format

    if entry.stage is not None:
        return str(entry.stage)
    probe = dict(raw)
    for ours, theirs in entry.columns.items():
        if theirs and theirs in raw:
            probe.setdefault(ours, raw[theirs])
    fmt = entry.format
    if fmt == "auto":
        try:
            fmt = detect_format(probe, "sft")
        except RowError as exc:
            raise UsageError(
                f"ppl: {exc.message}", "give a dataset of text, conversations or preference pairs"
            ) from None
    if fmt == "text":
        return "pt"
    if fmt == "preference" or entry.ranking:
        return "dpo"
    return "grpo" if fmt == "rl" else "sft"


def load_ppl_rows(source: PplSource, limit: int | None) -> PplRows:
    """Read and convert the source's rows (at most `limit` valid rows in all), counting the invalid ones."""
    from factory_cli.data.formats import RowError, convert_row
    from factory_cli.data.sources import raw_rows, resolve_dataset

    out = PplRows()
    for spec in source.specs:
        if limit is not None and len(out.rows) >= limit:
            break
        resolved = resolve_dataset(spec, source.dataset_dir, source.base_dirs)
        stage: str | None = source.stage
        hint = "give a local file (json, jsonl, csv or parquet) with --dataset"
        for _, raw in raw_rows(resolved.entry, spec.max_samples, hint=hint):
            if limit is not None and len(out.rows) >= limit:
                break
            stage = stage or _stage_of(raw, resolved.entry)
            out.read += 1
            try:
                row = convert_row(raw, resolved.format_spec, stage)
            except RowError as exc:
                out.invalid += 1
                out.first_error = out.first_error or f"{resolved.label}: {exc.message}"
                continue
            if stage == "grpo" and not row.get("answer"):
                out.invalid += 1
                out.first_error = out.first_error or f"{resolved.label}: a prompt without an answer to score"
                continue
            out.rows.append((stage, row))
    if not out.rows:
        detail = f" (first problem: {out.first_error})" if out.first_error else ""
        raise UsageError(f"ppl: no usable rows in {source.label}{detail}", "check the dataset's format and columns")
    return out


def _conversation(stage: str, row: dict[str, Any]) -> list[dict[str, Any]]:
    if stage == "sft":
        return list(row["messages"])
    if stage == "dpo":
        return list(row["prompt"]) + list(row["chosen"])
    return [*row["prompt"], {"role": "assistant", "content": str(row["answer"])}]


def encode_rows(
    rows: Sequence[tuple[str, dict[str, Any]]], tokenizer: Any, template: str | None, max_length: int
) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per row, truncated to `max_length` (the start kept); labels -100 where not scored."""
    from factory_cli.data.chat_templates import ChatTemplateError
    from factory_cli.data.masking import ConversationEncoder

    encoder = ConversationEncoder(tokenizer, template) if template else None
    encoded: list[tuple[list[int], list[int]]] = []
    for stage, row in rows:
        if stage == "pt":
            ids = list(tokenizer(row["text"], add_special_tokens=True)["input_ids"])
            eos = tokenizer.eos_token_id
            if eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
            labels = list(ids)
        else:
            if encoder is None:
                raise UsageError(
                    "ppl on conversations needs a chat template, and this model's tokenizer has none",
                    "evaluate a model with a chat template, or score plain text (--dataset demo-pt)",
                )
            try:
                all_ids, all_labels = encoder.encode_batch([_conversation(stage, row)], [row.get("tools")])
            except (ChatTemplateError, ValueError, TypeError) as exc:
                raise UsageError(f"ppl: the chat template refused a row: {exc}", "check the model's template") from None
            ids, labels = all_ids[0], all_labels[0]
        encoded.append((ids[:max_length], labels[:max_length]))
    return encoded


def perplexity_stats(nll_sums: Sequence[float], counts: Sequence[int]) -> tuple[float, float | None, float]:
    """(ppl, its stderr, mean token NLL) from per-sequence NLL sums S_i over n_i scored tokens.

    L = sum(S_i) / sum(n_i) is the mean token NLL and ppl = exp(L). L is the token-weighted mean of the per-sequence
    mean NLLs m_i = S_i / n_i, a ratio estimator; by the delta method (linearising the ratio)
    Var(L) ~= N / (N - 1) * sum(n_i^2 * (m_i - L)^2) / (sum(n_i))^2 over the N sequences, and with d exp(L)/dL =
    exp(L): stderr(ppl) ~= ppl * sqrt(Var(L)). No stderr for a single sequence.
    """
    total_tokens = sum(counts)
    if total_tokens == 0:
        raise UsageError("ppl: no tokens to score", "the rows have no assistant tokens within max_length")
    mean_nll = sum(nll_sums) / total_tokens
    ppl = math.exp(mean_nll) if mean_nll < 700 else math.inf
    size = len(counts)
    if size < 2:
        return ppl, None, mean_nll
    spread = sum(n * n * (s / n - mean_nll) ** 2 for s, n in zip(nll_sums, counts, strict=True) if n > 0)
    variance = size / (size - 1) * spread / total_tokens**2
    return ppl, ppl * math.sqrt(variance), mean_nll


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int = TOKENS_PER_BATCH) -> list[list[int]]:
    """Indices grouped longest first: at most `batch_size` rows and, beyond one row, `max_tokens` padded tokens."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):  # similar lengths share a batch
        current = batches[-1] if batches else None
        if current and len(current) < batch_size and (len(current) + 1) * lengths[current[0]] <= max_tokens:
            current.append(i)
        else:
            batches.append([i])
    return batches


def sequence_nlls(
    model: Any,
    sequences: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    batch_size: int,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[float], list[int]]:
    """Per sequence: summed NLL of its scored tokens and their count; batched, right-padded forward passes."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    batches = length_batches([len(ids) for ids, _ in sequences], batch_size)
    sums, counts = [0.0] * len(sequences), [0] * len(sequences)
    done = 0
    with torch.inference_mode():
        for batch in batches:
            width = len(sequences[batch[0]][0])
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                seq_ids, seq_labels = sequences[i]
                ids[row, : len(seq_ids)] = torch.tensor(seq_ids)
                labels[row, : len(seq_labels)] = torch.tensor(seq_labels)
                mask[row, : len(seq_ids)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            targets = labels[:, 1:].to(device)
            for row, i in enumerate(batch):
                nll = F.cross_entropy(
                    logits[row, :-1].float(), targets[row], ignore_index=IGNORE_INDEX, reduction="sum"
                )
                sums[i] = float(nll)
                counts[i] = int((targets[row] != IGNORE_INDEX).sum())
            del logits
            done += len(batch)
            if progress is not None:
                progress(f"ppl: {done}/{len(sequences)} sequences")
    return sums, counts


def evaluate_perplexity(
    loaded: Any,
    source: PplSource,
    template: str | None,
    *,
    limit: int | None,
    batch_size: int,
    progress: Callable[[str], None] | None = None,
    rows: PplRows | None = None,
) -> TaskResult:
    """The `ppl` task on a loaded model: exp(total NLL / total scored tokens), with a delta-method stderr.

    `rows` (from load_ppl_rows) lets two compared models score the very same rows; read from `source` if absent.
    """
    started = time.perf_counter()
    data = rows if rows is not None else load_ppl_rows(source, limit)
    config = getattr(loaded.model, "config", None)
    positions = getattr(config, "max_position_embeddings", None) or DEFAULT_MAX_LENGTH
    max_length = min(source.max_length or DEFAULT_MAX_LENGTH, int(positions))
    sequences = encode_rows(data.rows, loaded.tokenizer, template, max_length)
    scored = [i for i, (_, labels) in enumerate(sequences) if any(x != IGNORE_INDEX for x in labels[1:])]
    if not scored:
        raise UsageError(f"ppl: no row of {source.label} has a token to score", "check the data (assistant turns?)")
    pad_id = loaded.tokenizer.pad_token_id
    pad_id = pad_id if pad_id is not None else (loaded.tokenizer.eos_token_id or 0)
    sums, counts = sequence_nlls(loaded.model, [sequences[i] for i in scored], pad_id, batch_size, progress)
    ppl, stderr, mean_nll = perplexity_stats(sums, counts)
    stages = sorted({stage for stage, _ in data.rows})
    return TaskResult(
        task="ppl",
        metric="perplexity",
        value=ppl,
        stderr=stderr,
        n=len(scored),
        seconds=time.perf_counter() - started,
        higher_is_better=False,
        details={
            "dataset": source.label,
            "masking": ", ".join(f"{s}: {MASKING[s]}" for s in stages),
            "tokens": sum(counts),
            "mean_nll": mean_nll,
            "rows_read": data.read,
            "rows_invalid": data.invalid,
            "rows_without_scored_tokens": len(sequences) - len(scored),
            "max_length": max_length,
        },
    )
