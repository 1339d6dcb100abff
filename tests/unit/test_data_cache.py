"""The prepared-data cache: content hashing, the key, where it lives, and entries that appear whole or not at all."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest

from factory_cli import cache as factory_cache
from factory_cli.data import cache
from factory_cli.data.formats import FormatSpec


def test_file_digest_hashes_the_size_and_bytes_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory_cache, "CHUNK_BYTES", 7)  # several chunks even for a small file
    data = b'{"text": "hello"}\n' * 50
    (tmp_path / "a.jsonl").write_bytes(data)
    expected = hashlib.sha256(f"{len(data)}:".encode() + data).hexdigest()
    assert cache.file_digest(tmp_path / "a.jsonl") == factory_cache.content_hash(tmp_path / "a.jsonl") == expected


def test_data_files_are_hashed_whole_however_big(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model conversion samples big files; prepared data must see an edit anywhere (one hash, two modes)."""
    monkeypatch.setattr(factory_cache, "CHUNK_BYTES", 4)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(b"x" * 1000)
    b.write_bytes(b"x" * 500 + b"y" + b"x" * 499)  # between two of the 64 sampled 4-byte chunks
    assert factory_cache.content_hash(a, sample_above=10) == factory_cache.content_hash(b, sample_above=10)
    assert cache.file_digest(a) != cache.file_digest(b)


def test_folder_digest_covers_every_data_file(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"text": "a"}\n', encoding="utf-8")
    (folder / "b.jsonl").write_text('{"text": "b"}\n', encoding="utf-8")
    before = cache.file_digest(folder)
    (folder / "notes.txt").write_text("not data", encoding="utf-8")  # not read by the pipeline, not hashed
    assert cache.file_digest(folder) == before
    (folder / "b.jsonl").write_text('{"text": "B"}\n', encoding="utf-8")
    assert cache.file_digest(folder) != before


def test_cache_key_is_canonical_and_sensitive_to_every_part() -> None:
    parts: dict[str, Any] = {
        "stage": "sft",
        "datasets": [{"sha256": "ab", "format": FormatSpec("alpaca", columns={"prompt": "q"})}],
        "tokenizer": {"name_or_path": "t", "vocab_size": 10},
        "template": "{{ x }}",
        "max_length": 512,
        "packing": False,
        "mix": {"strategy": "concat", "stop": "all_exhausted"},
    }
    key = cache.cache_key(parts)
    assert len(key) == 64
    assert cache.cache_key(dict(reversed(list(parts.items())))) == key  # key order does not matter
    for name, value in [
        ("stage", "dpo"),
        ("datasets", [{"sha256": "ac", "format": FormatSpec("alpaca", columns={"prompt": "q"})}]),
        ("datasets", [{"sha256": "ab", "format": FormatSpec("alpaca", columns={"prompt": "r"})}]),
        ("template", "{{ y }}"),
        ("max_length", 1024),
        ("packing", True),
        ("mix", {"strategy": "interleave", "stop": "all_exhausted"}),
    ]:
        assert cache.cache_key({**parts, name: value}) != key, name


def test_cache_key_changes_with_the_pipeline_version(monkeypatch: pytest.MonkeyPatch) -> None:
    key = cache.cache_key({"stage": "pt"})
    monkeypatch.setattr(cache, "PIPELINE_VERSION", cache.PIPELINE_VERSION + 1)
    assert cache.cache_key({"stage": "pt"}) != key


def test_tokenizer_fingerprint(smollm2_tokenizer: Any) -> None:
    fingerprint = cache.tokenizer_fingerprint(smollm2_tokenizer)
    assert fingerprint["vocab_size"] == len(smollm2_tokenizer)
    assert len(fingerprint["sha256"]) == 64
    assert fingerprint["eos"] == smollm2_tokenizer.eos_token
    changed = copy.deepcopy(smollm2_tokenizer)
    changed.add_tokens(["<|brand_new|>"], special_tokens=True)
    assert cache.tokenizer_fingerprint(changed) != fingerprint


def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORY_CACHE", str(tmp_path / "env"))
    assert factory_cache.cache_root(str(tmp_path / "job")) == tmp_path / "job"
    assert factory_cache.cache_root() == tmp_path / "env"
    monkeypatch.delenv("FACTORY_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert factory_cache.cache_root() == tmp_path / "home" / ".cache" / "factory"


def test_one_cache_root_and_one_content_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Converted models, prepared data and compiled kernels share factory_cli/cache.py's root and hash."""
    from factory_cli.modeling import gguf

    package = Path(factory_cache.__file__).parent
    for name in ("def cache_root(", "def content_hash(", 'hashlib.sha256(f"{size}'):
        defining = [p for p in package.rglob("*.py") if name in p.read_text(encoding="utf-8")]
        assert defining == [package / "cache.py"], (name, defining)
    monkeypatch.setenv("FACTORY_CACHE", str(tmp_path / "shared"))
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF" + b"\0" * 100)
    expected = tmp_path / "shared" / "models" / f"m-{factory_cache.content_hash(weights)[:12]}"
    assert gguf.conversion_dir(weights) == expected


def test_an_entry_appears_only_when_complete(tmp_path: Path) -> None:
    key = "k" * 64
    staging = cache.staging_dir(tmp_path, key)
    (staging / "train").mkdir()
    assert cache.lookup(tmp_path, key) is None  # being built: invisible
    final = cache.commit(staging, tmp_path, key, {"train": "train"})
    assert final == cache.entry_dir(tmp_path, key) == tmp_path / "data" / key
    assert cache.lookup(tmp_path, key) == final and not staging.exists()
    assert cache.read_meta(final) == {"train": "train"}


def test_a_concurrent_second_commit_keeps_the_first_entry(tmp_path: Path) -> None:
    key = "c" * 64
    first, second = cache.staging_dir(tmp_path, key), cache.staging_dir(tmp_path, key)
    assert first != second
    (first / "who").write_text("first", encoding="utf-8")
    (second / "who").write_text("second", encoding="utf-8")
    cache.commit(first, tmp_path, key, {"run": 1})
    final = cache.commit(second, tmp_path, key, {"run": 2})
    assert (final / "who").read_text(encoding="utf-8") == "first"
    assert cache.read_meta(final) == {"run": 1}
    assert not second.exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == [key]
