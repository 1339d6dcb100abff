"""Built-in verifiable rewards. Each takes one completion (text) and the row's fields, returns a float.

Pure Python; `math_verify` is imported only when the math reward first runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
THINK_ANSWER_FORMAT = r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$"


def extract_final_answer(text: str) -> str | None:
    """The final answer of a completion: <answer>..</answer>, else \\boxed{..}, else `#### x`, else the last number."""
    tagged = ANSWER_TAG.findall(text)
    if tagged:
        return tagged[-1].strip()
    boxed = BOXED.findall(text)
    if boxed:
        return boxed[-1].strip()
    tail = text.rsplit("####", 1)[1].strip() if "####" in text else ""
    if tail:
        return tail.splitlines()[0].strip()
    numbers = LAST_NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def answers_match(predicted: str, gold: str) -> bool:
    """Mathematical equivalence via math-verify; exact numeric compare as a fast path."""
    try:
        if float(predicted.replace(",", "")) == float(gold.replace(",", "")):
            return True
    except ValueError:
        pass
    from math_verify import parse, verify  # lazy: pulls sympy

    def as_math(text: str) -> str:
        return text if "$" in text or "\\" in text else f"${text}$"

    try:
        gold_parsed = parse(as_math(gold))
        pred_parsed = parse(as_math(predicted))
        return bool(gold_parsed) and bool(pred_parsed) and bool(verify(gold_parsed, pred_parsed))
    except Exception:
        return False


def math_answer(completion: str, answer: Any = None, **_: Any) -> float:
    """1.0 when the completion's final answer equals the row's `answer` (math-verify equivalence)."""
    if answer is None:
        return 0.0
    predicted = extract_final_answer(completion)
    if predicted is None:
        return 0.0
    gold = extract_final_answer(str(answer)) or str(answer).strip()
    return 1.0 if answers_match(predicted, gold) else 0.0


def format_reward(completion: str, pattern: str = THINK_ANSWER_FORMAT, **_: Any) -> float:
    """1.0 when the whole completion matches `pattern` (default: <think>..</think><answer>..</answer>)."""
    return 1.0 if re.match(pattern, completion, re.DOTALL) else 0.0


def regex_reward(completion: str, pattern: str = "", **_: Any) -> float:
    """1.0 when `pattern` is found anywhere in the completion."""
    return 1.0 if pattern and re.search(pattern, completion, re.DOTALL) else 0.0


def length_reward(completion: str, target_chars: int = 400, **_: Any) -> float:
    """1.0 at or below `target_chars` characters, falling linearly to 0 at twice that."""
    size = len(completion)
    if size <= target_chars:
        return 1.0
    return max(0.0, 1.0 - (size - target_chars) / max(1, target_chars))


@dataclass(frozen=True)
class BuiltinReward:
    """A named built-in reward and what it needs from a row."""

    name: str
    function: Callable[..., float]
    description: str
    needs_answer: bool = False


BUILTIN_REWARDS: dict[str, BuiltinReward] = {
    r.name: r
    for r in (
        BuiltinReward("math_answer", math_answer, "final answer equals the row's answer (math-verify)", True),
        BuiltinReward("format", format_reward, "matches <think>..</think><answer>..</answer> (or kwargs.pattern)"),
        BuiltinReward("regex", regex_reward, "kwargs.pattern occurs in the completion"),
        BuiltinReward("length", length_reward, "short completions: 1 up to kwargs.target_chars, 0 at twice that"),
    )
}
