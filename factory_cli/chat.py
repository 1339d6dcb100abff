"""`factory chat`: talk to a model in the terminal through its chat template (works with piped input too)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

COMMANDS = "/reset clears the conversation, /exit (or Ctrl-D) leaves"


@dataclass(frozen=True)
class ChatOptions:
    """How to generate."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    system: str | None = None


def user_turns(stream: TextIO) -> Iterator[str]:
    """Lines typed (or piped) by the user, blank ones skipped; EOF ends the chat."""
    interactive = stream.isatty()
    while True:
        if interactive:
            from rich.prompt import Prompt

            try:
                line = Prompt.ask("[bold green]you[/bold green]")
            except EOFError:
                return
        else:
            line = stream.readline()
            if not line:
                return
        line = line.strip()
        if line:
            yield line


def reply(loaded: Any, messages: list[dict[str, str]], options: ChatOptions, out: TextIO, template: str) -> str:
    """Generate the assistant's answer, streaming it to `out`; returns the text."""
    from factory_cli.inference.generate import generate
    from factory_cli.inference.render import encode_prompt

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    (answer,) = generate(
        loaded.model,
        loaded.tokenizer,
        [encode_prompt(loaded.tokenizer, messages, template)],
        max_new_tokens=options.max_new_tokens,
        temperature=options.temperature,
        on_text=write,
    )
    write("\n")
    return answer


def chat_template(loaded: Any) -> str:
    """The template prompts are rendered with: the tokenizer's own, else the model registry's named template."""
    from factory_cli.config.errors import UsageError
    from factory_cli.inference.render import prompt_template
    from factory_cli.registry.models import find_model

    spec = find_model(loaded.info.base or loaded.info.reference)
    template = prompt_template(loaded.tokenizer, spec.template if spec else None)
    if template is None:
        raise UsageError(
            f"{loaded.info.reference} has no chat template", "chat needs an instruct model (or one trained with sft)"
        )
    return template


def chat(
    loaded: Any, turns: Iterable[str], options: ChatOptions, out: TextIO | None = None, template: str | None = None
) -> list[dict[str, str]]:
    """The conversation loop (with `template`, else `chat_template(loaded)`); returns the final message history.
    `out` defaults to the sys.stdout of the call, not of the import (a caller may have replaced it since)."""
    out = out if out is not None else sys.stdout
    template = template or chat_template(loaded)
    base = [{"role": "system", "content": options.system}] if options.system else []
    messages = list(base)
    for turn in turns:
        if turn in ("/exit", "/quit"):
            break
        if turn == "/reset":
            messages = list(base)
            out.write("(conversation cleared)\n")
            continue
        messages.append({"role": "user", "content": turn})
        out.write("assistant: ")
        messages.append({"role": "assistant", "content": reply(loaded, messages, options, out, template)})
    return messages


def run_chat(model: str, options: ChatOptions, device: str = "auto", base_dirs: tuple[Path, ...] = ()) -> None:
    """Load the model and talk until EOF or /exit."""
    from factory_cli.inference.load import load_for_inference
    from factory_cli.ui import console, quiet_engine_progress

    quiet_engine_progress()
    loaded = load_for_inference(model, device=device, base_dirs=base_dirs)
    template = chat_template(loaded)
    if sys.stdin.isatty():
        console.print(f"chatting with [bold]{model}[/bold] on {loaded.device} — {COMMANDS}")
    chat(loaded, user_turns(sys.stdin), options, template=template)
