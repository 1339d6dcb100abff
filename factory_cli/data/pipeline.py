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

Preparation streams in the memory of a batch (docs/architecture.md §8): rows are read and encoded ENCODE_BATCH at a
time (data/encoding.py), tokens are written to disk as they come (data/encoded_store.py), the report, shuffle, split
and mix work on row indices, and packing takes bounded groups back from disk (data/packing.py).
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from factory_cli.cache import cache_root as factory_cache_root
from factory_cli.config.errors import UsageError
from factory_cli.config.schema import DatasetSpec, JobBase
from factory_cli.data import cache
from factory_cli.data.encoded_store import EncodedStore
from factory_cli.data.encoding import StageEncoder, encode_batches
from factory_cli.data.formats import RowError, convert_row
from factory_cli.data.packing import write_packed
from factory_cli.data.readers import ReadError
from factory_cli.data.sources import DatasetNotFound, ResolvedDataset, raw_rows, resolve_dataset

MAX_INVALID_EXAMPLES = 5
ENCODE_BATCH = 1000
ENCODE_CHARS = 2_000_000  # pt: characters per encoded batch, so that long documents keep a batch small
MAX_MIX_REPEAT = 100  # interleave / all_exhausted: the most times the weights may make it repeat the data
CHAT_STAGES = ("sft", "dpo", "grpo")
REASON_NO_ASSISTANT = "no assistant token within max_length"
REASON_LONG_PROMPT = "prompt longer than grpo.max_prompt_length"
WORK_DIR = "work"  # intermediate files of a build, inside its staging folder
ARROW_SUFFIX = ".arrow"  # a packed or dpo / grpo set: one Arrow stream file in the cache entry (load_prepared maps it)
CONVERSATION_BATCH = 1000  # dpo / grpo rows read back and written at a time


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
        with cache.building(root, key) as staging:
            meta = _build(job, tokenizer, chat_template, train, evals, staging)
            found = cache.commit(staging, root, key, meta)
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
    """(train, eval or None) datasets from the paths in a run's data manifest, memory-mapped; for data.streaming the
    training stream (data/streaming.py) and no eval set."""
    if manifest.get("stream"):
        from factory_cli.data.streaming import load_stream

        return load_stream(manifest["stream"]), None
    train = _load_set(Path(manifest["train"]))
    eval_path = manifest.get("eval")
    return train, (_load_set(Path(eval_path)) if eval_path else None)


def _load_set(path: Path) -> Any:
    """A prepared set: a packed Arrow file (data/packing.py writes it once, no copy) or a save_to_disk folder; both
    memory-mapped."""
    from datasets import Dataset, load_from_disk

    return Dataset.from_file(str(path)) if path.is_file() else load_from_disk(str(path))


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


def _converted_batches(source: _Source, stage: str, size: int) -> Iterator[tuple[list[int], list[dict[str, Any]]]]:
    """(row numbers, canonical rows) of a dataset, `size` rows (pt: or ENCODE_CHARS characters) at a time, counting
    (never silently dropping) the rows that do not convert; a dataset with no row, or no valid row, is a DataError
    once it has been read."""
    report, format_spec = source.report, source.resolved.format_spec
    numbers: list[int] = []
    rows: list[dict[str, Any]] = []
    converted = chars = 0
    for number, raw in _raw_rows(source):
        report.rows += 1
        try:
            rows.append(convert_row(raw, format_spec, stage))
        except RowError as exc:
            report.add_invalid(f"{report.label} row {number}", exc.message)
            continue
        numbers.append(number)
        converted += 1
        chars += len(rows[-1]["text"]) if stage == "pt" else 0
        if len(rows) >= size or chars >= ENCODE_CHARS:
            yield numbers, rows
            numbers, rows, chars = [], [], 0
    if rows:
        yield numbers, rows
    if report.rows == 0:
        raise DataError(f"{report.label} has no rows", "check the file (or max_samples)")
    if not converted:
        first = report.invalid_examples[0] if report.invalid_examples else ""
        raise DataError(
            f"{report.label}: none of its {report.rows} rows is valid for stage {stage} (first: {first})",
            "check `format:` and `columns:` for this dataset; `factory check` shows how its first rows read",
        )


