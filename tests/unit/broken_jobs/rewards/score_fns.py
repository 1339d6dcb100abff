"""Reward functions for the broken-job corpus: one usable, the others unusable in one way each."""

from __future__ import annotations


def score(completion: str, **kwargs: object) -> float:
    """A valid single-completion reward."""
    return float(len(completion) > 0)


def two_args(first: str, second: str) -> float:
    """Two required positional parameters with unknown names: not an accepted reward signature."""
    return 0.0


def raises(completion: str, **kwargs: object) -> float:
    """Fails on every call."""
    return len(completion) / 0


def returns_none(completion: str, **kwargs: object) -> float | None:
    """Forgets to return."""
    return None


def returns_text(completion: str, **kwargs: object) -> str:
    """A number as text."""
    return "1.0"


def returns_nan(completion: str, **kwargs: object) -> float:
    """0/0 in disguise."""
    return float("nan")


def returns_inf(completion: str, **kwargs: object) -> float:
    """A division by a zero length in disguise."""
    return float("inf")


def one_for_the_batch(completions: list[str], **kwargs: object) -> list[float]:
    """A batch (TRL) reward returning one value for the whole batch."""
    return [1.0]


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: object = None
) -> dict[str, float]:
    """A verl reward whose dict lacks `score`."""
    return {"acc": 1.0}
