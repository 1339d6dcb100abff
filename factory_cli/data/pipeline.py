"""Training data, end to end: read -> convert -> tokenize -> mask -> mix -> split -> pack, cached by content hash.

One call, `prepare_data`, turns a job's `data` section into `datasets.Dataset`s saved on disk in the shape the stage's
engine takes as is (docs/architecture.md §8):

* pt   `input_ids` (+ `seq_lengths` when packed): every document + EOS, packed with TRL's best-fit-decreasing packer
       splitting long documents (no token lost), or cut into max_length chunks when not packed;
* sft  `input_ids`, `labels` (+ `seq_lengths`): the chat template's text with labels only on assistant turns
       (`data/masking.py`), truncated to max_length keeping the start, optionally packed;
* dpo  `prompt`, `chosen`, `rejected` conversations, tokenized later by TRL's DPOTrainer with the same template;
* grpo `prompt` conversations plus the row's other fields (answer, data_source, ...) for the reward functions.

Nothing is dropped without a count: every dataset gets a report line with its invalid rows (file and row number of
the first few), truncated rows and dropped rows with the reason. datasets / trl are imported inside functions.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from factory_cli.cache import cache_root as factory_cache_root
from factory_cli.config.errors import UsageError
from factory_cli.config.schema import DatasetSpec, JobBase
from factory_cli.data import cache
from factory_cli.data.chat_render import render_chat
from factory_cli.data.chat_templates import ChatTemplateError
from factory_cli.data.formats import RowError, convert_row
from factory_cli.data.masking import IGNORE_INDEX, ConversationEncoder
from factory_cli.data.readers import ReadError
from factory_cli.data.sources import DatasetNotFound, ResolvedDataset, raw_rows, resolve_dataset

MAX_INVALID_EXAMPLES = 5
ENCODE_BATCH = 1000
PACK_BATCH = 10_000
CHAT_STAGES = ("sft", "dpo", "grpo")
REASON_NO_ASSISTANT = "no assistant token within max_length"
REASON_LONG_PROMPT = "prompt longer than grpo.max_prompt_length"
# Per-row results of encoding besides the token columns: length before truncation, supervised tokens, error.
LEN, SUP, ERR = "length", "supervised", "error"


class DataError(UsageError):
    """Data that cannot become a training set (an empty or wholly invalid dataset, a source out of reach)."""


@dataclass
class DatasetReport:
    """What happened to one input dataset's rows."""

    label: str
    rows: int = 0
    converted: int = 0
    invalid: int = 0
    invalid_examples: list[str] = field(default_factory=list)
    truncated: int = 0
    dropped: int = 0
    dropped_reasons: dict[str, int] = field(default_factory=dict)
    tokens: int = 0
    supervised_tokens: int = 0
    role: str = "train"  # train or eval: which set the dataset feeds
    long_documents: int = 0  # pt: documents longer than max_length, split into several sequences (no token lost)

    @property
    def used(self) -> int:
        return self.converted - self.dropped

    def add_invalid(self, where: str, message: str) -> None:
        """Count one invalid row, keeping the first few messages for the report."""
        self.invalid += 1
        if len(self.invalid_examples) < MAX_INVALID_EXAMPLES:
            self.invalid_examples.append(f"{where}: {message}")

    def line(self) -> str:
        """One human line: rows, used, invalid (first example), truncated, dropped, tokens."""
        name = f"{self.label} (eval)" if self.role == "eval" else self.label
        parts = [f"{self.rows} rows", f"{self.used} used"]
        if self.invalid:
            first = self.invalid_examples[0] if self.invalid_examples else ""
            first = first.removeprefix(f"{self.label} ")
            parts.append(f"{self.invalid} invalid (first: {first})")
        if self.truncated:
            parts.append(f"{self.truncated} truncated")
        if self.long_documents:
            parts.append(f"{self.long_documents} longer than max_length split into chunks")
        if self.dropped:
            reasons = ", ".join(f"{count} {reason}" for reason, count in self.dropped_reasons.items())
            parts.append(f"{self.dropped} dropped ({reasons})")
        if self.tokens:
            supervised = f" ({self.supervised_tokens:,} supervised)" if self.supervised_tokens else ""
            parts.append(f"{self.tokens:,} tokens{supervised}")
        return f"{name}: " + ", ".join(parts)


