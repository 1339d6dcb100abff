"""Megatron's indexed dataset (`<prefix>.bin` / `.idx`): written for Megatron-LM pretraining, counted for MindSpeed.

`write_text_document` tokenizes the `text` of each jsonl row with megatron-core's own Hugging Face tokenizer class
and writes `<prefix>_text_document.{bin,idx}` through megatron-core's `IndexedDatasetBuilder`, as Megatron-LM's
`tools/preprocess_data.py --json-keys text --append-eod` does, but in one process: no worker pool that can leave
the step hanging when it fails, and it runs wherever megatron-core imports (CPU included).

`sequence_count` reads the sequence count from an `.idx` header without importing megatron-core (the header layout
is megatron-core's `indexed_dataset.py`: magic, version, dtype code, sequence count, document count).

`write_prepared` writes the same `<prefix>_text_document` from factory's own prepared pt set (data/pipeline.py
`prepare_data`: read, tokenize with the tokenizer's special tokens + EOS, in bounded memory, cached), one document per
row, read front to back from its memory-mapped Arrow files (data/arrow_files.py): one data preparation, two output
formats, the Arrow set for the deepspeed backend and the indexed one for Megatron. `prepare_indexed` does both for a
job (packing off: Megatron's GPTDataset lays documents end to end itself).

Run as a step: `python -m factory_cli.backends.megatron.indexed --input rows.jsonl --output-prefix P --tokenizer DIR`,
or `--run-dir R --output-prefix P --tokenizer DIR` to prepare the run's pt data with factory's pipeline first;
megatron-core comes from the Megatron-LM checkout named by $MEGATRON_LM_HOME when set (the one training reads the
data with), else from the installed wheel.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from collections.abc import Sequence
from pathlib import Path

INDEX_MAGIC = b"MMIDIDX\x00\x00"
TEXT_KEY = "text"


def document_prefix(prefix: str, key: str = TEXT_KEY) -> str:
    """What --data-path names for a pretraining corpus: `<prefix>_<key>_document`."""
    return f"{prefix}_{key}_document"


def sequence_count(idx_path: Path) -> int:
    """How many sequences an indexed dataset holds, from its `.idx` header."""
    with idx_path.open("rb") as handle:
        header = handle.read(len(INDEX_MAGIC) + 8 + 1 + 8)
    if len(header) < len(INDEX_MAGIC) + 17 or not header.startswith(INDEX_MAGIC):
        raise ValueError(f"{idx_path} is not a Megatron indexed dataset index (bad header)")
    (count,) = struct.unpack("<Q", header[len(INDEX_MAGIC) + 9 :])
    return int(count)


def write_text_document(input_file: Path, prefix: str, tokenizer_dir: str, append_eod: bool = True) -> int:
    """Tokenize every row's text into `<prefix>_text_document`; returns the number of documents written.

    Rows whose text tokenizes to nothing are skipped, as Megatron-LM's preprocess does.
    """
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
    from megatron.core.tokenizers.text.libraries.huggingface_tokenizer import HuggingFaceTokenizer

    tokenizer = HuggingFaceTokenizer(tokenizer_dir)
    out = document_prefix(prefix)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    builder = IndexedDatasetBuilder(f"{out}.bin", dtype=DType.optimal_dtype(tokenizer.vocab_size))
    documents = 0
    with input_file.open(encoding="utf-8") as rows:
        for number, line in enumerate(rows, start=1):
            if not line.strip():
                continue
            text = json.loads(line).get(TEXT_KEY)
            if not isinstance(text, str):
                raise ValueError(f"{input_file}:{number}: no `{TEXT_KEY}` string")
            ids = list(tokenizer.text_to_ids(text))
            if not ids:
                continue
            if append_eod:
                ids.append(tokenizer.eod)
            builder.add_document(ids, [len(ids)])
            documents += 1
    builder.finalize(f"{out}.idx")
    return documents


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


def prepare_indexed(run_dir: Path, prefix: str, tokenizer_dir: str) -> int:
    """The run's pt training data prepared by factory's pipeline (cached, bounded memory), written as
    `<prefix>_text_document`; returns the number of documents."""
    from factory_cli.data.pipeline import DataError, prepare_data
    from factory_cli.modeling.load import load_tokenizer
    from factory_cli.runs import RunDir

    run = RunDir(run_dir)
    job = run.job()
    if job.stage != "pt":
        raise DataError(f"stage {job.stage} is written to indexed data by the engine's preprocess", "use pt")
    unpacked = job.model_copy(update={"data": job.data.model_copy(update={"packing": False})})
    tokenizer = load_tokenizer(tokenizer_dir, trust_remote_code=job.model.trust_remote_code)
    prepared = prepare_data(unpacked, tokenizer, None, run.base_dirs())
    return write_prepared(prepared.train_path, prefix, len(tokenizer))


def build_parser() -> argparse.ArgumentParser:
    """The step's command line (tests/unit/test_megatron_argv.py parses the planned argv with it)."""
    parser = argparse.ArgumentParser(description="jsonl text rows -> Megatron indexed dataset (megatron-core)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="jsonl rows with a `text` field, tokenized here")
    source.add_argument("--run-dir", type=Path, help="a run whose pt data factory's pipeline prepares")
    parser.add_argument("--output-prefix", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--append-eod", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checkout = os.environ.get("MEGATRON_LM_HOME")
    if checkout and (Path(checkout) / "megatron" / "core").is_dir():
        sys.path.insert(0, checkout)
    if args.run_dir is not None:
        documents = prepare_indexed(args.run_dir, args.output_prefix, args.tokenizer)
    else:
        documents = write_text_document(args.input, args.output_prefix, args.tokenizer, args.append_eod)
    print(f"wrote {documents} documents to {document_prefix(args.output_prefix)}.{{bin,idx}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
