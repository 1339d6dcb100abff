"""The planners' shared pieces (factory_cli/backends/common/plan.py): run paths, flag numbers, the Ascend wrapper."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory_cli.backends.common.plan import LR_DECAY_STYLES, PYTHON, RunPaths, num, on_device
from factory_cli.config.defaults import resolve_defaults
from factory_cli.config.schema import JOB_MODELS
from factory_cli.devices import ASCEND_SET_ENV


def test_run_paths(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    assert paths.hf_model == str(tmp_path / "run" / "hf_model")
    assert paths.checkpoints == str(tmp_path / "run" / "checkpoints")
    assert paths.final == str(tmp_path / "run" / "final")
    assert paths.sub("a", "b.json") == str(tmp_path / "run" / "a" / "b.json")
    job = resolve_defaults(
        JOB_MODELS["deepspeed"].model_validate(
            {
                "backend": "deepspeed",
                "stage": "sft",
                "model": {"name_or_path": "smollm2-135m-instruct"},
                "data": {"train": ["demo-sft-alpaca"]},
                "output": {"dir": str(tmp_path / "out")},
            }
        )
    )
    assert RunPaths.run_dir_of(job) == tmp_path / "out"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (8, "8"),
        (1e-4 * 0.1, "1e-05"),
        (0.0001, "0.0001"),
        (2.0, "2"),
        (0.1 + 0.2, "0.3"),
        (123456789012, "123456789012"),
    ],
)
def test_num(value: float, text: str) -> None:
    assert num(value) == text


def test_lr_decay_styles() -> None:
    assert LR_DECAY_STYLES == {
        "cosine": "cosine",
        "cosine_with_min_lr": "cosine",
        "linear": "linear",
        "constant": "constant",
        "constant_with_warmup": "constant",
        "warmup_stable_decay": "WSD",
    }
    assert PYTHON == "python"


def test_on_device_wraps_only_ascend() -> None:
    argv = ["python", "-m", "x", "--name", "a b"]
    assert on_device(argv, "cuda") is argv
    assert on_device(argv, "cpu") == argv
    assert on_device(argv, "npu") == [
        "bash",
        "-c",
        f"source {ASCEND_SET_ENV} && exec python -m x --name 'a b'",
    ]
