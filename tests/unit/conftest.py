"""Unit-test fixtures on top of tests/conftest.py: the real SmolLM2 tokenizer, loaded once per session, and the
golden-plan checker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.plan_helpers import GoldenCheck, check_golden


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_tokenizer_dir: Path) -> Any:
    """SmolLM2-135M-Instruct's fast tokenizer with its own chat template (shared: copy it before changing it)."""
    from transformers import PreTrainedTokenizerFast  # lighter to import than AutoTokenizer

    return PreTrainedTokenizerFast.from_pretrained(str(smollm2_tokenizer_dir))


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> GoldenCheck:
    """check_golden, rewriting the file instead of comparing when pytest runs with --update-golden."""
    update = bool(request.config.getoption("--update-golden"))

    def check(name: str, data: dict[str, Any]) -> None:
        check_golden(name, data, update=update)

    return check
