"""A reward file that fails when imported."""

raise RuntimeError("this reward module is broken on purpose")


def score(completion: str) -> float:
    """Never reached."""
    return 0.0
