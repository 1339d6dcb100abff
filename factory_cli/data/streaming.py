"""`data.streaming: true`: pt and sft data read, tokenized and packed on the fly, with no pass before step 1
(docs/architecture.md §8).

`stream_dataset` builds a `datasets.IterableDataset`:

    files (one shard each) or a Hub dataset (datasets' own streaming)
      --formats.convert_row--> canonical rows (rows that do not convert are skipped, as `factory check` warns;
                               sft rows travel as JSON text, so any message shape and tools fit one column)
      --data.mix--> one stream: concat, or `interleave_datasets` with the weights and data.seed
      --shuffle(seed, STREAM_SHUFFLE_BUFFER)--> a seeded order of shards, then of rows within a buffer
      --encoding.StageEncoder--> pt: input_ids (+ EOS); sft: input_ids and labels (the chat template's assistant
                                 mask, cut to max_length; a row with no supervised token left is skipped, as the
                                 prepared path drops it), ENCODE_BATCH rows at a time
      --trl.data_utils.pack_dataset (pt bfd_split, sft bfd; STREAM_PACK_ROWS rows at a time) or, unpacked, pt's
        max_length chunks--> what the trainer takes, in the same columns as a prepared set

Every step is the library's lazy `IterableDataset` API, so the same seed gives the same sequences in the same order.
Sharding: the files are the dataset's shards, which `datasets` spreads over dataloader workers; over ranks,
Accelerate's prepared dataloader hands each data-parallel rank its own batches. Resuming: Transformers' Trainer
skips the batches a checkpoint's step has consumed (`skip_first_batches`), so a resumed run sees exactly the batches an
uninterrupted run sees (tests/integration/test_streaming.py).

The deepspeed prepare step writes `stream_manifest` instead of preparing the data; each worker calls
`pipeline.load_prepared`, which builds the stream here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from factory_cli.config.schema import JobBase
from factory_cli.data.encoding import SUP, TOKEN_COLUMNS
from factory_cli.data.formats import RowError, convert_row
from factory_cli.data.readers import list_data_files, read_rows

STREAM_SHUFFLE_BUFFER = 1000  # rows in datasets' shuffle buffer (and the shards' order is shuffled too)
STREAM_PACK_ROWS = 1000  # documents packed together (best fit decreasing) as they come
STREAM_ENCODE_BATCH = 100  # rows tokenized in one call
ROW_COLUMN = {"pt": "text", "sft": "row"}  # the stream's one column before tokenizing


def stream_manifest(job: JobBase, run_dir: Path, tokenizer: str, chat_template: str | None) -> dict[str, Any]:
    """What a worker needs to build the stream: the run directory (job and base dirs), the tokenizer reference."""
    return {"run_dir": str(run_dir), "tokenizer": tokenizer, "chat_template": chat_template}


def load_stream(stream: dict[str, Any]) -> Any:
    """The training stream of a run's `stream` manifest entry (see stream_manifest)."""
    from factory_cli.modeling.load import load_tokenizer
    from factory_cli.runs import RunDir

    run = RunDir(Path(stream["run_dir"]))
    job = run.job()
    tokenizer = load_tokenizer(
        stream["tokenizer"], trust_remote_code=job.model.trust_remote_code, revision=job.model.revision
    )
    return stream_dataset(job, tokenizer, stream.get("chat_template"), run.base_dirs())


def stream_dataset(job: JobBase, tokenizer: Any, chat_template: str | None, base_dirs: Sequence[Path] = ()) -> Any:
    """The job's training data as a lazy, seeded `datasets.IterableDataset` of packed (or chunked) token rows."""
    from datasets import Features, Value, interleave_datasets
    from datasets import Sequence as ArrowList

    from factory_cli.data.encoding import StageEncoder
    from factory_cli.data.pipeline import _resolve, resolve_packing

    data = job.data
    sources = [_resolve(spec, data.dataset_dir, base_dirs, "train") for spec in data.train]
    stage = job.stage
    column = ROW_COLUMN[stage]
    streams = [_rows(source.resolved, stage) for source in sources]
    if len(streams) == 1:
        rows = streams[0]
    elif data.mix.strategy == "interleave":
        weights = [source.resolved.spec.weight for source in sources]
        probabilities = None
        if any(w is not None for w in weights):
            given = [w if w is not None else 1.0 for w in weights]
            probabilities = [w / sum(given) for w in given]
        rows = interleave_datasets(
            streams, probabilities=probabilities, seed=data.seed, stopping_strategy=data.mix.stop
        )
    else:
        from datasets import concatenate_datasets

        rows = concatenate_datasets(streams)
    # One shard feeds each buffer: the stream stays split by file for dataloader workers and ranks.
    rows = rows.shuffle(seed=data.seed, buffer_size=STREAM_SHUFFLE_BUFFER, max_buffer_input_shards=1)
    encoder = StageEncoder(job, tokenizer, chat_template)
    ids = ArrowList(Value("int64"))
    token_columns = TOKEN_COLUMNS[stage]
    tokens = rows.map(
        _encode,
        batched=True,
        batch_size=STREAM_ENCODE_BATCH,
        remove_columns=[column],
        features=Features({name: ids for name in token_columns}),
        fn_kwargs={"encoder": encoder},
    )
    limit = data.max_length
    if resolve_packing(job):
        from trl.data_utils import pack_dataset

        # pt: bfd_split keeps every token (a long document continues in another sequence); sft rows are already cut
        # to max_length, so bfd keeps them whole (data/pipeline.py packs prepared sets the same way).
        strategy = "bfd_split" if stage == "pt" else "bfd"
        packed = pack_dataset(tokens, seq_length=limit, strategy=strategy, map_kwargs={"batch_size": STREAM_PACK_ROWS})
        return packed.cast(Features({**{name: ids for name in token_columns}, "seq_lengths": ids}))
    if stage == "sft":
        return tokens
    return tokens.map(_chunks, batched=True, batch_size=STREAM_ENCODE_BATCH, fn_kwargs={"limit": limit})


