"""The engine stack a megatron run launches: checkouts, versions, Python and the modules they need. No imports.

The pip wheels hold only megatron/core: Megatron-LM's pretrain_gpt.py, MindSpeed-LLM's scripts and Megatron
Bridge's code are source checkouts named by environment variables (plan.py HOME_VARS, BRIDGE_HOME_VAR). Each
problem found here is one line saying what is wrong and the step that fixes it. `factory check` reports them for
a checkout that is configured on this machine (checks.py); `factory train` refuses to start with any of them
(backend.py). What each version floor fixes:
* Megatron-LM core_v0.17.0: SFTTokenizer's prompt format `default` (core_v0.16.1 raises NotImplementedError).
* Megatron Bridge 0.4+ requires Python 3.12 (its pyproject.toml: >=3.12,<3.13); factory runs its convert/export.
* MindSpeed-LLM 26.x runs on Megatron-LM core_v0.12.1's megatron/ copied into its checkout, and MindSpeed
  26.1.0_core_r0.12.1 (MindSpeed-LLM's docs/zh/pytorch/training/install_guide.md).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from factory_cli.backends.megatron.args import MEGATRON_LM, MINDSPEED_LLM

MEGATRON_LM_HOME = "MEGATRON_LM_HOME"
MINDSPEED_LLM_HOME = "MINDSPEED_LLM_HOME"
BRIDGE_HOME = "MEGATRON_BRIDGE_HOME"
MEGATRON_LM_MIN = (0, 17, 0)
MINDSPEED_MEGATRON = (0, 12)
BRIDGE_PYTHON = (3, 12)
CORE_VERSION_FILE = Path("megatron", "core", "package_info.py")
VERSION_PART = re.compile(r"^(MAJOR|MINOR|PATCH)\s*=\s*(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class StackProblem:
    """One thing missing or too old, and how to fix it."""

    what: str
    fix: str


def core_version(checkout: Path) -> tuple[int, int, int] | None:
    """megatron/core/package_info.py's MAJOR.MINOR.PATCH in a checkout, or None when it is not there."""
    try:
        text = (checkout / CORE_VERSION_FILE).read_text(encoding="utf-8")
    except OSError:
        return None
    parts = dict(VERSION_PART.findall(text))
    if not {"MAJOR", "MINOR", "PATCH"} <= parts.keys():
        return None
    return int(parts["MAJOR"]), int(parts["MINOR"]), int(parts["PATCH"])


