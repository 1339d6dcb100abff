"""Megatron's indexed dataset (`<prefix>_text_document.bin` / `.idx`): pretraining data for both engines, written
from factory's own data preparation (docs/architecture.md §8, "one preparation, two formats").

`prepare_indexed` is the pt preprocess step of Megatron-LM and MindSpeed-LLM: the run's pt data goes through factory's
pipeline (data/pipeline.py `prepare_data`: read, convert, tokenize with the tokenizer's special tokens + EOS, in
bounded memory, cached by content hash, the same report of invalid and dropped rows as the deepspeed backend prints),
then `write_prepared` writes each document through megatron-core's `IndexedDatasetBuilder`, read front to back from
the memory-mapped Arrow set (data/arrow_files.py). The indexed files are a cache entry of their own, keyed by the
prepared set's key, and the run's `<prefix>_text_document.{bin,idx}` link to them: a second run over the same data
writes nothing.

The pipeline runs unpacked and without a length limit here: Megatron's GPTDataset lays whole documents end to end and
cuts its own seq_length samples; cutting a document into max_length pieces first would let its pieces be shuffled
apart. No eval set either: the train step holds out data.eval_ratio of the documents with --split.

`sequence_count` and `token_count` read an `.idx` without importing megatron-core (the layout is megatron-core's
`indexed_dataset.py`: magic, version, dtype code, sequence count, document count, then the int32 sequence lengths).

Run as a step: `python -m factory_cli.backends.megatron.indexed --run-dir R --output-prefix P --tokenizer DIR
[--engine-home CHECKOUT]`; megatron-core comes from the engine checkout when it holds `megatron/core` (the one
training reads the data with), else from the installed wheel.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INDEX_MAGIC = b"MMIDIDX\x00\x00"
HEADER_SIZE = len(INDEX_MAGIC) + 8 + 1 + 8 + 8  # magic, version, dtype code, sequence count, document count
TEXT_KEY = "text"
# Bump when the indexed files written from the same prepared set change (the prepared set's key covers the rest).
INDEXED_VERSION = 1
ENTRY_PREFIX = "train"  # the files inside a cache entry: train_text_document.{bin,idx}
WHOLE_DOCUMENTS = sys.maxsize  # data.max_length of the preparation: no document is cut (GPTDataset cuts samples)


@dataclass(frozen=True)
class IndexedData:
    """What the pt preprocess step wrote (or found in the cache)."""

    prefix: str  # what --data-path names
    documents: int
    tokens: int
    cache_key: str  # the indexed entry's key
    from_cache: bool


def document_prefix(prefix: str, key: str = TEXT_KEY) -> str:
    """What --data-path names for a pretraining corpus: `<prefix>_<key>_document`."""
    return f"{prefix}_{key}_document"


def _header(idx_path: Path) -> tuple[int, int]:
    """(sequence count, document count + 1) from an `.idx` header."""
    with idx_path.open("rb") as handle:
        header = handle.read(HEADER_SIZE)
    if len(header) < HEADER_SIZE or not header.startswith(INDEX_MAGIC):
        raise ValueError(f"{idx_path} is not a Megatron indexed dataset index (bad header)")
    sequences, documents = struct.unpack("<QQ", header[len(INDEX_MAGIC) + 9 :])
    return int(sequences), int(documents)


def sequence_count(idx_path: Path) -> int:
    """How many sequences an indexed dataset holds, from its `.idx` header."""
    return _header(idx_path)[0]


def token_count(idx_path: Path) -> int:
    """How many tokens an indexed dataset holds: the sum of the sequence lengths stored after the header."""
    import numpy as np

    count = sequence_count(idx_path)
    lengths = np.fromfile(idx_path, dtype="<i4", count=count, offset=HEADER_SIZE)
    if len(lengths) != count:
        raise ValueError(f"{idx_path} is cut short: {len(lengths)} of {count} sequence lengths")
    return int(lengths.sum(dtype=np.int64))


def write_prepared(prepared: Path, prefix: str, vocab_size: int) -> int:
    """Each row of a prepared pt set (a packed Arrow file or a save_to_disk folder) as one document of
    `<prefix>_text_document`, its sequences the row's `seq_lengths` when packed; returns the number of documents."""
    import numpy as np
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    from factory_cli.data.arrow_files import record_batches

    out = document_prefix(prefix)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    builder = IndexedDatasetBuilder(f"{out}.bin", dtype=DType.optimal_dtype(vocab_size))
    documents = 0
    for batch in record_batches(prepared):
        column = batch.column("input_ids")
        offsets = column.offsets.to_numpy()
        values = column.values.to_numpy()
        lengths = batch.column("seq_lengths").to_pylist() if "seq_lengths" in batch.schema.names else None
        for row in range(batch.num_rows):
            ids = values[offsets[row] : offsets[row + 1]]
            if not len(ids):
                continue
            builder.add_document(np.asarray(ids), lengths[row] if lengths is not None else [len(ids)])
            documents += 1
        del column, values
    builder.finalize(f"{out}.idx")
    return documents


