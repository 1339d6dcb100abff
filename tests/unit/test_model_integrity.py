"""`factory check` reads a local checkpoint's headers: a config.json that is not JSON, a weight file of zeros and
one cut short are each one error naming the file (exit 2, no traceback); a sound folder passes."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from factory_cli.modeling.integrity import model_dir_problems, safetensors_problem
from tests.unit.test_cli import run_cli


def write_safetensors(path: Path, tensor_bytes: int = 16) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [tensor_bytes // 4], "data_offsets": [0, tensor_bytes]}})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"\0" * tensor_bytes)


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    write_safetensors(folder / "model.safetensors")
    return folder


def test_a_sound_folder_has_no_problem(model_dir: Path) -> None:
    assert model_dir_problems(model_dir) == []


def test_each_damage_is_named(model_dir: Path) -> None:
    weights = model_dir / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[:-4])
    assert "is cut short" in str(safetensors_problem(weights))
    weights.write_bytes(b"\0" * len(whole))
    assert "is not a safetensors file (header length 0" in str(safetensors_problem(weights))
    weights.write_bytes(b"\1\0")
    assert "shorter than a safetensors header" in str(safetensors_problem(weights))
    (model_dir / "config.json").write_text("{not json")
    assert [p.split(" ")[0] for p in model_dir_problems(model_dir)] == [
        str(model_dir / "config.json"),
        str(weights),
    ]


def test_check_refuses_a_damaged_checkpoint(model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(model_dir / "model.safetensors", model_dir / "model-copy.safetensors")
    (model_dir / "model.safetensors").write_bytes(b"\0" * 64)
    job = tmp_path / "job.yaml"
    job.write_text(
        f"backend: deepspeed\nstage: sft\ndevice: cpu\nmodel:\n  name_or_path: {model_dir}\n"
        "data:\n  train: [demo-sft-alpaca]\n"
    )
    code, out, err = run_cli(["check", str(job)])
    flat = " ".join((out + err).split())
    assert code == 2 and "Traceback" not in out + err
    assert f"{model_dir / 'model.safetensors'} is not a safetensors file" in flat
    assert "model-copy.safetensors" not in flat
