"""Unit-test fixtures on top of tests/conftest.py: the real SmolLM2 tokenizer, loaded once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_tokenizer_dir: Path) -> Any:
    """SmolLM2-135M-Instruct's fast tokenizer with its own chat template (shared: copy it before changing it)."""
    from transformers import PreTrainedTokenizerFast  # lighter to import than AutoTokenizer

    return PreTrainedTokenizerFast.from_pretrained(str(smollm2_tokenizer_dir))
