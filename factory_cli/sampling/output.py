"""The rows `factory sample` writes and how, so that a stopped run continues without duplicating a row.

Rows are the canonical rows `factory train` reads (factory_cli/data/formats.py): SFT `{"messages"}` and DPO
`{"prompt", "chosen", "rejected"}`, plus `prompt_id`, `score` and `model`, which training ignores.

Resuming: the rows of one generation batch are appended to the output (and its pairs to the pairs output, when
there is one) and flushed, then one line naming the batch and each output's size after it is appended to
`progress.jsonl` in the run's state folder (`.<output name>.sample/` beside the output: a dotted folder, which a
dataset folder listing skips). A run that continues cuts the outputs back to the sizes the last complete progress
line names (rows written after it, or a line cut short by a kill, go), and starts at the next batch. The first
progress line holds the request's fingerprint: a different request is refused once a batch was written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory_cli.config.errors import UsageError

PROGRESS_FILE = "progress.jsonl"
SUMMARY_FILE = "summary.json"


def sft_row(prompt_id: str, messages: list[dict[str, Any]], answer: str, score: float, model: str) -> dict[str, Any]:
    """An accepted answer as an SFT conversation: the prompt's messages and the answer as the assistant's turn."""
    conversation = [*messages, {"role": "assistant", "content": answer}]
    return {"messages": conversation, "prompt_id": prompt_id, "score": score, "model": model}


def pair_row(
    prompt_id: str,
    messages: list[dict[str, Any]],
    chosen: tuple[str, float],
    rejected: tuple[str, float],
    model: str,
) -> dict[str, Any]:
    """A DPO preference row: the prompt, the better answer and the worse one, with both scores."""
    return {
        "prompt": messages,
        "chosen": [{"role": "assistant", "content": chosen[0]}],
        "rejected": [{"role": "assistant", "content": rejected[0]}],
        "prompt_id": prompt_id,
        "score": chosen[1],
        "rejected_score": rejected[1],
        "model": model,
    }


def state_dir(output: Path) -> Path:
    """Where a sampling run keeps its progress and summary: `.<output name>.sample/` beside the output."""
    return output.parent / f".{output.name}.sample"


@dataclass
class Resumed:
    """What an earlier run of the same request left: the batches done and their per-group records."""

    batches: int = 0
    groups: list[dict[str, Any]] = field(default_factory=list)


def _progress_lines(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a progress file (a last line a kill cut short is left out)."""
    lines: list[dict[str, Any]] = []
    for text in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not text.endswith("\n"):
            break
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            break
    return lines


class RowWriter:
    """Appends the rows of each batch to the output and records the batch as done."""

    def __init__(self, output: Path, fingerprint: dict[str, Any], force: bool, pairs: Path | None = None) -> None:
        self.output = output
        self.pairs = pairs  # a second output (DPO pairs beside the SFT rows), cut back and resumed with the first
        self.state = state_dir(output)
        self.progress = self.state / PROGRESS_FILE
        self.fingerprint = fingerprint
        self.force = force

    @property
    def summary_file(self) -> Path:
        return self.state / SUMMARY_FILE

    def open(self) -> Resumed:
        """Start, or continue what a stopped run of the same request wrote; UsageError for an output that is not
        this request's."""
        outputs = [(self.output, "end")] + ([(self.pairs, "pairs_end")] if self.pairs is not None else [])
        if self.force:
            for path, _ in outputs:
                path.unlink(missing_ok=True)
            self.progress.unlink(missing_ok=True)
            self.summary_file.unlink(missing_ok=True)
        lines = _progress_lines(self.progress) if self.progress.is_file() else []
        if len(lines) == 1 and self.output.exists() and self.output.stat().st_size == 0:
            lines = []  # a run that stopped before its first batch (a model that did not load): nothing to keep
        if lines and lines[0].get("fingerprint") != self.fingerprint:
            raise UsageError(
                f"{self.output} was written by a different `factory sample` request ({self.progress})",
                "pass --force to start over, write to another -o path, or repeat the earlier options to continue",
            )
        for path, _ in outputs:
            if not lines and path.exists() and path.stat().st_size > 0:
                raise UsageError(
                    f"{path} exists and was not written by `factory sample`",
                    "pass --force to replace it, or choose another output path",
                )
        self.state.mkdir(parents=True, exist_ok=True)
        if not lines:
            for path, _ in outputs:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"")
            self._rewrite_progress([{"fingerprint": self.fingerprint}])
            return Resumed()
        done = lines[1:]
        for path, key in outputs:
            end = done[-1][key] if done else 0
            if not path.exists() or path.stat().st_size < end:
                raise UsageError(
                    f"{path} is shorter than its progress record says ({end} bytes): it was changed since",
                    "pass --force to start over",
                )
            with open(path, "r+b") as handle:  # rows written after the last recorded batch go
                handle.truncate(end)
        self._rewrite_progress(lines)  # and so does a progress line a kill cut short
        return Resumed(batches=len(done), groups=[g for line in done for g in line["groups"]])

    def write_batch(
        self,
        batch: int,
        rows: Iterable[dict[str, Any]],
        groups: list[dict[str, Any]],
        pair_rows: Iterable[dict[str, Any]] = (),
    ) -> None:
        """The batch's rows (and pairs), then its progress line (the order that makes a kill at any point safe)."""
        self._append(self.output, rows)
        line: dict[str, Any] = {"batch": batch, "end": self.output.stat().st_size}
        if self.pairs is not None:
            self._append(self.pairs, pair_rows)
            line["pairs_end"] = self.pairs.stat().st_size
        self._append(self.progress, [{**line, "groups": groups}])

    def _rewrite_progress(self, lines: list[dict[str, Any]]) -> None:
        from factory_cli.runs import write_text_atomic

        write_text_atomic(self.progress, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))

    @staticmethod
    def _append(path: Path, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
