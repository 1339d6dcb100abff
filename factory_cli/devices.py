"""The only place that knows CUDA from Ascend from CPU. torch (and torch_npu) are imported lazily.

Planning code uses the pure helpers (dist backend, env vars) with a device kind; only
`detect_device` touches torch.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DeviceKind = Literal["cuda", "npu", "cpu"]

ASCEND_SET_ENV = Path("/usr/local/Ascend/ascend-toolkit/set_env.sh")
# Where CANN's set_env.sh lives, first found wins: CANN 8.5+/9.x (`cann/`), a user install under $HOME, then the
# older `ascend-toolkit/` layout. The ATB library (nnal) has its own set_env.sh that MindSpeed-LLM needs too.
ASCEND_SET_ENV_CANDIDATES = (
    "/usr/local/Ascend/cann/set_env.sh",
    "$HOME/Ascend/cann/set_env.sh",
    str(ASCEND_SET_ENV),
    "$HOME/Ascend/ascend-toolkit/set_env.sh",
)
ASCEND_ATB_SET_ENV_CANDIDATES = ("/usr/local/Ascend/nnal/atb/set_env.sh", "$HOME/Ascend/nnal/atb/set_env.sh")


@dataclass(frozen=True)
class DeviceInfo:
    """What was found: kind, how many, the first one's name, bf16 support and memory."""

    kind: DeviceKind
    count: int
    name: str
    bf16: bool
    memory_gb: float | None = None

    @property
    def is_accelerator(self) -> bool:
        return self.kind != "cpu"


def _import_torch_npu() -> bool:
    if importlib.util.find_spec("torch_npu") is None:
        return False
    import torch_npu  # noqa: F401  - registers torch.npu

    return True


def detect_device(requested: str = "auto") -> DeviceInfo:
    """The device to run on: the requested kind, or the best one found (cuda > npu > cpu)."""
    import torch

    if requested in ("auto", "npu") and _import_torch_npu() and torch.npu.is_available():  # type: ignore[attr-defined]
        npu = torch.npu  # type: ignore[attr-defined]
        props = npu.get_device_properties(0)
        return DeviceInfo("npu", npu.device_count(), props.name, True, props.total_memory / 2**30)
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return DeviceInfo(
            "cuda", torch.cuda.device_count(), props.name, torch.cuda.is_bf16_supported(), props.total_memory / 2**30
        )
    if requested in ("cuda", "npu"):
        raise RuntimeError(f"device: {requested} was requested but no {requested} device is available")
    return DeviceInfo("cpu", usable_cpu_cores(), cpu_name(), False, None)


@functools.cache
def _cpuinfo_field(name: str) -> str | None:
    """The first `name : value` line of /proc/cpuinfo (None where it cannot be read); read once per field."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU's model name, as /proc/cpuinfo or the platform gives it."""
    name = _cpuinfo_field("model name")
    if name:
        return name
    import platform

    return platform.processor() or "cpu"


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this machine's CPU (empty where /proc/cpuinfo cannot be read)."""
    return frozenset((_cpuinfo_field("flags") or "").split())


# Instruction sets that multiply bf16 matrices with fp32 accumulation in hardware, which oneDNN uses for bf16 GEMMs:
# Intel AMX tiles (Xeon Sapphire Rapids and later) and AVX512-BF16 dot products (Xeon Cooper Lake, AMD Zen 4 and later).
BF16_MATMUL_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bf16_matmul_flag(flags: frozenset[str] | None = None) -> str | None:
    """The first of BF16_MATMUL_FLAGS this CPU (or `flags`) has, None where bf16 GEMMs would be emulated."""
    have = cpu_flags() if flags is None else flags
    return next((flag for flag in BF16_MATMUL_FLAGS if flag in have), None)


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX-BF16 or AVX512-BF16)."""
    return cpu_bf16_matmul_flag() is not None


def dist_backend(kind: DeviceKind) -> str:
    """torch.distributed backend: nccl on CUDA, hccl on Ascend, gloo on CPU."""
    return {"cuda": "nccl", "npu": "hccl", "cpu": "gloo"}[kind]


def visible_devices_var(kind: DeviceKind) -> str | None:
    """The variable that selects devices for a process."""
    return {"cuda": "CUDA_VISIBLE_DEVICES", "npu": "ASCEND_RT_VISIBLE_DEVICES", "cpu": None}[kind]


def alloc_conf_var(kind: DeviceKind) -> str | None:
    """The caching-allocator configuration variable."""
    return {"cuda": "PYTORCH_CUDA_ALLOC_CONF", "npu": "PYTORCH_NPU_ALLOC_CONF", "cpu": None}[kind]


def usable_cpu_cores() -> int:
    """The cores this process may run on (taskset / cpuset limits count), not every core of the machine."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def launch_env(kind: DeviceKind, nproc_per_node: int, cpu_cores: int | None = None) -> dict[str, str]:
    """Environment for every process of a run on this device kind.

    CPU ranks share the cores: each gets cores // nproc threads (2 ranks on 2 cores with the
    default thread count spend most of their time fighting over cores).
    """
    env: dict[str, str] = {"TOKENIZERS_PARALLELISM": "false"}
    alloc = alloc_conf_var(kind)
    if alloc:
        env[alloc] = "expandable_segments:True"
    if kind == "cpu":
        cores = cpu_cores or usable_cpu_cores()
        env["OMP_NUM_THREADS"] = str(max(1, cores // max(1, nproc_per_node)))
        env["CUDA_VISIBLE_DEVICES"] = ""
    if kind == "npu":
        env["HCCL_CONNECT_TIMEOUT"] = "1200"
        env["TASK_QUEUE_ENABLE"] = "1"
    return env


def ascend_set_env_script() -> Path | None:
    """The Ascend toolkit's set_env.sh, when installed."""
    return ASCEND_SET_ENV if ASCEND_SET_ENV.is_file() else None


def cuda_only_features_available() -> dict[str, bool]:
    """Optional CUDA kernels installed: flash-attn and Liger."""
    return {
        "flash_attn": importlib.util.find_spec("flash_attn") is not None,
        "liger_kernel": importlib.util.find_spec("liger_kernel") is not None,
    }


def peak_memory_mb() -> dict[str, float]:
    """This process's peak device memory so far, in MiB, as the caching allocator counts it: the most held by
    tensors (`peak_memory_allocated_mb`) and the most it reserved (`peak_memory_reserved_mb`). Empty on the CPU and
    wherever no CUDA / NPU device is in use yet (this initializes none)."""
    import torch

    for name in ("cuda", "npu"):  # torch.npu exists once torch_npu is imported
        backend = getattr(torch, name, None)
        if backend is not None and hasattr(backend, "is_initialized") and backend.is_initialized():
            return {
                "peak_memory_allocated_mb": backend.max_memory_allocated() / 2**20,
                "peak_memory_reserved_mb": backend.max_memory_reserved() / 2**20,
            }
    return {}
