"""verl on the CPU, for tests and demos only: a platform registered through verl's own extension hook.

verl ships nvidia, huawei (npu) and amd platforms. The verl backend's run step loads this module in verl's
processes only for `device: cpu` (`VERL_USE_EXTERNAL_MODULES` names it, `VERL_PLATFORM=cpu` picks it; see
backends/verl/plan.py `cpu_env`), so verl's SFT trainer trains the embedded model here and in CI. GPU and NPU
runs never load it. Two things besides the platform class:

* verl asks torch for the process group `cpu:gloo,<device>:<backend>`; with the device being the CPU that is
  `cpu:gloo,cpu:gloo`, which torch refuses (duplicate device type), so that one string is passed on as `gloo`;
* verl's FSDP engine is registered for cuda and npu only: the plan sets `VERL_ENGINE_DEVICE=cuda` to pick it,
  while every tensor stays on this platform's device, the CPU.

It imports torch and verl, and is imported by verl (at `import verl`), never by factory itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import torch
import torch.distributed
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry

PLATFORM_NAME = "cpu"
_DUPLICATE_CPU_BACKEND = "cpu:gloo,cpu:gloo"


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """The CPU as verl's accelerator: gloo collectives, no device memory, no profiler."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return _CPU_DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return True

    def current_device(self) -> Any:
        # verl moves modules and tensors with `.to(get_device_id())`; an int would mean an accelerator index.
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextlib.contextmanager
    def nvtx_range(self, msg: str) -> Iterator[None]:
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "CPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_cpus": num_gpus}

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def _zero(*args: Any, **kwargs: Any) -> int:
    return 0


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


def _mem_get_info(*args: Any, **kwargs: Any) -> tuple[int, int]:
    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page


class _CPUDeviceModule(ModuleType):
    """torch.cpu plus the torch.cuda-style calls verl makes on its device module (memory statistics,
    cache and RNG state): no device memory to report, so they report nothing."""

    memory_reserved = memory_allocated = max_memory_reserved = max_memory_allocated = staticmethod(_zero)
    empty_cache = ipc_collect = set_per_process_memory_fraction = reset_peak_memory_stats = staticmethod(_nothing)
    mem_get_info = staticmethod(_mem_get_info)
    get_rng_state = staticmethod(torch.get_rng_state)
    set_rng_state = staticmethod(torch.set_rng_state)

    def get_device_name(self, *args: Any) -> str:
        return "cpu"

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)


_CPU_DEVICE_MODULE = _CPUDeviceModule("factory_cpu_device")
_init_process_group = torch.distributed.init_process_group


def _init_gloo_process_group(*args: Any, **kwargs: Any) -> Any:
    """torch's init_process_group with verl's `cpu:gloo,cpu:gloo` passed on as `gloo`."""
    if kwargs.get("backend") == _DUPLICATE_CPU_BACKEND:
        kwargs["backend"] = "gloo"
    elif args and args[0] == _DUPLICATE_CPU_BACKEND:
        args = ("gloo", *args[1:])
    return _init_process_group(*args, **kwargs)


torch.distributed.init_process_group = _init_gloo_process_group
