"""Run an engine's Python script so that a failure always ends the process.

An engine script that raises while a multiprocessing pool or child it started is still alive can print its
traceback and then wait forever at interpreter exit (multiprocessing joins its non-daemonic children there), and
the run would hang with it. Here the script runs as `__main__` (its folder first on sys.path, as `python script.py`
does); when it raises or exits non-zero, its multiprocessing children are killed and the process ends at once with
os._exit, skipping the exit handlers that would wait.

    python -m factory_cli.backends.megatron.guard SCRIPT [ARGS...]
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import sys
import traceback
from collections.abc import Sequence

USAGE_EXIT = 2


def _end(code: int) -> None:
    for child in multiprocessing.active_children():
        child.kill()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_code(value: object) -> int:
    """SystemExit's code as a process exit status (None is 0, a message is 1)."""
    if value is None:
        return 0
    return value if isinstance(value, int) else 1


def main(argv: Sequence[str]) -> int:
    if not argv:
        print("usage: python -m factory_cli.backends.megatron.guard SCRIPT [ARGS...]", file=sys.stderr)
        return USAGE_EXIT
    script = os.path.abspath(argv[0])
    sys.argv = [script, *argv[1:]]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        code = exit_code(stop.code)
        if code:
            if not isinstance(stop.code, int) and stop.code is not None:
                print(stop.code, file=sys.stderr)
            _end(code)
        return 0
    except BaseException:
        traceback.print_exc()
        _end(1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