@dataclass
class DataReport:
    """The whole data preparation: one report per dataset and the size of the sets."""

    datasets: list[DatasetReport]
    train_rows: int
    eval_rows: int
    packed_sequences: int | None
    max_length: int | None = None

    def lines(self) -> list[str]:
        """Human summary lines, one per dataset then one for the sets."""
        lines = [report.line() for report in self.datasets]
        total = f"train: {self.train_rows} rows"
        if self.packed_sequences is not None:
            total += f" packed into {self.packed_sequences} sequences of up to {self.max_length} tokens"
        if self.eval_rows:
            total += f"; eval: {self.eval_rows} rows"
        lines.append(total)
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the cache and the run's manifest)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataReport:
        """Inverse of to_dict."""
        reports = [DatasetReport(**item) for item in data.get("datasets", [])]
        return cls(
            datasets=reports,
            train_rows=int(data["train_rows"]),
            eval_rows=int(data["eval_rows"]),
            packed_sequences=data.get("packed_sequences"),
            max_length=data.get("max_length"),
        )


@dataclass
class PreparedData:
    """Prepared data on disk (datasets.save_to_disk folders) and how it was made."""

    train_path: Path
    eval_path: Path | None
    report: DataReport
    cache_key: str
    from_cache: bool
    sample_prompt: list[dict[str, Any]] | None


@dataclass
class _Source:
    """A dataset of the job, resolved, with its rows once read and converted."""

    resolved: ResolvedDataset
    report: DatasetReport
    rows: list[dict[str, Any]] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- public


def prepare_data(
    job: JobBase,
    tokenizer: Any,
    chat_template: str | None,
    base_dirs: Sequence[Path] = (),
    cache_root: Path | None = None,
) -> PreparedData:
    """Tokenize (or, for dpo/grpo, validate and shape) the job's data; reuse the cached result for the same inputs."""
    stage, data = job.stage, job.data
    if stage in CHAT_STAGES and not chat_template:
        raise DataError(
            f"stage {stage} needs a chat template, and the tokenizer has none",
            "set model.template to a name (chatml, llama3, mistral, qwen3, glm4, deepseek_r1) or a .jinja file",
        )
    train = [_resolve(spec, data.dataset_dir, base_dirs, "train") for spec in data.train]
    evals = [_resolve(spec, data.dataset_dir, base_dirs, "eval") for spec in data.eval]
    key = cache.cache_key(_key_parts(job, tokenizer, chat_template, train + evals))
    root = Path(cache_root) if cache_root is not None else factory_cache_root(data.cache_dir)

    found = cache.lookup(root, key)
    if found is None:
        staging = cache.staging_dir(root, key)
        try:
            meta = _build(job, tokenizer, chat_template, train, evals, staging)
            found = cache.commit(staging, root, key, meta)
        except BaseException:
            cache.discard(staging)
            raise
        from_cache = False
    else:
        from_cache = True
    meta = cache.read_meta(found)
    return PreparedData(
        train_path=found / meta["train"],
        eval_path=found / meta["eval"] if meta.get("eval") else None,
        report=DataReport.from_dict(meta["report"]),
        cache_key=key,
        from_cache=from_cache,
        sample_prompt=meta.get("sample_prompt"),
    )


def load_prepared(manifest: dict[str, Any]) -> tuple[Any, Any]:
    """(train, eval or None) datasets from the paths in a run's data manifest."""
    from datasets import load_from_disk

    train = load_from_disk(str(manifest["train"]))
    eval_path = manifest.get("eval")
    return train, (load_from_disk(str(eval_path)) if eval_path else None)


def read_canonical_rows(
    job: JobBase, specs: Sequence[DatasetSpec], base_dirs: Sequence[Path] = (), role: str = "train"
) -> list[dict[str, Any]]:
    """Every valid canonical row of `specs` for the job's stage, for engines that tokenize themselves (megatron,
    verl). Invalid rows are counted as prepare_data counts them; a dataset with no valid row is a DataError."""
    rows: list[dict[str, Any]] = []
    for spec in specs:
        source = _resolve(spec, job.data.dataset_dir, base_dirs, role)
        _read_source(source, job.stage, job.data.seed)
        rows += source.rows
    return rows


