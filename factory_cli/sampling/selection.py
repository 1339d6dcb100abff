"""Which answers of a group are kept: pure functions over the scores (no model, no I/O).

An answer is accepted at or above `min_score`. `best` keeps the highest accepted answer, `top-k` the k highest
accepted distinct answers, `all` every accepted distinct answer. A pair is the best accepted answer (chosen) and the
lowest-scored answer below it (rejected); a group whose answers all score the same gives no pair.
Ties keep the earlier answer, so a seed gives the same choice everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from factory_cli.sampling.request import KeepMode


@dataclass(frozen=True)
class Pair:
    """Indexes of the chosen and the rejected answer of a group."""

    chosen: int
    rejected: int


def _ranked(completions: Sequence[str], scores: Sequence[float]) -> list[int]:
    """Indexes by score, highest first (ties: earlier first), each distinct non-empty text once."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    seen: set[str] = set()
    ranked = []
    for index in order:
        text = completions[index].strip()
        if text and text not in seen:
            seen.add(text)
            ranked.append(index)
    return ranked


def accepted(completions: Sequence[str], scores: Sequence[float], min_score: float) -> list[int]:
    """The distinct accepted answers, best first."""
    return [i for i in _ranked(completions, scores) if scores[i] >= min_score]


def select(completions: Sequence[str], scores: Sequence[float], keep: KeepMode, k: int, min_score: float) -> list[int]:
    """The answers kept as SFT rows, best first."""
    chosen = accepted(completions, scores, min_score)
    if keep == "best":
        return chosen[:1]
    if keep == "top-k":
        return chosen[:k]
    return chosen


def pair(completions: Sequence[str], scores: Sequence[float], min_score: float) -> Pair | None:
    """The best accepted answer against the worst answer that scored lower; None when there is no such pair."""
    ranked = _ranked(completions, scores)
    best = next((i for i in ranked if scores[i] >= min_score), None)
    if best is None:
        return None
    worse = [i for i in ranked if scores[i] < scores[best]]
    if not worse:
        return None
    worst = min(worse, key=lambda i: (scores[i], i))
    return Pair(best, worst)
