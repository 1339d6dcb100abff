"""Run a launch step as a child process: argv as a list, the step's env on top of ours, signals handled.

Ctrl-C reaches every process of the foreground group by itself, so the parent ignores SIGINT while the
workers save a checkpoint and stop; a SIGTERM sent to the parent alone is forwarded to the child.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from types import FrameType


def run_child(argv: Sequence[str], env: Mapping[str, str], cwd: str | None = None) -> int:
    """Start argv, wait for it, return its exit code."""
    child_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(list(argv), env=child_env, cwd=cwd)

    def forward(signum: int, frame: FrameType | None) -> None:
        if process.poll() is None:
            process.send_signal(signum)

    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, forward)
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