def module_found(name: str) -> bool:
    """Whether a top-level module is importable, from files only."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _checkout(environ: Mapping[str, str], var: str, label: str, clone: str) -> tuple[Path | None, list[StackProblem]]:
    value = environ.get(var)
    if not value:
        return None, [StackProblem(f"${var} is not set (the {label} checkout)", f"{clone}; export {var}=<its path>")]
    path = Path(value).expanduser()
    if not path.is_dir():
        return None, [StackProblem(f"${var}={value} is not a folder", f"{clone}; export {var}=<its path>")]
    return path, []


def _scripts(home: Path, var: str, names: tuple[str, ...]) -> list[StackProblem]:
    missing = [n for n in names if not (home / n).is_file()]
    if not missing:
        return []
    return [StackProblem(f"${var} has no {', '.join(missing)}", f"point ${var} at the engine's repository root")]


def megatron_lm_problems(
    environ: Mapping[str, str],
    *,
    sft: bool,
    bridge: bool,
    local_impl: bool,
    found: Callable[[str], bool] = module_found,
    python: tuple[int, int] = (sys.version_info.major, sys.version_info.minor),
) -> list[StackProblem]:
    """Megatron-LM (CUDA): its checkout and version, Transformer Engine, datasets for SFT, Bridge and Python."""
    clone = "git clone https://github.com/NVIDIA/Megatron-LM && git -C Megatron-LM checkout core_v0.17.0"
    home, problems = _checkout(environ, MEGATRON_LM_HOME, "Megatron-LM", clone)
    floor = ".".join(map(str, MEGATRON_LM_MIN))
    if home is not None:
        problems += _scripts(home, MEGATRON_LM_HOME, ("pretrain_gpt.py",))
        version = core_version(home)
        if version is None or version < MEGATRON_LM_MIN:
            seen = ".".join(map(str, version)) if version else "unknown"
            problems.append(
                StackProblem(
                    f"Megatron-LM at ${MEGATRON_LM_HOME} is {seen}; the plan needs core_v{floor} or later (SFT's "
                    "prompt format default)",
                    f"git -C ${MEGATRON_LM_HOME} checkout core_v{floor}",
                )
            )
        datasets_dir = home / "megatron" / "core" / "datasets"
        built = any(datasets_dir.glob("helpers_cpp*.so"))
        if not built and not (shutil.which("g++") and shutil.which("make") and found("pybind11")):
            problems.append(
                StackProblem(
                    "Megatron-LM compiles its dataset index code (megatron/core/datasets/helpers.cpp) on first use and "
                    "needs g++, make and pybind11",
                    "install g++ and make, and pip install pybind11",
                )
            )
    if not local_impl and not found("transformer_engine"):
        problems.append(
            StackProblem(
                "Transformer Engine is not installed (Megatron-LM's default --transformer-impl)",
                "pip install --no-build-isolation 'transformer_engine[pytorch]', or add --transformer-impl local to "
                "megatron.extra_args",
            )
        )
    if sft and not found("datasets"):
        problems.append(StackProblem("Megatron-LM's SFT dataset reads jsonl with `datasets`", "pip install datasets"))
    if bridge:
        clone_bridge = "git clone https://github.com/NVIDIA-NeMo/Megatron-Bridge"
        _, bridge_problems = _checkout(environ, BRIDGE_HOME, "Megatron Bridge", clone_bridge)
        problems += bridge_problems
        if python < BRIDGE_PYTHON:
            problems.append(
                StackProblem(
                    f"Megatron Bridge (convert / export) needs Python {BRIDGE_PYTHON[0]}.{BRIDGE_PYTHON[1]}; factory "
                    f"runs on {python[0]}.{python[1]}",
                    "install factory, Megatron-LM and Megatron Bridge in a Python 3.12 environment, or convert "
                    "yourself and set megatron.load and megatron.save_hf: false",
                )
            )
    return problems


def mindspeed_problems(
    environ: Mapping[str, str], *, found: Callable[[str], bool] = module_found
) -> list[StackProblem]:
    """MindSpeed-LLM (Ascend): its checkout and scripts, Megatron-LM core_v0.12 inside it, MindSpeed, torch_npu."""
    clone = "git clone https://gitcode.com/ascend/MindSpeed-LLM && git -C MindSpeed-LLM checkout 26.1.0"
    home, problems = _checkout(environ, MINDSPEED_LLM_HOME, "MindSpeed-LLM", clone)
    if home is not None:
        scripts = ("convert_ckpt_v2.py", "preprocess_data.py", "pretrain_gpt.py", "posttrain_gpt.py")
        problems += _scripts(home, MINDSPEED_LLM_HOME, scripts)
        version = core_version(home)
        if version is None or version[:2] != MINDSPEED_MEGATRON:
            seen = ".".join(map(str, version)) if version else "missing"
            problems.append(
                StackProblem(
                    f"MindSpeed-LLM needs Megatron-LM core_v0.12.1's megatron/ inside ${MINDSPEED_LLM_HOME} "
                    f"(found: {seen})",
                    f"git clone https://github.com/NVIDIA/Megatron-LM && git -C Megatron-LM checkout core_v0.12.1 && "
                    f"cp -r Megatron-LM/megatron ${MINDSPEED_LLM_HOME}/",
                )
            )
    if not found("mindspeed"):
        problems.append(
            StackProblem(
                "MindSpeed is not installed",
                "git clone https://gitcode.com/ascend/MindSpeed && git -C MindSpeed checkout 26.1.0_core_r0.12.1 && "
                "pip install -e MindSpeed",
            )
        )
    if not found("torch_npu"):
        problems.append(StackProblem("torch_npu is not installed", "pip install torch-npu (the CANN release's)"))
    return problems


def stack_problems(
    engine: str,
    environ: Mapping[str, str],
    *,
    sft: bool,
    bridge: bool,
    local_impl: bool,
    found: Callable[[str], bool] = module_found,
) -> list[StackProblem]:
    """The problems of the engine's stack on this machine."""
    if engine == MINDSPEED_LLM:
        return mindspeed_problems(environ, found=found)
    assert engine == MEGATRON_LM
    return megatron_lm_problems(environ, sft=sft, bridge=bridge, local_impl=local_impl, found=found)
