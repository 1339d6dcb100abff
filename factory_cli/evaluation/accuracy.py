"""Generation accuracy: greedy, batched, left-padded generation with the chat template, scored by a reward.

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


def render_prompts(rows: Sequence[dict[str, Any]], tokenizer: Any, template: str | None) -> list[str]:
    """Each row's prompt as the model sees it: the chat template with the generation prompt, else plain Q/A text."""
    from factory_cli.data.chat_render import render_chat

    bos = tokenizer.bos_token if isinstance(tokenizer.bos_token, str) else ""
    eos = tokenizer.eos_token if isinstance(tokenizer.eos_token, str) else ""
    texts = []
    for row in rows:
        if template:
            texts.append(render_chat(template, row["prompt"], add_generation_prompt=True, bos_token=bos, eos_token=eos))
        else:
            question = "\n".join(str(m.get("content", "")) for m in row["prompt"] if m.get("role") == "user")
            texts.append(f"Question: {question}\nAnswer:")
    return texts


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: set[int] = set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (config_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return sorted(ids)


def generate_greedy(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    add_special_tokens: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Greedy completions of `prompts` (special tokens stripped), left-padded in batches of `batch_size`."""
    import torch

    device = next(model.parameters()).device
    stop = _stop_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop[0] if stop else 0)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    completions: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start : start + batch_size])
            encoded = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
            encoded = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                output = model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    eos_token_id=stop or None,
                    pad_token_id=pad_id,
                )
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            completions += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            if progress is not None:
                progress(f"generated {len(completions)}/{len(prompts)}")
    finally:
        tokenizer.padding_side = side
    return completions


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
    from factory_cli.rewards.builtin import extract_final_answer, math_answer

    started = time.perf_counter()
    rows = load_math_rows(limit)
    prompts = render_prompts(rows, loaded.tokenizer, template)
    completions = generate_greedy(
        loaded.model,
        loaded.tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        add_special_tokens=template is None,
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