def held_out_rows(count: int, ratio: float, seed: int) -> list[int]:
    """The positions (ascending) of the rows data.eval_ratio holds out of `count` train rows: a seeded random choice,
    the same rows for the same count, ratio and seed on every backend."""
    n_eval = max(1, round(count * ratio))
    if n_eval >= count:
        raise DataError(
            f"data.eval_ratio {ratio} of {count} rows leaves no training rows", "lower data.eval_ratio or add data"
        )
    return sorted(random.Random(seed).sample(range(count), n_eval))


def resolve_packing(job: JobBase) -> bool:
    """data.packing, defaulting to on for pt; packing applies to pt and sft only."""
    if job.stage not in ("pt", "sft"):
        return False
    return job.stage == "pt" if job.data.packing is None else bool(job.data.packing)


# ----------------------------------------------------------------------------------------------- sources


def _resolve(spec: DatasetSpec, dataset_dir: str | None, base_dirs: Sequence[Path], role: str) -> _Source:
    try:
        resolved = resolve_dataset(spec, dataset_dir, base_dirs)
    except DatasetNotFound as exc:
        raise DataError(f"data.{role}: {exc.message}", exc.hint) from None
    label = resolved.entry.file.name if resolved.entry.file is not None else resolved.label
    return _Source(resolved=resolved, report=DatasetReport(label=label, role=role))


def _source_identity(source: _Source) -> dict[str, Any]:
    entry = source.resolved.entry
    if entry.file is not None:
        try:
            origin: dict[str, Any] = {"sha256": cache.file_digest(entry.file)}
        except OSError as exc:
            raise DataError(f"cannot read {entry.file}: {exc}", "check the path and its permissions") from None
    else:
        origin = {"hub": entry.hf_hub_url, "subset": entry.subset, "split": entry.split, "folder": entry.folder}
    spec = source.resolved.spec
    return {
        **origin,
        "role": source.report.role,
        "format": source.resolved.format_spec,
        "max_samples": spec.max_samples,
        "num_samples": entry.num_samples,
        "weight": spec.weight,
        "system": spec.system,
    }


def _key_parts(job: JobBase, tokenizer: Any, chat_template: str | None, sources: list[_Source]) -> dict[str, Any]:
    data = job.data
    return {
        "stage": job.stage,
        "datasets": [_source_identity(source) for source in sources],
        "tokenizer": cache.tokenizer_fingerprint(tokenizer),
        "template": chat_template,
        "max_length": data.max_length,
        "packing": resolve_packing(job),
        "train_on_prompt": data.train_on_prompt,
        "seed": data.seed,
        "eval_ratio": data.eval_ratio,
        "grpo_max_prompt_length": job.grpo.max_prompt_length if job.grpo is not None else None,
        "mix": {"strategy": data.mix.strategy, "stop": data.mix.stop},
    }


