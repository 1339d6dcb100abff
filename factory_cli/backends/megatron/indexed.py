"""Megatron's indexed dataset (`<prefix>.bin` / `.idx`): written for Megatron-LM pretraining, counted for MindSpeed.

`write_text_document` tokenizes the `text` of each jsonl row with megatron-core's own Hugging Face tokenizer class
and writes `<prefix>_text_document.{bin,idx}` through megatron-core's `IndexedDatasetBuilder`, as Megatron-LM's
`tools/preprocess_data.py --json-keys text --append-eod` does, but in one process: no worker pool that can leave
the step hanging when it fails, and it runs wherever megatron-core imports (CPU included).

`sequence_count` reads the sequence count from an `.idx` header without importing megatron-core (the header layout
is megatron-core's `indexed_dataset.py`: magic, version, dtype code, sequence count, document count).

Run as a step: `python -m factory_cli.backends.megatron.indexed --input rows.jsonl --output-prefix P --tokenizer DIR`;
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


def build_parser() -> argparse.ArgumentParser:
    """The step's command line (tests/unit/test_megatron_argv.py parses the planned argv with it)."""
    parser = argparse.ArgumentParser(description="jsonl text rows -> Megatron indexed dataset (megatron-core)")
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--output-prefix", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--append-eod", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checkout = os.environ.get("MEGATRON_LM_HOME")
    if checkout and (Path(checkout) / "megatron" / "core").is_dir():
        sys.path.insert(0, checkout)
    documents = write_text_document(args.input, args.output_prefix, args.tokenizer, args.append_eod)
    print(f"wrote {documents} documents to {document_prefix(args.output_prefix)}.{{bin,idx}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