def _rows(resolved: Any, stage: str) -> Any:
    """One dataset's canonical rows as an IterableDataset (pt: the text; sft: the row as JSON): one shard per local
    file, or the Hub's stream."""
    from datasets import Features, IterableDataset, Value

    entry, spec = resolved.entry, resolved.spec
    features = Features({ROW_COLUMN[stage]: Value("string")})
    if entry.file is not None:
        files = [str(f) for f in list_data_files(entry.file)]
        stream = IterableDataset.from_generator(
            _file_rows,
            gen_kwargs={"files": files, "format_spec": resolved.format_spec, "stage": stage},
            features=features,
        )
    else:
        from datasets import load_dataset

        from factory_cli.hub import offline_unless_reachable

        with offline_unless_reachable():
            hub = load_dataset(entry.hf_hub_url, entry.subset, split=entry.split, data_dir=entry.folder, streaming=True)
        stream = hub.map(
            _convert_batch,
            batched=True,
            remove_columns=list(hub.column_names or []),
            features=features,
            fn_kwargs={"format_spec": resolved.format_spec, "stage": stage},
        )
    return stream.take(spec.max_samples) if spec.max_samples else stream


def _file_rows(files: list[str], format_spec: Any, stage: str) -> Iterator[dict[str, Any]]:
    """The canonical rows of this shard's files (datasets hands each shard its part of `files`)."""
    for file in files:
        for _, raw in read_rows(Path(file)):
            try:
                row = convert_row(raw, format_spec, stage)
            except RowError:
                continue  # counted and shown by `factory check`; a stream has no end-of-pass report
            yield {ROW_COLUMN[stage]: _carried(row, stage)}


def _convert_batch(batch: dict[str, list[Any]], format_spec: Any, stage: str) -> dict[str, list[Any]]:
    names = list(batch)
    carried = []
    for values in zip(*(batch[name] for name in names), strict=True):
        try:
            carried.append(_carried(convert_row(dict(zip(names, values, strict=True)), format_spec, stage), stage))
        except RowError:
            continue
    return {ROW_COLUMN[stage]: carried}


def _carried(row: dict[str, Any], stage: str) -> str:
    """What the stream carries of a canonical row: pt's text, or the sft row as JSON."""
    return str(row["text"]) if stage == "pt" else json.dumps(row, ensure_ascii=False)


def _encode(batch: dict[str, list[Any]], encoder: Any) -> dict[str, list[Any]]:
    """The token columns of a batch: pt's input_ids (the tokenizer's special tokens, then EOS), sft's input_ids and
    labels. Rows that encode to nothing, that the template refused, or (sft) with no supervised token go."""
    if encoder.stage == "pt":
        rows = [{"text": text} for text in batch["text"]]
    else:
        rows = [json.loads(text) for text in batch[ROW_COLUMN[encoder.stage]]]
    out = encoder.tokenize(encoder.render(rows))
    kept = [j for j, ids in enumerate(out["input_ids"]) if ids and (encoder.stage == "pt" or out[SUP][j] > 0)]
    return {name: [out[name][j] for j in kept] for name in TOKEN_COLUMNS[encoder.stage]}


def _chunks(batch: dict[str, list[Any]], limit: int) -> dict[str, list[Any]]:
    """pt without packing: each document cut into max_length pieces (no token lost)."""
    return {"input_ids": [ids[i : i + limit] for ids in batch["input_ids"] for i in range(0, len(ids), limit)]}
