"""data.streaming trains from a stream tokenized and packed on the fly, and a run stopped in the middle resumes where
the stream stopped: the resumed steps see the same tokens and give the same losses as an uninterrupted run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.train_helpers import losses, metrics, train_in_process, write_job

pytestmark = pytest.mark.integration

STREAM: dict[str, Any] = {
    "data": {"streaming": True, "train": [{"path": "demo-pt"}], "max_length": 64},
    "train": {"max_steps": 5},
    "method": {"lora": {"dropout": 0.1}},
}


def test_a_stopped_stream_resumes_with_the_steps_of_an_uninterrupted_run(
    tmp_path: Path, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    straight = write_job(tmp_path / "straight", tiny_llama_dir, "pt", "lora", STREAM)
    assert train_in_process(straight) == 0
    assert "streamed while training" in capsys.readouterr().out
    reference = metrics(tmp_path / "straight" / "run")
    assert not (tmp_path / "straight" / "cache").exists()  # nothing prepared on disk before step 1

    resumed = write_job(tmp_path / "resumed", tiny_llama_dir, "pt", "lora", STREAM)
    monkeypatch.setenv("FACTORY_TEST_INTERRUPT_AT_STEP", "3")
    assert train_in_process(resumed) == 1
    assert "interrupted by SIGTERM at step 3" in capsys.readouterr().out
    monkeypatch.delenv("FACTORY_TEST_INTERRUPT_AT_STEP")
    assert train_in_process(resumed) == 0
    assert "resuming from" in capsys.readouterr().out

    run = tmp_path / "resumed" / "run"
    after = losses(run)
    assert sorted(after) == [1, 2, 3, 4, 5]
    expected = {r["step"]: r for r in reference if "loss" in r}
    for step in (4, 5):  # the batches after the checkpoint: the same tokens, so the same loss
        assert after[step] == pytest.approx(expected[step]["loss"], rel=1e-5), step
    seen = [r.get("num_input_tokens_seen") for r in metrics(run) if "loss" in r]
    if all(s is not None for s in seen):
        assert seen == [expected[s].get("num_input_tokens_seen") for s in (1, 2, 3, 4, 5)]
