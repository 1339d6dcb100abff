"""A script that exits when imported: a reward file must not."""

import sys


def score(completion: str, **kwargs: object) -> float:
    return 1.0


sys.exit(3)