def _raw_rows(source: _Source) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, raw row) of a local file or a Hub dataset, at most max_samples of them."""
    hint = "download it or give a local file (json, jsonl, csv or parquet)"
    try:
        yield from raw_rows(source.resolved.entry, source.resolved.spec.max_samples, hint=hint, error=DataError)
    except ReadError as exc:
        raise DataError(str(exc).split("\n    hint:")[0], exc.hint) from None


def _read_source(source: _Source, stage: str, seed: int) -> None:
    """Read and convert every row of a dataset, counting (never silently dropping) the invalid ones."""
    report, format_spec = source.report, source.resolved.format_spec
    for number, raw in _raw_rows(source):
        report.rows += 1
        try:
            source.rows.append(convert_row(raw, format_spec, stage))
            source.numbers.append(number)
        except RowError as exc:
            report.add_invalid(f"{report.label} row {number}", exc.message)
    target = source.resolved.entry.num_samples
    if target and source.rows:  # LlamaFactory's num_samples: a random subset, or resampled up to that size
        rng = random.Random(seed)
        order = rng.sample(range(len(source.rows)), min(target, len(source.rows)))
        order += [rng.randrange(len(source.rows)) for _ in range(target - len(order))]
        source.rows = [source.rows[i] for i in order]
        source.numbers = [source.numbers[i] for i in order]
    report.converted = len(source.rows)
    if report.rows == 0:
        raise DataError(f"{report.label} has no rows", "check the file (or max_samples)")
    if not source.rows:
        first = report.invalid_examples[0] if report.invalid_examples else ""
        raise DataError(
            f"{report.label}: none of its {report.rows} rows is valid for stage {stage} (first: {first})",
            "check `format:` and `columns:` for this dataset; `factory check` shows how its first rows read",
        )


def _sample_prompt(stage: str, row: dict[str, Any]) -> list[dict[str, Any]] | None:
    if stage == "sft":
        messages: list[dict[str, Any]] = row["messages"]
        first = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
        return [dict(m) for m in messages[:first]]
    if stage in ("dpo", "grpo"):
        return [dict(m) for m in row["prompt"]]
    return None


# ----------------------------------------------------------------------------------------------- encoding


class _StageEncoder:
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

    def _chat(self, messages: list[dict[str, Any]], generation: bool) -> str:
        return render_chat(
            self.template, messages, add_generation_prompt=generation, bos_token=self.bos, eos_token=self.eos
        )

    def render(self, rows: list[dict[str, Any]]) -> _Rendered:
        """Texts to tokenize (per row: 1, or 2 for dpo) and the rows the template refused."""
        rendered = _Rendered(size=len(rows))
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

    def tokenize(self, rendered: _Rendered) -> dict[str, list[Any]]:
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
        encoded = self.tokenizer(rendered.texts, add_special_tokens=self.stage == "pt", return_attention_mask=False)[
            "input_ids"
        ]
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
class _Rendered:
    size: int
    texts: list[str] = field(default_factory=list)
    spans: list[list[tuple[int, int]]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # the batch rows that have texts, in order
    errors: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.errors = [None] * self.size


_WORKER: _StageEncoder | None = None


def _worker_init(encoder: _StageEncoder) -> None:
    global _WORKER
    _WORKER = encoder


def _worker_encode(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    assert _WORKER is not None
    return _WORKER.tokenize(_WORKER.render(rows))


def _encode_all(encoder: _StageEncoder, rows: list[dict[str, Any]], workers: int) -> dict[str, list[Any]]:
    """Every row encoded, in order: in worker processes, or here with tokenization overlapping rendering."""
    batches = [rows[i : i + ENCODE_BATCH] for i in range(0, len(rows), ENCODE_BATCH)]
    results: list[dict[str, list[Any]]] = []
    if workers > 1 and len(batches) > 1:
        import multiprocessing
        import os

        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        context = multiprocessing.get_context(method)
        # Forked workers must not use the Rust thread pool of the parent's tokenizer (tokenizers would warn).
        saved = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        try:
            with context.Pool(min(workers, len(batches)), initializer=_worker_init, initargs=(encoder,)) as pool:
                results = list(pool.imap(_worker_encode, batches))
        finally:
            if saved is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = saved
    else:
        from concurrent.futures import Future, ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1) as tokenizing:
            pending: Future[dict[str, list[Any]]] | None = None
            for batch in batches:
                rendered = encoder.render(batch)
                if pending is not None:
                    results.append(pending.result())
                pending = tokenizing.submit(encoder.tokenize, rendered)
            if pending is not None:
                results.append(pending.result())
    merged: dict[str, list[Any]] = {}
    for result in results:
        for name, values in result.items():
            merged.setdefault(name, []).extend(values)
    return merged


# ----------------------------------------------------------------------------------------------- build


@dataclass
class _Encoded:
    """Every row of every source, encoded: global index g = position in `rows`."""

    rows: list[dict[str, Any]]
    source: list[int]  # g -> index of its source
    columns: dict[str, list[Any]]
    kept: list[list[int]]  # per source: the g of its rows that survive


def _encode_sources(job: JobBase, encoder: _StageEncoder, sources: list[_Source]) -> _Encoded:
    """Encode the sources' rows and fill their reports (invalid, truncated, dropped, tokens)."""
    stage, limit = job.stage, job.data.max_length
    rows = [row for source in sources for row in source.rows]
    owner = [k for k, source in enumerate(sources) for _ in source.rows]
    columns = _encode_all(encoder, rows, job.data.num_workers)
    prompt_limit = job.grpo.max_prompt_length if stage == "grpo" and job.grpo is not None else None
    lengths, supervised, errors = columns[LEN], columns[SUP], columns[ERR]
    kept: list[list[int]] = [[] for _ in sources]
    start = 0
    for k, source in enumerate(sources):
        report = source.report
        for i in range(len(source.rows)):
            g = start + i
            if errors[g] is not None:
                report.add_invalid(f"{report.label} row {source.numbers[i]}", errors[g])
                report.converted -= 1
                continue
            length = lengths[g]
            reason = None
            if stage == "sft" and supervised[g] == 0:
                reason = REASON_NO_ASSISTANT
            elif prompt_limit is not None and length > prompt_limit:
                reason = REASON_LONG_PROMPT
            if reason is not None:
                report.dropped += 1
                report.dropped_reasons[reason] = report.dropped_reasons.get(reason, 0) + 1
                continue
            kept[k].append(g)
            if length > limit:
                if stage == "pt":
                    report.long_documents += 1
                elif stage in ("sft", "dpo"):
                    report.truncated += 1
            if stage != "dpo":
                report.tokens += min(length, limit) if stage == "sft" else length
            report.supervised_tokens += supervised[g] if stage == "sft" else 0
        if not kept[k]:
            _raise_nothing_left(report, stage)
        start += len(source.rows)
    return _Encoded(rows=rows, source=owner, columns=columns, kept=kept)


