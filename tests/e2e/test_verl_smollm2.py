"""The embedded SmolLM2-135M-Instruct through verl's own SFT trainer on the CPU (examples/verl_sft_cpu.yaml, fewer
steps): LoRA learns, and final/ (verl's model merger, adapter folded in) answers through factory's inference path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_verl_train import VERL_PYTHON, generates
from tests.integration.train_helpers import REPO, losses, train_cli

pytestmark = [pytest.mark.e2e, pytest.mark.verl]


def test_verl_sft_lora_on_smollm2_learns(tmp_path: Path, smollm2_hf_dir: Path, factory_cache: Path) -> None:
    assert VERL_PYTHON.is_file(), "verl's environment is missing: run make setup-verl"
    # The same 8 conversations in every step (global batch 8): the loss of one batch falls as LoRA fits it.
    done = train_cli(
        REPO / "examples" / "verl_sft_cpu.yaml",
        f"output.dir={tmp_path / 'run'}",
        "train.max_steps=3",
        "data.train=[{path: demo-sft-alpaca, max_samples: 8}]",
        env={"FACTORY_CACHE": str(factory_cache)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = losses(tmp_path / "run")
    assert sorted(steps) == [1, 2, 3]
    assert steps[3] < steps[1] - 0.05, steps
    final = tmp_path / "run" / "final"
    assert json.loads((final / "factory_complete.json").read_text())["step"] == 3
    assert (final / "lora_adapter" / "adapter_config.json").is_file()
    assert any(text.strip() for text in generates(final))
