"""Let TRL's fused LM head score only the supervised positions on the CPU too, not only where Triton runs.

TRL's trainers (SFT, DPO, GRPO) replace the model's logits with a fused, tiled LM head that returns per-token
log-probabilities. On CUDA/XPU it projects only the positions whose label is not -100; elsewhere it projects every
position, so that compiled backends see static tile shapes. In eager mode on the CPU the shapes may vary freely,
and every prompt, system-prompt and template token costs a full vocabulary projection (hidden x vocab multiply-adds,
forward and backward) whose result is then thrown away. Selecting the compact path there changes no
number: the scored positions are the same, the others are zero either way.

The switch is the module-level `_use_triton` that `trl.trainer.utils` imported; the kernels module keeps its own
reference, so the tiles themselves still run the plain-torch implementation on the CPU. While the compact path is on,
the projection itself goes through `dense_logprob.DenseLogProb` (two GEMMs instead of TRL's three, see that module).
`train.cpu_speedups: off` leaves TRL as it is (bench/train_sft_lora.py's `factory_no_speedups` variant measures it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def compact_lm_head() -> Iterator[bool]:
    """Select TRL's compact scoring path, through the dense kernel, for CPU tensors while the block runs; yields
    whether it is on (not with a TRL that has no fused head)."""
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:
        yield False
        return
    original: Callable[[Any], bool] | None = getattr(trl_utils, "_use_triton", None)
    tiled = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if original is None or tiled is None:  # a TRL without the fused head: nothing to select
        yield False
        return

    def use_compact(device: Any) -> bool:
        return device.type == "cpu" or original(device)

    from factory_cli.accel.cpu.dense_logprob import DenseLogProb

    namespace = vars(trl_utils)  # the module globals TRL's fused head reads at call time
    namespace["_use_triton"] = use_compact
    namespace["_ChunkedLogProbFunction"] = DenseLogProb(tiled)
    try:
        yield True
    finally:
        namespace["_use_triton"] = original
        namespace["_ChunkedLogProbFunction"] = tiled
