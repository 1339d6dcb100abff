"""Whether a local checkpoint folder's files can be what they claim, from their headers only: config.json parses as
a JSON object, and every .safetensors file has a header that fits the file and tensors that end inside it (a file of
zeros or one cut short by an interrupted copy fails here, in `factory check`, instead of deep in a load). Pure: no
torch, reads a few bytes of each weight file."""

from __future__ import annotations

import json
from pathlib import Path

HEADER_LIMIT = 100 * 1024 * 1024  # safetensors refuses headers above 100 MB as well


def config_problem(folder: Path) -> str | None:
    """What is wrong with folder/config.json, None when it is a JSON object (or absent: checked elsewhere)."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{path} is not valid JSON ({exc})"
    return None if isinstance(data, dict) else f"{path} is not a JSON object"


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a .safetensors file's framing, None when its header and tensor extents fit the file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"{path} is {size} bytes: shorter than a safetensors header"
            length = int.from_bytes(head, "little")
            if length < 2 or length > min(HEADER_LIMIT, size - 8):
                return f"{path} is not a safetensors file (header length {length} in a file of {size} bytes)"
            header = json.loads(handle.read(length))
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    except (UnicodeDecodeError, ValueError):
        return f"{path} is not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return f"{path} is not a safetensors file (its header is not a JSON object)"
    ends = [
        int(entry["data_offsets"][1])
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and isinstance(entry.get("data_offsets"), list)
    ]
    needed = 8 + length + max(ends, default=0)
    if needed > size:
        return f"{path} is cut short: {size} bytes, its tensors need {needed}"
    return None


def model_dir_problems(folder: Path) -> list[str]:
    """Every problem config_problem and safetensors_problem find in a checkpoint folder."""
    problems = [p for p in [config_problem(folder)] if p]
    problems += [p for f in sorted(folder.glob("*.safetensors")) if (p := safetensors_problem(f))]
    return problems
