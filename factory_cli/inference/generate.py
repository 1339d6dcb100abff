"""Generation: greedy unless a temperature is given, in left-padded batches or streamed, stopping at every EOS id.

A completion stops at the tokenizer's EOS and at each EOS id of the model's generation_config (a ChatML model ends its
turn with `<|im_end|>`, which need not be the tokenizer's EOS); it is cut at the first of them and decoded without
special tokens. torch and transformers are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def _as_ids(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return []


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end a completion: the tokenizer's EOS and the generation_config's EOS ids."""
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return sorted({*_as_ids(tokenizer.eos_token_id), *_as_ids(config_eos)})


def pad_token_id(model: Any, tokenizer: Any) -> int:
    """The id left padding uses: the tokenizer's pad, else the generation_config's, else the first stop id."""
    config_pad = getattr(getattr(model, "generation_config", None), "pad_token_id", None)
    for value in (tokenizer.pad_token_id, config_pad):
        if isinstance(value, int):
            return value
    stop = stop_token_ids(model, tokenizer)
    return stop[0] if stop else 0


def model_device(model: Any) -> Any:
    """Where the model's first parameter lives (inputs go there)."""
    return next(model.parameters()).device


def _until_stop(ids: list[int], stop: set[int]) -> list[int]:
    return next((ids[:i] for i, token in enumerate(ids) if token in stop), ids)


def _text_streamer(tokenizer: Any, on_text: Callable[[str], None]) -> Any:
    """A transformers TextStreamer that hands each finished piece of the completion to `on_text`."""
    from transformers import TextStreamer

    class _Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_text(text)

    return _Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    batch_size: int = 1,
    on_text: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """The completion of each prompt (token ids, see `render.encode_prompt`), stripped of special tokens and
    surrounding whitespace. `on_text` streams the text of a single prompt as it is generated."""
    import torch
    from transformers import GenerationConfig

    if on_text is not None and len(prompts) != 1:
        raise ValueError("streaming generates one prompt at a time")
    stop = stop_token_ids(model, tokenizer)
    pad = pad_token_id(model, tokenizer)
    sampling: dict[str, Any] = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature}
    config = GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=stop or None, pad_token_id=pad, **sampling)
    streamer = _text_streamer(tokenizer, on_text) if on_text is not None else None
    device, step, stops = model_device(model), max(1, batch_size), set(stop)
    completions: list[str] = []
    for start in range(0, len(prompts), step):
        batch = [list(p) for p in prompts[start : start + step]]
        width = max(len(p) for p in batch)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], dtype=torch.long, device=device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=config, streamer=streamer
            )
        for row in output[:, width:].tolist():
            completions.append(str(tokenizer.decode(_until_stop(row, stops), skip_special_tokens=True)).strip())
        if progress is not None:
            progress(f"generated {len(completions)}/{len(prompts)}")
    return completions