def _sampled(source: _Source, count: int, seed: int) -> list[int]:
    """The positions among a dataset's `count` converted rows that it contributes: all of them, or LlamaFactory's
    num_samples (a random subset, or resampled up to that size)."""
    target = source.resolved.entry.num_samples
    if not target or not count:
        return list(range(count))
    rng = random.Random(seed)
    order = rng.sample(range(count), min(target, count))
    order += [rng.randrange(count) for _ in range(target - len(order))]
    return order


def _read_source(source: _Source, stage: str, seed: int) -> None:
    """Read and convert every row of a dataset into memory (for engines that tokenize themselves)."""
    numbers: list[int] = []
    rows: list[dict[str, Any]] = []
    for batch_numbers, batch_rows in _converted_batches(source, stage, ENCODE_BATCH):
        numbers += batch_numbers
        rows += batch_rows
    order = _sampled(source, len(rows), seed)
    source.rows = [rows[i] for i in order]
    source.numbers = [numbers[i] for i in order]
    source.report.converted = len(order)


def _nth_converted_row(source: _Source, stage: str, position: int) -> dict[str, Any]:
    """The converted row at `position` of a dataset, read again (the sample prompt of a sampled dataset)."""
    again = _Source(resolved=source.resolved, report=DatasetReport(label=source.report.label))
    seen = 0
    for _, rows in _converted_batches(again, stage, ENCODE_BATCH):
        if position < seen + len(rows):
            return rows[position - seen]
        seen += len(rows)
    raise DataError(f"{source.report.label} changed while it was read", "prepare the data again")


