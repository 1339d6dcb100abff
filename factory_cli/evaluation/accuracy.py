"""Generation accuracy: greedy batched generation (factory_cli/inference/generate.py), scored by a reward.

`gsm8k_demo` generates an answer to each held-out demo-eval-math problem and scores it with the `math_answer`
reward (the final answer must equal the reference, math-verify equivalence). torch is imported inside functions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from factory_cli.config.errors import UsageError
from factory_cli.evaluation.report import TaskResult

MATH_DATASET = "demo-eval-math"
EXAMPLES_KEPT = 3


def load_math_rows(limit: int | None, dataset: str = MATH_DATASET) -> list[dict[str, Any]]:
    """Canonical grpo rows (prompt messages + answer) of a math dataset; rows without an answer are left out."""
    from factory_cli.config.schema import DatasetSpec
    from factory_cli.data.formats import RowError, convert_row
    from factory_cli.data.readers import read_rows
    from factory_cli.data.sources import resolve_dataset

    resolved = resolve_dataset(DatasetSpec(path=dataset))
    if resolved.file is None:
        raise UsageError(f"`{dataset}` is not a local dataset", "the math task reads a local file")
    rows: list[dict[str, Any]] = []
    for _, raw in read_rows(resolved.file):
        if limit is not None and len(rows) >= limit:
            break
        try:
            row = convert_row(raw, resolved.format_spec, "grpo")
        except RowError:
            continue
        if row.get("answer"):
            rows.append(row)
    if not rows:
        raise UsageError(f"no problem with an answer in {dataset}", "check the dataset")
    return rows


def encode_prompts(rows: Sequence[dict[str, Any]], tokenizer: Any, template: str | None) -> list[list[int]]:
    """Each row's prompt as the model sees it: the chat template with the generation prompt, else plain Q/A text."""
    from factory_cli.inference.render import encode_prompt

    encoded = []
    for row in rows:
        question = "\n".join(str(m.get("content", "")) for m in row["prompt"] if m.get("role") == "user")
        encoded.append(encode_prompt(tokenizer, row["prompt"], template, plain_text=f"Question: {question}\nAnswer:"))
    return encoded


def evaluate_math_accuracy(
    loaded: Any,
    template: str | None,
    *,
    limit: int | None,
    batch_size: int,
    max_new_tokens: int,
    progress: Callable[[str], None] | None = None,
) -> TaskResult:
    """`gsm8k_demo`: mean math_answer reward of greedy chat completions; stderr = sqrt(p(1-p)/n)."""
    from factory_cli.inference.generate import generate
    from factory_cli.rewards.builtin import extract_final_answer, math_answer

    started = time.perf_counter()
    rows = load_math_rows(limit)
    completions = generate(
        loaded.model,
        loaded.tokenizer,
        encode_prompts(rows, loaded.tokenizer, template),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
    )
    scores = [math_answer(c, row["answer"]) for c, row in zip(completions, rows, strict=True)]
    n = len(scores)
    accuracy = sum(scores) / n
    examples = [
        {
            "prompt": row["prompt"][-1]["content"],
            "completion": completion,
            "answer": row["answer"],
            "extracted": extract_final_answer(completion),
            "correct": bool(score),
        }
        for row, completion, score in list(zip(rows, completions, scores, strict=True))[:EXAMPLES_KEPT]
    ]
    return TaskResult(
        task="gsm8k_demo",
        metric="accuracy",
        value=accuracy,
        stderr=math.sqrt(accuracy * (1 - accuracy) / n),
        n=n,
        seconds=time.perf_counter() - started,
        details={
            "dataset": MATH_DATASET,
            "reward": "math_answer",
            "chat_template": template is not None,
            "max_new_tokens": max_new_tokens,
            "no_answer": sum(1 for c in completions if extract_final_answer(c) is None),
            "examples": examples,
        },
    )
