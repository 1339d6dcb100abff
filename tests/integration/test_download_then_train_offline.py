"""`factory download` on a connected machine, then `factory train` with no network: the tiny Llama is served by a
stand-in Hugging Face Hub on 127.0.0.1 (tests/hub_stand_in.py) under a Hub id, downloaded once, and trained from
the folder and from the cache with the hub gone and offline mode on."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory_cli.config.schema import ModelSection
from factory_cli.modeling.download import download_model
from tests.hub_stand_in import serve_repo
from tests.integration.train_helpers import losses, train_in_process, write_job

HUB_ID = "stand-in/tiny-llama"


def test_a_downloaded_model_trains_with_no_network(
    tmp_path: Path, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with serve_repo(tiny_llama_dir, HUB_ID) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        _, folder = download_model(ModelSection(name_or_path=HUB_ID), tmp_path / "models" / "tiny")
        download_model(ModelSection(name_or_path=HUB_ID), None)  # and into the cache
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(folder.files)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the hub is gone
    for name, model in (("folder", folder.folder), ("cache", HUB_ID)):
        job = write_job(tmp_path / name, model, "sft", extra={"train": {"max_steps": 1}})
        assert train_in_process(job) == 0, name
        assert sorted(losses(tmp_path / name / "run")) == [1], name