def indexing_job(job: Any) -> Any:
    """The job as the indexed data is prepared from it: unpacked, whole documents, every row in the training set."""
    data = job.data.model_copy(update={"packing": False, "max_length": WHOLE_DOCUMENTS, "eval_ratio": 0.0, "eval": []})
    return job.model_copy(update={"data": data})


def prepare_indexed(run_dir: Path, prefix: str, tokenizer_dir: str, say: Callable[[str], None] = print) -> IndexedData:
    """The run's pt data prepared by factory's pipeline (cached, bounded memory) and written once per content as
    megatron-core indexed data; `<prefix>_text_document.{bin,idx}` link to it. The report goes to `say`."""
    from factory_cli.cache import cache_root
    from factory_cli.data import cache
    from factory_cli.data.pipeline import DataError, prepare_data
    from factory_cli.modeling.load import load_tokenizer
    from factory_cli.runs import RunDir, write_json_atomic

    run = RunDir(run_dir)
    job = run.job()
    if job.stage != "pt":
        raise DataError(f"stage {job.stage} is written to indexed data by the engine's preprocess", "use pt")
    # From the folder the run's hf_model link names: the tokenizer's path is part of the cache key, and the same
    # model must give the same key in every run directory (and on the deepspeed backend).
    source = str(Path(tokenizer_dir).resolve())
    tokenizer = load_tokenizer(source, trust_remote_code=job.model.trust_remote_code)
    prepared = prepare_data(indexing_job(job), tokenizer, None, run.base_dirs())
    for line in prepared.report.lines():
        say(f"data: {line}")
    if prepared.from_cache:
        say(f"data: tokenized rows reused from the cache ({prepared.cache_key[:12]})")
    root = cache_root(job.data.cache_dir)
    key = cache.cache_key({"megatron_indexed": INDEXED_VERSION, "prepared": prepared.cache_key})
    entry = cache.lookup(root, key)
    from_cache = entry is not None
    if entry is None:
        with cache.building(root, key) as staging:
            documents = write_prepared(prepared.train_path, str(staging / ENTRY_PREFIX), len(tokenizer))
            entry = cache.commit(staging, root, key, {"documents": documents, "prepared": prepared.cache_key})
    else:
        say(f"data: indexed data reused from the cache ({key[:12]})")
    written_prefix = document_prefix(str(entry / ENTRY_PREFIX))
    target = document_prefix(prefix)
    for suffix in (".bin", ".idx"):
        link(Path(written_prefix + suffix), Path(target + suffix))
    written = IndexedData(
        prefix=target,
        documents=_header(Path(f"{target}.idx"))[1] - 1,
        tokens=token_count(Path(f"{target}.idx")),
        cache_key=key,
        from_cache=from_cache,
    )
    say(f"data: {written.documents} documents, {written.tokens:,} tokens in {target}.{{bin,idx}}")
    write_json_atomic(
        run.manifest_file,
        {
            "format": "megatron-indexed",
            "train": target,
            "eval": None,
            "documents": written.documents,
            "tokens": written.tokens,
            "cache_key": prepared.cache_key,
            "from_cache": prepared.from_cache,
            "indexed_cache_key": key,
            "report": prepared.report.to_dict(),
        },
    )
    return written


def link(source: Path, target: Path) -> None:
    """`target` becomes a symbolic link to `source`, replacing what was there in one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.link")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(source.resolve())
    os.replace(temporary, target)


def build_parser() -> argparse.ArgumentParser:
    """The step's command line (tests/unit/test_megatron_argv.py parses the planned argv with it)."""
    parser = argparse.ArgumentParser(description="a run's pt data -> Megatron indexed dataset (megatron-core)")
    parser.add_argument("--run-dir", type=Path, required=True, help="the run whose pt data factory's pipeline prepares")
    parser.add_argument("--output-prefix", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--engine-home", help="the engine checkout whose megatron/core writes the data")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from factory_cli.config.errors import UsageError
    from factory_cli.ui import console, print_error, quiet_engine_progress

    args = build_parser().parse_args(argv)
    if args.engine_home and (Path(args.engine_home) / "megatron" / "core").is_dir():
        sys.path.insert(0, args.engine_home)
    # megatron-core first: a step that cannot write the result stops before it prepares anything.
    import megatron.core.datasets.indexed_dataset  # noqa: F401

    quiet_engine_progress()

    def say(message: str) -> None:
        console.print(message, markup=False, soft_wrap=True)  # a log line, whole, however wide

    try:
        prepare_indexed(args.run_dir, args.output_prefix, args.tokenizer, say)
    except UsageError as exc:  # unusable data: one message and its fix, as factory's commands print it
        print_error(exc.message, exc.hint)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