def _sample_prompt(stage: str, row: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    if row is None:
        return None
    if stage == "sft":
        messages: list[dict[str, Any]] = row["messages"]
        first = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
        return [dict(m) for m in messages[:first]]
    if stage in ("dpo", "grpo"):
        return [dict(m) for m in row["prompt"]]
    return None


# ----------------------------------------------------------------------------------------------- build


@dataclass
class _Selection:
    """Which stored rows each dataset contributes: global index g (the datasets' sampled rows, one after another)
    -> physical index in the store; `kept` holds per dataset the g of its rows that survive."""

    physical: list[int]
    kept: list[list[int]]


def _encode_into(store: EncodedStore, job: JobBase, encoder: StageEncoder, sources: list[_Source]) -> None:
    """Read, convert and encode every dataset batch by batch into `store` (bounded memory)."""

    def batches() -> Iterator[list[dict[str, Any]]]:
        for source in sources:
            start = store.converted
            for numbers, rows in _converted_batches(source, job.stage, ENCODE_BATCH):
                store.add_converted(numbers, rows)
                yield rows
            store.bounds.append((start, store.converted))

    for encoded in encode_batches(encoder, batches(), job.data.num_workers):
        store.add_encoded(encoded)


def _account(job: JobBase, store: EncodedStore, sources: list[_Source]) -> _Selection:
    """Fill the datasets' reports (invalid, truncated, dropped, tokens) and choose the rows that stay."""
    stage, limit = job.stage, job.data.max_length
    prompt_limit = job.grpo.max_prompt_length if stage == "grpo" and job.grpo is not None else None
    lengths, supervised, errors, numbers = store.lengths, store.supervised, store.errors, store.numbers
    physical: list[int] = []
    kept: list[list[int]] = [[] for _ in sources]
    for k, (source, (start, end)) in enumerate(zip(sources, store.bounds, strict=True)):
        report = source.report
        order = _sampled(source, end - start, job.data.seed)
        report.converted = len(order)
        for position in order:
            p = start + position
            g = len(physical)
            physical.append(p)
            error = errors.get(p)
            if error is not None:
                report.add_invalid(f"{report.label} row {numbers[p]}", error)
                report.converted -= 1
                continue
            length = lengths[p]
            reason = None
            if stage == "sft" and supervised[p] == 0:
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
            report.supervised_tokens += supervised[p] if stage == "sft" else 0
        if not kept[k]:
            _raise_nothing_left(report, stage)
    return _Selection(physical=physical, kept=kept)


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
            if data.mix.stop == "all_exhausted":
                _refuse_runaway_mix(kept, probabilities, sources)
        parts = [Dataset.from_dict({"g": rows}) for rows in kept]
        mixed = interleave_datasets(parts, probabilities=probabilities, seed=data.seed, stopping_strategy=data.mix.stop)
        order: list[int] = mixed["g"]
        return order
    order = [g for rows in kept for g in rows]
    random.Random(data.seed).shuffle(order)
    return order


def _refuse_runaway_mix(kept: list[list[int]], probabilities: list[float], sources: list[_Source]) -> None:
    """interleave until all are exhausted draws about max(rows / probability) rows: refuse weights that would repeat
    the data more than MAX_MIX_REPEAT times (a weight far too small for its dataset's size)."""
    total = sum(len(rows) for rows in kept)
    expected = [len(rows) / p for rows, p in zip(kept, probabilities, strict=True)]
    k = max(range(len(kept)), key=lambda i: expected[i])
    if expected[k] > MAX_MIX_REPEAT * total:
        spec = sources[k].resolved.spec
        raise DataError(
            f"data.train[{k}] ({spec.path}, weight {spec.weight}): interleaving until every dataset is used would draw "
            f"about {expected[k]:,.0f} rows from {total:,} ({expected[k] / total:,.0f} times the data)",
            f"raise its weight (the weights set each dataset's share of the rows drawn), or set data.mix.stop: "
            f"first_exhausted; at most {MAX_MIX_REPEAT} times the data is drawn",
        )


def _write_conversation_set(stage: str, store: EncodedStore, rows: list[int], every: list[int], path: Path) -> int:
    """dpo / grpo rows (physical indices, in order) into the Arrow file `path`, CONVERSATION_BATCH rows at a time:
    the canonical columns (grpo: every field of the rows `every` names, train and eval, missing ones as None), each
    column as Arrow holds it when it can, else as text (JSON for structures). Returns the number of rows."""
    import pyarrow as pa

    if stage == "dpo":
        names: dict[str, None] = dict.fromkeys(("prompt", "chosen", "rejected"))
    else:
        names = {"prompt": None}
        for start in range(0, len(every), CONVERSATION_BATCH):  # the same columns for train and eval
            for row in store.rows_at(every[start : start + CONVERSATION_BATCH]):
                names.update(dict.fromkeys(row))
    groups = [rows[start : start + CONVERSATION_BATCH] for start in range(0, len(rows), CONVERSATION_BATCH)]
    kinds: dict[str, Any] = {}  # column -> its Arrow type, or None once it must be text
    for group in groups:
        chosen = store.rows_at(group)
        for name in names:
            kind = _arrow_type([row.get(name) for row in chosen])
            kinds[name] = kind if name not in kinds else _unified(kinds[name], kind)
    schema = pa.schema([(name, kinds[name] if kinds[name] is not None else pa.string()) for name in names])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for group in groups:
            chosen = store.rows_at(group)
            arrays = []
            for name in names:
                values = [row.get(name) for row in chosen]
                if kinds[name] is None:
                    values = [_as_text(v) for v in values]
                arrays.append(pa.array(values, type=schema.field(name).type))
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
    return len(rows)


def _as_text(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _unified(first: Any, second: Any) -> Any:
    """One Arrow type for two batches of a column (structs gain the fields either has), or None."""
    import pyarrow as pa

    if first is None or second is None:
        return None
    try:
        schemas = [pa.schema([("column", first)]), pa.schema([("column", second)])]
        return pa.unify_schemas(schemas, promote_options="permissive").field("column").type
    except (pa.ArrowInvalid, pa.ArrowTypeError, NotImplementedError):
        return None


def _arrow_type(values: list[Any]) -> Any:
    """The Arrow type of the values as one column, or None when Arrow cannot hold them together."""
    import pyarrow as pa

    try:
        return pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None


def _chunk_documents(batch: dict[str, list[Any]], limit: int) -> dict[str, list[Any]]:
    """pt without packing: each document cut into max_length pieces (no token lost)."""
    return {"input_ids": [row[i : i + limit] for row in batch["input_ids"] for i in range(0, len(row), limit)]}


def _write_packed_set(job: JobBase, store: EncodedStore, rows: list[int], path: Path) -> int:
    """pt / sft sequences packed group by group (data/packing.py) from the stored rows `rows` (physical indices, in
    order) into the Arrow file `path`, which is the prepared set itself; returns the number of sequences."""
    limit = job.data.max_length
    # pt: bfd_split keeps every token (a long document continues in another sequence); sft rows are already
    # truncated to max_length, so bfd keeps them whole.
    strategy = "bfd_split" if job.stage == "pt" else "bfd"
    lengths = [store.lengths[p] if job.stage == "pt" else min(store.lengths[p], limit) for p in rows]
    return write_packed(store.file(), rows, lengths, strategy, limit, job.data.num_workers, path)


def _lm_dataset(job: JobBase, store: EncodedStore, rows: list[int]) -> Any:
    """pt / sft sequences as trained when not packed, from the stored rows `rows` (physical indices, in order): (pt)
    long documents cut into max_length chunks, or the rows as they are."""
    limit, workers = job.data.max_length, job.data.num_workers
    encoded = store.dataset()
    dataset = encoded.select(rows)
    if job.stage == "pt" and any(store.lengths[p] > limit for p in rows):
        return dataset.map(
            _chunk_documents,
            batched=True,
            batch_size=ENCODE_BATCH,
            fn_kwargs={"limit": limit},
            features=dataset.features,
            num_proc=workers if workers > 1 else None,
        )
    return dataset


def _build(
    job: JobBase,
    tokenizer: Any,
    chat_template: str | None,
    train: list[_Source],
    evals: list[_Source],
    staging: Path,
) -> dict[str, Any]:
    """Do the work of prepare_data into `staging`; returns the entry's metadata. Intermediate files live in
    `staging/work` and are removed before the entry is committed."""
    data, stage = job.data, job.stage
    store = EncodedStore(staging / WORK_DIR, stage)
    _encode_into(store, job, StageEncoder(job, tokenizer, chat_template), train + evals)
    selection = _account(job, store, train + evals)
    kept_train, kept_eval = selection.kept[: len(train)], selection.kept[len(train) :]
    eval_order = [g for rows in kept_eval for g in rows]
    if not evals and data.eval_ratio > 0:
        kept_train, eval_order = _split_eval(kept_train, data.eval_ratio, data.seed)
    train_order = _mix(job, kept_train, train)
    if not train_order:
        raise DataError("the training set is empty", "add rows to data.train")
    train_rows = [selection.physical[g] for g in train_order]
    eval_rows = [selection.physical[g] for g in eval_order]
    sizes: dict[str, int] = {}
    names: dict[str, str] = {}
    with _quiet_datasets():
        for name, rows in (("train", train_rows), ("eval", eval_rows)):
            if not rows:
                continue
            if store.has_tokens and resolve_packing(job):
                names[name] = f"{name}{ARROW_SUFFIX}"
                sizes[name] = _write_packed_set(job, store, rows, staging / names[name])
                continue
            if not store.has_tokens:
                names[name] = f"{name}{ARROW_SUFFIX}"
                sizes[name] = _write_conversation_set(stage, store, rows, selection.physical, staging / names[name])
                continue
            dataset = _lm_dataset(job, store, rows)
            dataset.save_to_disk(str(staging / name))
            names[name] = name
            sizes[name] = len(dataset)
            del dataset  # one set mapped at a time
    packed_sequences = sizes["train"] if resolve_packing(job) else None
    shutil.rmtree(staging / WORK_DIR, ignore_errors=True)
    report = DataReport(
        datasets=[source.report for source in train + evals],
        train_rows=len(train_order),
        eval_rows=len(eval_order),
        packed_sequences=packed_sequences,
        max_length=data.max_length,
    )
    return {
        "train": names["train"],
        "eval": names.get("eval"),
        "report": report.to_dict(),
        "sample_prompt": _sample_prompt(stage, _first_train_row(store, selection, train[0])),
        "stage": stage,
    }


def _first_train_row(store: EncodedStore, selection: _Selection, first: _Source) -> dict[str, Any] | None:
    """The first dataset's first (sampled) row as converted: kept in memory for dpo / grpo, read again for sft."""
    if store.stage == "pt":
        return None
    p = selection.physical[0]
    return store.row(p) if not store.has_tokens else _nth_converted_row(first, store.stage, p - store.bounds[0][0])


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
