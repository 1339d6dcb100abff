"""Let TRL's fused LM head score only the supervised positions on every device, not only where Triton runs.

TRL's trainers (SFT, DPO, GRPO) replace the model's logits with a fused, tiled LM head that returns per-token
log-probabilities. On CUDA/XPU it projects only the positions whose label is not -100; elsewhere it projects every
position, so that compiled backends see static tile shapes. In eager mode on the CPU and on Ascend NPUs the shapes
may vary freely, and every prompt, system-prompt and template token costs a full vocabulary projection (hidden x vocab
multiply-adds, forward and backward) whose result is then thrown away. Selecting the compact path there changes no
number: the scored positions are the same, the others are zero either way.

The switch is the module-level `_use_triton` that `trl.trainer.utils` imported; the kernels module keeps its own
reference, so the tiles themselves still run the plain-torch implementation off CUDA. FACTORY_COMPACT_LM_HEAD=0
turns it off (the benchmark in bench/train_sft_lora.py measures both).

While the compact path is on, the projection itself goes through `dense_logprob.DenseLogProb` (two GEMMs instead of
TRL's three, see that module); FACTORY_DENSE_LOGPROB=0 keeps TRL's tiled kernel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

ENV_SWITCH = "FACTORY_COMPACT_LM_HEAD"
DENSE_ENV_SWITCH = "FACTORY_DENSE_LOGPROB"
COMPACT_DEVICES = ("cpu", "npu")


def switched_on(name: str) -> bool:
    """A FACTORY_* speed switch: on unless set to 0 / false."""
    return os.environ.get(name, "1").strip().lower() not in ("0", "false")


def compact_lm_head_wanted(device_type: str) -> bool:
    """Whether the compact path should be selected for this device (and the switch allows it)."""
    return device_type in COMPACT_DEVICES and switched_on(ENV_SWITCH)


def dense_kernel_on(compact: bool) -> bool:
    """Whether TRL's fused head runs factory's dense kernel: inside a `compact_lm_head` block that yielded True."""
    return compact and switched_on(DENSE_ENV_SWITCH)


@contextmanager
def compact_lm_head(device_type: str | None) -> Iterator[bool]:
    """Select TRL's compact scoring path for `device_type` while the block runs; yields whether it is on."""
    if device_type is None or not compact_lm_head_wanted(device_type):
        yield False
        return
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:
        yield False
        return
    original: Callable[[Any], bool] | None = getattr(trl_utils, "_use_triton", None)
    if original is None:  # a TRL without the fused head: nothing to select
        yield False
        return

    def use_compact(device: Any) -> bool:
        return device.type == device_type or original(device)

    tiled = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    namespace = vars(trl_utils)  # the module globals TRL's fused head reads at call time
    namespace["_use_triton"] = use_compact
    if tiled is not None and dense_kernel_on(True):
        from factory_cli.backends.deepspeed.dense_logprob import DenseLogProb

        namespace["_ChunkedLogProbFunction"] = DenseLogProb(tiled)
    try:
        yield True
    finally:
        namespace["_use_triton"] = original
        if tiled is not None:
            namespace["_ChunkedLogProbFunction"] = tiled