def _raise_nothing_left(report: DatasetReport, stage: str) -> None:
    if report.dropped_reasons.get(REASON_LONG_PROMPT):
        hint = "raise grpo.max_prompt_length, or shorten the prompts"
    elif report.dropped_reasons.get(REASON_NO_ASSISTANT):
        hint = "raise data.max_length: the prompts alone fill it"
    else:
        hint = "check the dataset against the chat template (model.template)"
    first = report.invalid_examples[0] if report.invalid_examples else ", ".join(report.dropped_reasons)
    raise DataError(f"{report.label}: no row is left for stage {stage} ({first})", hint)


def _split_eval(kept: list[list[int]], ratio: float, seed: int) -> tuple[list[list[int]], list[int]]:
    """Hold out `ratio` of the kept train rows (held_out_rows); returns (train per source, eval)."""
    everything = [g for rows in kept for g in rows]
    held = {everything[i] for i in held_out_rows(len(everything), ratio, seed)}
    return [[g for g in rows if g not in held] for rows in kept], sorted(held)


def _mix(job: JobBase, kept: list[list[int]], sources: list[_Source]) -> list[int]:
    """The train rows in training order: concat + seeded shuffle, or datasets' interleave by weight."""
    data = job.data
    if data.mix.strategy == "interleave" and len(kept) > 1:
        from datasets import Dataset, interleave_datasets

        weights = [source.resolved.spec.weight for source in sources]
        probabilities = None
        if any(w is not None for w in weights):
            given = [w if w is not None else 1.0 for w in weights]
            probabilities = [w / sum(given) for w in given]
        parts = [Dataset.from_dict({"g": rows}) for rows in kept]
        mixed = interleave_datasets(parts, probabilities=probabilities, seed=data.seed, stopping_strategy=data.mix.stop)
        order: list[int] = mixed["g"]
        return order
    order = [g for rows in kept for g in rows]
    random.Random(data.seed).shuffle(order)
    return order


def _lm_dataset(encoded: _Encoded, order: list[int], with_labels: bool) -> Any:
    """pt / sft rows (input_ids, labels) in `order` as a Dataset built straight from Arrow arrays."""
    import pyarrow as pa
    from datasets import Dataset

    ids = encoded.columns["input_ids"]
    arrays = {"input_ids": pa.array([ids[g] for g in order], type=pa.list_(pa.int64()))}
    if with_labels:
        labels = encoded.columns["labels"]
        arrays["labels"] = pa.array([labels[g] for g in order], type=pa.list_(pa.int64()))
    return Dataset(pa.table(arrays))


