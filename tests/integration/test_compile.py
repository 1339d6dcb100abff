"""train.compile: the decoder blocks run compiled (regional, dynamic shapes) and train to the same losses as eager."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.train_helpers import losses, train_in_process, write_job

pytestmark = pytest.mark.integration


def test_compiled_blocks_train_like_eager_and_leave_kernels_in_the_factory_cache(
    tmp_path: Path, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACTORY_CACHE", str(tmp_path / "factory-cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    # Rows of different lengths: one compiled graph must serve them all (dynamic shapes, no recompile per length).
    extra = {"train": {"micro_batch_size": 1, "gradient_accumulation_steps": 2}}
    eager_job = write_job(tmp_path / "eager", tiny_llama_dir, "sft", "lora", extra)
    compiled_job = write_job(
        tmp_path / "compiled", tiny_llama_dir, "sft", "lora", {**extra, "train": {**extra["train"], "compile": True}}
    )
    assert train_in_process(eager_job) == 0
    assert train_in_process(compiled_job) == 0
    eager, compiled = losses(tmp_path / "eager" / "run"), losses(tmp_path / "compiled" / "run")
    assert sorted(compiled) == sorted(eager) == [1, 2, 3]
    for step, value in eager.items():
        assert compiled[step] == pytest.approx(value, rel=1e-3), f"step {step}"
    kernels = tmp_path / "factory-cache" / "compile"
    assert kernels.is_dir() and any(path.is_file() for path in kernels.rglob("*")), "nothing was compiled"
