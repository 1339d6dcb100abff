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


def reply(loaded: Any, messages: list[dict[str, str]], options: ChatOptions, out: TextIO) -> str:
    """Generate the assistant's answer, streaming it to `out`; returns the text."""
    import torch
    from transformers import TextStreamer

    tokenizer, model = loaded.tokenizer, loaded.model
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(loaded.device)

    class _Stream(TextStreamer):
        def on_finalized_text(self, chunk: str, stream_end: bool = False) -> None:
            out.write(chunk + ("\n" if stream_end else ""))
            out.flush()

    sampling: dict[str, Any] = {"do_sample": False}
    if options.temperature > 0:
        sampling = {"do_sample": True, "temperature": options.temperature}
    with torch.no_grad():
        output = model.generate(
            **inputs,
            max_new_tokens=options.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            streamer=_Stream(tokenizer, skip_prompt=True, skip_special_tokens=True),
            **sampling,
        )
    return str(tokenizer.decode(output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)).strip()


def chat(loaded: Any, turns: Iterable[str], options: ChatOptions, out: TextIO = sys.stdout) -> list[dict[str, str]]:
    """The conversation loop; returns the final message history."""
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
        messages.append({"role": "assistant", "content": reply(loaded, messages, options, out)})
    return messages


def run_chat(model: str, options: ChatOptions, device: str = "auto", base_dirs: tuple[Path, ...] = ()) -> None:
    """Load the model and talk until EOF or /exit."""
    from factory_cli.inference import load_for_inference
    from factory_cli.ui import console, quiet_engine_progress

    quiet_engine_progress()
    loaded = load_for_inference(model, device=device, base_dirs=base_dirs)
    if not getattr(loaded.tokenizer, "chat_template", None):
        from factory_cli.config.errors import UsageError

        raise UsageError(f"{model} has no chat template", "chat needs an instruct model (or one trained with sft)")
    if sys.stdin.isatty():
        console.print(f"chatting with [bold]{model}[/bold] on {loaded.device} — {COMMANDS}")
    chat(loaded, user_turns(sys.stdin), options)