def _conversation_dataset(stage: str, encoded: _Encoded, order: list[int]) -> Any:
    """dpo / grpo rows in `order`: the canonical columns (grpo: every field, missing ones as None)."""
    from datasets import Dataset

    rows = [encoded.rows[g] for g in order]
    if stage == "dpo":
        names: dict[str, None] = dict.fromkeys(("prompt", "chosen", "rejected"))
    else:
        names = {"prompt": None}
        for row in encoded.rows:  # the same columns for train and eval
            names.update(dict.fromkeys(row))
    return Dataset.from_dict({name: _arrow_column([row.get(name) for row in rows]) for name in names})


def _arrow_column(values: list[Any]) -> list[Any]:
    """The values as they are when Arrow can hold them in one column, else as text (JSON for structures)."""
    import pyarrow as pa

    try:
        pa.array(values)
        return values
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values]


def _finish_lm(job: JobBase, dataset: Any) -> Any:
    """pt / sft sequences as trained: packed by TRL's packer, or (pt) long documents cut into max_length chunks."""
    limit = job.data.max_length
    workers = job.data.num_workers if job.data.num_workers > 1 else None
    if resolve_packing(job):
        from trl.data_utils import pack_dataset

        # pt: bfd_split keeps every token (a long document continues in another sequence); sft rows are already
        # truncated to max_length, so bfd keeps them whole.
        strategy = "bfd_split" if job.stage == "pt" else "bfd"
        return pack_dataset(
            dataset, seq_length=limit, strategy=strategy, map_kwargs={"batch_size": PACK_BATCH, "num_proc": workers}
        )
    if job.stage == "pt":
        ids = dataset["input_ids"]
        if any(len(row) > limit for row in ids):
            import pyarrow as pa
            from datasets import Dataset

            chunks = [row[i : i + limit] for row in ids for i in range(0, len(row), limit)]
            return Dataset(pa.table({"input_ids": pa.array(chunks, type=pa.list_(pa.int64()))}))
    return dataset


def _build(
    job: JobBase,
    tokenizer: Any,
    chat_template: str | None,
    train: list[_Source],
    evals: list[_Source],
    staging: Path,
) -> dict[str, Any]:
    """Do the work of prepare_data into `staging`; returns the entry's metadata."""
    data, stage = job.data, job.stage
    for source in train + evals:
        _read_source(source, stage, data.seed)
    encoder = _StageEncoder(job, tokenizer, chat_template)
    encoded = _encode_sources(job, encoder, train + evals)
    kept_train, kept_eval = encoded.kept[: len(train)], encoded.kept[len(train) :]
    eval_order = [g for rows in kept_eval for g in rows]
    if not evals and data.eval_ratio > 0:
        kept_train, eval_order = _split_eval(kept_train, data.eval_ratio, data.seed)
    train_order = _mix(job, kept_train, train)
    if not train_order:
        raise DataError("the training set is empty", "add rows to data.train")
    with _quiet_datasets():
        if stage in ("pt", "sft"):
            train_ds = _finish_lm(job, _lm_dataset(encoded, train_order, stage == "sft"))
            eval_ds = _finish_lm(job, _lm_dataset(encoded, eval_order, stage == "sft")) if eval_order else None
        else:
            train_ds = _conversation_dataset(stage, encoded, train_order)
            eval_ds = _conversation_dataset(stage, encoded, eval_order) if eval_order else None
        train_ds.save_to_disk(str(staging / "train"))
        if eval_ds is not None:
            eval_ds.save_to_disk(str(staging / "eval"))
    report = DataReport(
        datasets=[source.report for source in train + evals],
        train_rows=len(train_order),
        eval_rows=len(eval_order),
        packed_sequences=len(train_ds) if resolve_packing(job) else None,
        max_length=data.max_length,
    )
    return {
        "train": "train",
        "eval": "eval" if eval_ds is not None else None,
        "report": report.to_dict(),
        "sample_prompt": _sample_prompt(stage, train[0].rows[0]),
        "stage": stage,
    }


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No datasets progress bars while we work (our report lines say what happened)."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()
