"""GGUF export: llama.cpp's own converter where it is installed, the built-in writer (gguf_writer.py) as the fallback.

llama.cpp's install step puts its converter, `convert_hf_to_gguf.py`, in the bin folder next to llama-cli, so an
installed llama.cpp is found on PATH. The converter knows every architecture and BPE pre-tokenizer llama.cpp knows;
gguf_writer.py knows the llama, mistral and qwen2 model types and four pre-tokenizer hashes, and is kept for machines
without llama.cpp. The converter runs under this interpreter (it needs torch, transformers, numpy and the `gguf`
package, which this environment has; a wrapper that is not a Python script runs as it is) on the loaded (merged)
model saved as a checkpoint. When it fails (e.g. a converter newer than the installed `gguf` package), the built-in
writer writes the file and the report says why.
`find_converter` and `converter_command` are pure.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CONVERTER = "convert_hf_to_gguf.py"
BUILTIN = "the built-in GGUF writer"
_FAILURE_CHARS = 300


def find_converter() -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py on PATH, or None."""
    found = shutil.which(CONVERTER)
    return Path(found) if found else None


def converter_command(converter: Path, model_dir: Path, outfile: Path, gguf_type: str, name: str) -> list[str]:
    """The argv converting `model_dir` to `outfile`: a Python script runs under this interpreter, a wrapper as is."""
    try:
        with converter.open("rb") as handle:
            first_line = handle.readline(256)
    except OSError:
        first_line = b""
    is_wrapper = first_line.startswith(b"#!") and b"python" not in first_line
    run = [str(converter)] if is_wrapper else [sys.executable, str(converter)]
    return [*run, str(model_dir), "--outfile", str(outfile), "--outtype", gguf_type, "--model-name", name]


def _failure(result: subprocess.CompletedProcess[str]) -> str:
    """The converter's last words: its last non-empty output line, shortened."""
    lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    return f"exit {result.returncode}: {last[:_FAILURE_CHARS]}"


def convert_with_llama_cpp(
    converter: Path, source: Any, path: Path, gguf_type: str, *, name: str, shard_size: int
) -> str | None:
    """Save `source` (merge.LoadedSource) as a checkpoint next to `path` and convert it; None, or why it failed."""
    from factory_cli.export.merge import save_checkpoint

    with tempfile.TemporaryDirectory(prefix=".factory-gguf-source-", dir=path.parent) as folder:
        save_checkpoint(source, Path(folder), shard_size)
        try:
            result = subprocess.run(
                converter_command(converter, Path(folder), path, gguf_type, name),
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError as exc:
            return f"it did not start: {exc}"
    if result.returncode != 0:
        return _failure(result)
    if not path.is_file():
        return f"exit 0 but no {path.name} was written"
    return None


def write_gguf_file(
    source: Any,
    path: Path,
    gguf_type: str,
    *,
    name: str,
    source_gguf: Path | None,
    shard_size: int,
    converter: Path | None,
) -> list[str]:
    """Write `source` (merge.LoadedSource) to `path` as an f16 / q8_0 GGUF; returns notes saying what wrote it."""
    notes: list[str] = []
    if converter is not None:
        failure = convert_with_llama_cpp(converter, source, path, gguf_type, name=name, shard_size=shard_size)
        if failure is None:
            return [f"GGUF written by llama.cpp's converter {converter}"]
        path.unlink(missing_ok=True)
        notes.append(f"llama.cpp's converter {converter} failed ({failure}); {BUILTIN} wrote the file instead")
    from factory_cli.export.gguf_writer import write_gguf

    notes += write_gguf(source.model, source.tokenizer, path, gguf_type, name=name, source_gguf=source_gguf)
    if converter is None:
        notes.append(f"GGUF written by {BUILTIN} (llama.cpp's {CONVERTER} is not on PATH)")
    return notes
