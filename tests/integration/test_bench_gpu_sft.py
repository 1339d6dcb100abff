"""The gpu_sft benchmark end to end on the CPU (`quick`: a tiny qwen2 through `factory train`), ~30-40 s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import gpu_sft, harness

pytestmark = pytest.mark.integration


def test_quick_run_trains_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smollm2_tokenizer_dir: Path
) -> None:
    monkeypatch.setattr(gpu_sft, "WORK", tmp_path / "work")
    monkeypatch.setattr(gpu_sft, "TOKENIZER_DIR", smollm2_tokenizer_dir)
    monkeypatch.setattr(harness, "RESULTS", tmp_path / "results")

    result = gpu_sft.run(runs=1, quick=True)
    saved = json.loads(result.save().read_text())

    assert saved["name"] == "gpu_sft_quick"
    assert set(saved["metrics"]) == {"factory"} and len(saved["runs"]["factory"]) == 1
    factory = saved["metrics"]["factory"]
    assert factory["tokens_per_second"] > 0 and factory["step_seconds"] > 0
    assert factory["steps"] == gpu_sft.QUICK.steps
    assert 0 < factory["tokens_per_step"] <= gpu_sft.QUICK.rows_per_step * gpu_sft.QUICK.max_length
    assert "mfu_percent" not in factory and "peak_memory_allocated_mb" not in factory  # a CPU run
    assert any("no MFU" in note for note in saved["notes"])
    assert {"machine", "versions", "time"} <= set(saved)

    info = json.loads((gpu_sft.QUICK.model_dir / gpu_sft.MODEL_INFO).read_text())
    assert info["architecture"] == gpu_sft.architecture_kwargs(gpu_sft.QUICK)
    # 2 layers of hidden 64 and the 49,152-token embedding, tied with the LM head and counted once.
    assert 3_000_000 < info["parameters"] < 3_500_000
    assert any(f"{info['parameters']:,} parameters" in note for note in saved["notes"])
    job = (tmp_path / "work" / "quick-factory-0" / "job.yaml").read_text()
    assert "method:\n  type: full" in job and "packing: true" in job
