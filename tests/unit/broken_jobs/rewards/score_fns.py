"""Reward functions for the broken-job corpus: one usable, one with a signature no trainer can call."""


def score(completion: str, **kwargs: object) -> float:
    """A valid single-completion reward."""
    return float(len(completion) > 0)


def two_args(first: str, second: str) -> float:
    """Two required positional parameters with unknown names: not an accepted reward signature."""
    return 0.0
