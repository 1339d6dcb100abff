"""The tokenizer Megatron-LM SFT reads: the model's own, with a pad token that is not its EOS.

Megatron-LM's SFT dataset (megatron/training/datasets/sft_dataset.py, core_v0.17.0) zeroes the loss of every target
equal to the tokenizer's pad id, and its SFTTokenizer takes the pad from the tokenizer, else the EOS. For a tokenizer
whose pad is its EOS (SmolLM2; Mistral and Llama-3, which have no pad) the end-of-turn token would never be a target
and the model would never learn to stop. (megatron-core's pretraining GPTDataset drops a pad that collides with
EOS/EOD itself; tests/integration/test_megatron_data.py holds that.) The copy takes the unknown token, else the
BOS, as its pad: neither is a target of a one-conversation row (the BOS only starts it). Impure; imports
transformers.
"""

from __future__ import annotations

from pathlib import Path

from factory_cli.config.errors import UsageError


def pad_choice(pad: str | None, eos: str | None, unk: str | None, bos: str | None) -> str | None:
    """The pad the copy gets: None when the tokenizer's own pad already differs from its EOS."""
    if pad is not None and pad != eos:
        return None
    for candidate in (unk, bos):
        if candidate is not None and candidate != eos:
            return candidate
    raise UsageError(
        "the tokenizer's pad is its EOS and it has no other special token to pad with: Megatron-LM SFT would "
        "never train the end-of-turn token",
        "give the tokenizer a pad token other than its EOS, or use backend: deepspeed",
    )


def write_engine_tokenizer(model_dir: Path, target: Path) -> str | None:
    """Save the model's tokenizer to `target`, re-padded when needed; returns the new pad token, or None."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    choice = pad_choice(tokenizer.pad_token, tokenizer.eos_token, tokenizer.unk_token, tokenizer.bos_token)
    if choice is not None:
        tokenizer.pad_token = choice
    target.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(target))
    return choice
