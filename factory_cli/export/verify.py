"""Prove an exported artefact: reload it from disk, compare its logits with the source, generate a short answer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

CHECK_PROMPT = "What is the capital of France?"
CHECK_NEW_TOKENS = 16


def prompt_ids(tokenizer: Any, prompt: str = CHECK_PROMPT) -> Any:
    """The check prompt as a [1, n] id tensor: through the tokenizer's chat template (with the generation prompt)
    when it has one, else as plain text."""
    import torch

    from factory_cli.inference.render import encode_prompt, prompt_template

    ids = encode_prompt(tokenizer, [{"role": "user", "content": prompt}], prompt_template(tokenizer))
    return torch.tensor([ids], dtype=torch.long)


def logits_for(model: Any, input_ids: Any) -> Any:
    """Float32 CPU logits of one forward pass over `input_ids`."""
    import torch

    from factory_cli.inference.generate import model_device

    with torch.no_grad():
        out = model(input_ids=input_ids.to(model_device(model)))
    return out.logits.detach().to(torch.float32).cpu()


def compare_logits(reference: Any, logits: Any) -> dict[str, float]:
    """Max absolute difference and the share of positions whose top-1 token agrees."""
    diff = (reference - logits).abs().max().item()
    agree = (reference.argmax(-1) == logits.argmax(-1)).float().mean().item()
    return {"max_abs_logit_diff": round(float(diff), 6), "top1_agreement": round(float(agree), 4)}


def load_artifact(output: Path, gguf_file: str | None, device: Any) -> tuple[Any, Any]:
    """(model, tokenizer) from the exported files, the way a user would load them with transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    from factory_cli.modeling.gguf import load_gguf_tokenizer
    from factory_cli.modeling.load import load_tokenizer

    if gguf_file is not None:
        from factory_cli.modeling.gguf import gguf_parsed_once  # one parse of the file for config, weights, tokenizer

        with gguf_parsed_once():
            model = AutoModelForCausalLM.from_pretrained(str(output), gguf_file=gguf_file, dtype=torch.float32)
            tokenizer = load_gguf_tokenizer(output / gguf_file)
    else:
        import json

        config = json.loads((output / "config.json").read_text(encoding="utf-8"))
        method = (config.get("quantization_config") or {}).get("quant_method")
        kwargs: dict[str, Any] = {"dtype": "auto"}
        if method == "bitsandbytes":
            import logging

            kwargs["device_map"] = {"": "cuda:0" if device.kind == "cuda" else "cpu"}
            # one "inputs will be cast to float16" warning per int8 layer call: the report says it once
            logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
        model = AutoModelForCausalLM.from_pretrained(str(output), **kwargs)
        tokenizer = load_tokenizer(str(output))
    if device.kind != "cpu" and not getattr(model, "hf_device_map", None):
        model = model.to(device.kind)
    model.eval()
    return model, tokenizer


def generate_check(model: Any, tokenizer: Any, input_ids: Any, max_new_tokens: int = CHECK_NEW_TOKENS) -> str:
    """Greedy continuation of `input_ids` (a [1, n] tensor), decoded without special tokens."""
    from factory_cli.inference.generate import generate

    (text,) = generate(model, tokenizer, [input_ids[0].tolist()], max_new_tokens=max_new_tokens)
    return text


def check_artifact(
    output: Path,
    device: Any,
    *,
    gguf_file: str | None = None,
    reference_ids: Any = None,
    reference_logits: Any = None,
) -> dict[str, Any]:
    """Reload `output` from disk, compare its logits with the source's on the check prompt, and generate."""
    started = time.perf_counter()
    model, tokenizer = load_artifact(output, gguf_file, device)
    loaded = time.perf_counter() - started
    ids = prompt_ids(tokenizer)
    check: dict[str, Any] = {
        "ok": True,
        "reloaded_as": type(model).__name__,
        "load_seconds": round(loaded, 2),
        "prompt": CHECK_PROMPT,
    }
    if reference_ids is not None:
        same = list(ids[0].tolist()) == list(reference_ids[0].tolist())
        check["tokenizer_matches"] = same
        if same and reference_logits is not None:
            check.update(compare_logits(reference_logits, logits_for(model, ids)))
    generation_started = time.perf_counter()
    check["generated"] = generate_check(model, tokenizer, ids)
    check["generate_seconds"] = round(time.perf_counter() - generation_started, 2)
    check["seconds"] = round(time.perf_counter() - started, 2)
    del model
    return check
