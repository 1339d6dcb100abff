"""factory_cli/backends/deepspeed/cpu_malloc.py: with the mmap threshold fixed, freed activation-sized blocks are
returned to the system even while small blocks between them stay alive; with glibc's default they are kept."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"),
]

SCRIPT = """
import sys, psutil, torch
from factory_cli.backends.deepspeed.cpu_malloc import fix_mmap_threshold
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
else:  # glibc's default: freeing one mapped block raises the threshold above the sizes below
    block = torch.ones(4 << 20, dtype=torch.uint8)
    del block
proc = psutil.Process()
before = proc.memory_info().rss
big, small = [], []
for _ in range(100):
    big.append(torch.ones(2 << 20, dtype=torch.uint8))  # 2 MiB, like a [tokens, 1536] fp32 activation
    small.append(torch.ones(64 << 10, dtype=torch.uint8))  # 64 KiB, alive between them
del big
print((proc.memory_info().rss - before) >> 20)
"""


def _kept_mb(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def test_freed_blocks_go_back_to_the_system_only_with_the_threshold_fixed() -> None:
    assert _kept_mb("fixed") < 40  # the 200 MiB of freed 2 MiB blocks are gone; the 6 MiB of small ones stay
    assert _kept_mb("default") > 150  # glibc's adaptive threshold keeps them on the fragmented heap
