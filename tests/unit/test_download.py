"""modeling/download.py and `factory download`: the files a run needs, fetched from a stand-in Hugging Face Hub on
127.0.0.1 (tests/hub_stand_in.py) into a folder or the cache and checked against the sizes and hashes it publishes,
then found with no network; ModelScope and Modelers through their libraries (stand-in modules here)."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from factory_cli.cli import app
from factory_cli.config.errors import UsageError
from factory_cli.config.schema import ModelSection
from factory_cli.modeling.download import download_model, fetch_model, select_files, verify_files
from factory_cli.modeling.locate import locate_model
from tests.hub_stand_in import StandIn, isolate_hubs, serve_repo

REPO_FILES = {
    "config.json": '{"model_type": "llama"}',
    "generation_config.json": '{"eos_token_id": 2}',
    "model.safetensors": "weights" * 100,
    "pytorch_model.bin": "old weights",
    "tokenizer.json": "{}",
    "tokenizer_config.json": "{}",
    "chat_template.jinja": "{{ messages }}",
    "modeling_custom.py": "# remote code",
    "model.Q8_0.gguf": "GGUF",
    "original/consolidated.00.pth": "meta weights",
    ".gitattributes": "*.safetensors filter=lfs",
}
RUN_FILES = [
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
]


@pytest.fixture(autouse=True)
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_hubs(tmp_path, monkeypatch)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    repo = tmp_path / "served"
    for name, text in REPO_FILES.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    import huggingface_hub.constants

    # tests/conftest.py puts the test run offline before huggingface_hub reads its flag; this stand-in is online
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with serve_repo(repo) as stand_in:
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        yield stand_in


def model(name: str, **fields: object) -> ModelSection:
    return ModelSection.model_validate({"name_or_path": name, **fields})


# ------------------------------------------------------------------------------------------------ what is fetched


def test_a_run_needs_configs_tokenizer_template_and_one_weight_format() -> None:
    assert select_files(list(REPO_FILES)) == RUN_FILES
    assert "modeling_custom.py" in select_files(list(REPO_FILES), trust_remote_code=True)


def test_without_safetensors_the_torch_shards_are_fetched() -> None:
    names = ["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "tokenizer.model"]
    names += ["pytorch_model.bin.index.json", "training_args.bin"]
    assert select_files(names) == sorted(set(names) - {"training_args.bin"})


def test_a_gguf_source_fetches_just_its_file() -> None:
    assert select_files(list(REPO_FILES), gguf_file="model.Q8_0.gguf") == ["model.Q8_0.gguf"]
    assert select_files(list(REPO_FILES), gguf_file="absent.gguf") == []


def test_a_file_that_differs_from_what_the_hub_publishes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_text("abc")
    lfs = types.SimpleNamespace(sha256="0" * 64)
    assert verify_files(tmp_path, {"model.safetensors": types.SimpleNamespace(size=3, lfs=None)}, hashes=True) == 1
    with pytest.raises(UsageError, match="is 3 bytes, the hub says 4"):
        verify_files(tmp_path, {"model.safetensors": types.SimpleNamespace(size=4, lfs=None)}, hashes=False)
    with pytest.raises(UsageError, match="does not match the hub's hash"):
        verify_files(tmp_path, {"model.safetensors": types.SimpleNamespace(size=3, lfs=lfs)}, hashes=True)
    assert not (tmp_path / "model.safetensors").exists()  # removed, so the next download fetches it again


# ------------------------------------------------------------------------------------------------ from the stand-in Hub


def test_download_to_a_folder_then_it_loads_with_no_network(
    tmp_path: Path, hub: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    location, fetched = download_model(model(hub.repo_id), tmp_path / "models" / "tiny")
    assert (location.where, location.hub, location.repo_id) == ("remote", "hf", hub.repo_id)
    assert sorted(fetched.files) == RUN_FILES and fetched.verified == len(RUN_FILES)
    assert (tmp_path / "models" / "tiny" / "model.safetensors").read_text() == REPO_FILES["model.safetensors"]
    assert not any("resolve" in r and r.endswith(("pytorch_model.bin", ".gguf", ".pth", ".py")) for r in hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch_model(model("models/tiny")) == str((tmp_path / "models" / "tiny").resolve())


def test_download_to_the_cache_then_the_hub_id_resolves_there_offline(
    tmp_path: Path, hub: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, fetched = download_model(model(hub.repo_id), None)
    assert fetched.folder.is_relative_to(tmp_path / "hf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert locate_model(model(hub.repo_id)).where == "cache"
    assert fetch_model(model(hub.repo_id)) == str(fetched.folder)
    # and a second machine's copy is written out from the cache, no hub asked
    asked = len(hub.requests)
    _, copied = download_model(model(hub.repo_id), tmp_path / "copy")
    assert sorted(copied.files) == RUN_FILES and len(hub.requests) == asked
    assert not (tmp_path / "copy" / "model.safetensors").is_symlink()


def test_the_run_fetch_downloads_into_the_cache_once(hub: StandIn) -> None:
    path = fetch_model(model(hub.repo_id))
    asked = len(hub.requests)
    assert fetch_model(model(hub.repo_id)) == path
    assert len(hub.requests) == asked


def test_a_repository_the_hub_does_not_have_is_one_message(hub: StandIn) -> None:
    with pytest.raises(UsageError, match="downloading nobody/nothing from the Hugging Face Hub failed"):
        download_model(model("nobody/nothing"), None)


def test_a_local_model_is_not_downloaded(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(UsageError, match="already on this machine"):
        download_model(model("m.gguf"), tmp_path / "out")


def test_factory_download_prints_the_files_and_the_job_line(tmp_path: Path, hub: StandIn) -> None:
    result = CliRunner().invoke(app, ["download", hub.repo_id, "--to", str(tmp_path / "m")], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "6 files" in result.output and "6 checked against the hub's sizes and hashes" in result.output
    assert f"model: {{name_or_path: {tmp_path / 'm'}}}" in result.output
    result = CliRunner().invoke(app, ["download", hub.repo_id, "--source", "hugginface"])
    assert result.exit_code == 2 and "--source hugginface is not one of auto, hf, modelscope, modelers" in result.output


# ------------------------------------------------------------------------------------------------ other hubs' libraries


def stand_in_library(name: str, calls: list[dict[str, Any]], tmp_path: Path) -> types.ModuleType:
    """A module with the `snapshot_download(repo_id, **kwargs)` of modelscope / openmind_hub, writing a checkpoint."""

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        folder = Path(kwargs.get("local_dir") or tmp_path / name / repo_id)
        folder.mkdir(parents=True, exist_ok=True)
        for file in ("config.json", "model.safetensors", "tokenizer.json"):
            (folder / file).write_text("{}")
        return str(folder)

    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize(("source", "library"), [("modelscope", "modelscope"), ("modelers", "openmind_hub")])
def test_modelscope_and_modelers_download_through_their_own_library(
    source: str, library: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setitem(sys.modules, library, stand_in_library(library, calls, tmp_path))
    location, fetched = download_model(model("qwen2.5-0.5b-instruct", source=source), tmp_path / "out")
    assert location.hub == source
    assert calls[0]["repo_id"] == "Qwen/Qwen2.5-0.5B-Instruct" and calls[0]["local_dir"] == str(tmp_path / "out")
    patterns = calls[0]["allow_patterns"]
    assert "*.safetensors" in patterns and "*.json" in patterns and "*.jinja" in patterns and "*.py" not in patterns
    assert sorted(fetched.files) == ["config.json", "model.safetensors", "tokenizer.json"]


# ------------------------------------------------------------------------------------------------ datasets

ROWS = '{"instruction": "Say hi", "output": "hi"}\n{"instruction": "Say bye", "output": "bye"}\n'


def test_a_hub_dataset_is_downloaded_and_then_trains_from_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    from factory_cli.download import data_folders, download_dataset

    served = tmp_path / "served-data"
    (served / "data").mkdir(parents=True)
    (served / "data" / "train.jsonl").write_text(ROWS)
    (served / "README.md").write_text("card")
    (served / "dataset_infos.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with serve_repo(served, "stand-in/rows", kind="dataset") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        fetched = download_dataset("stand-in/rows", tmp_path / "rows", None, lambda message: None)
    assert sorted(fetched.files) == ["README.md", "data/train.jsonl"] and fetched.verified == 2
    assert data_folders(fetched) == [tmp_path / "rows" / "data"]
    assert (tmp_path / "rows" / "data" / "train.jsonl").read_text() == ROWS


def test_a_hub_dataset_in_the_cache_needs_no_hub(tmp_path: Path) -> None:
    from factory_cli.modeling.hubs import cached_hub_dataset

    assert cached_hub_dataset("someone/rows") is None
    snapshot = tmp_path / "hf" / "datasets--someone--rows" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    assert cached_hub_dataset("someone/rows") == snapshot
