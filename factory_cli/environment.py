"""`factory env`: library versions and devices; also the env.json of a run directory."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

LIBRARIES = (
    "factory-cli",
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "deepspeed",
    "bitsandbytes",
    "torch-npu",
    "flash-attn",
    "liger-kernel",
    "llmcompressor",
    "lm-eval",
    "megatron-core",
    "verl",
    "vllm",
)


def installed_version(name: str) -> str | None:
    """The installed version of a distribution, None when absent (read from metadata: nothing is imported)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Installed version of each library we drive, None when absent."""
    return {name: installed_version(name) for name in LIBRARIES}


def git_sha(directory: Path | None = None) -> str | None:
    """The checkout's commit, when run from one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment_report(device: str = "auto") -> dict[str, Any]:
    """Everything env.json records: python, platform, versions, devices, git sha."""
    from factory_cli.devices import detect_device

    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": library_versions(),
        "git_sha": git_sha(),
    }
    try:
        info = detect_device(device)
        report["device"] = {
            "kind": info.kind,
            "count": info.count,
            "name": info.name,
            "bf16": info.bf16,
            "memory_gb": info.memory_gb,
        }
    except (ImportError, RuntimeError) as exc:
        report["device"] = {"error": str(exc)}
    return report


def print_environment() -> None:
    """The report as two tables."""
    from factory_cli.ui import print_table

    report = environment_report()
    print_table(
        f"python {report['python']} on {report['platform']}",
        ["library", "version"],
        [(name, version or "-") for name, version in report["versions"].items()],
    )
    device = report["device"]
    rows = [(key, str(value)) for key, value in device.items()]
    print_table("devices (cuda > npu via torch_npu > cpu)", ["", ""], rows)
    title, engine_rows = verl_environment_rows()
    print_table(title, ["package", "version"], engine_rows)


def verl_environment_rows() -> tuple[str, list[tuple[str, str]]]:
    """verl's own interpreter (backends/common/engine_env.py) and what it holds, for `factory env`."""
    from factory_cli.backends.common.engine_env import engine_python, probe_engine
    from factory_cli.backends.verl.backend import VERL_PROBE_PACKAGES
    from factory_cli.config.errors import UsageError

    python = engine_python("verl", None)
    try:
        probe = probe_engine(python, VERL_PROBE_PACKAGES)
    except UsageError as exc:
        return f"verl engine: {python.describe()}", [("error", exc.message)]
    rows = [(name, "-" if v is None else v or "present") for name, v in probe.packages.items()]
    return f"verl engine: {python.describe()}, python {probe.python_version}", rows
