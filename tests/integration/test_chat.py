"""`factory chat` answers piped turns through the chat template and the one generation path, and honours /reset."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from factory_cli.chat import ChatOptions, chat, user_turns
from factory_cli.inference import generate
from factory_cli.inference.load import load_for_inference

pytestmark = pytest.mark.integration


def test_chat_turns_and_reset(tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    one_path = generate.generate

    def counted(*args: Any, **kwargs: Any) -> list[str]:
        calls.append(kwargs)
        return one_path(*args, **kwargs)

    monkeypatch.setattr(generate, "generate", counted)
    loaded = load_for_inference(str(tiny_llama_dir), device="cpu")
    out = io.StringIO()
    turns = user_turns(io.StringIO("hello\n\n/reset\nsecond question\n/exit\nnever read\n"))
    history = chat(loaded, turns, ChatOptions(max_new_tokens=4, system="be brief"), out)
    assert [m["role"] for m in history] == ["system", "user", "assistant"]
    assert history[1]["content"] == "second question"
    assert out.getvalue().count("assistant: ") == 2 and "(conversation cleared)" in out.getvalue()
    assert len(calls) == 2 and all(c["max_new_tokens"] == 4 and c["temperature"] == 0.0 for c in calls)  # greedy
    assert history[2]["content"] in out.getvalue()  # what was streamed is what the history keeps
