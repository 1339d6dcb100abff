"""A local model folder that `factory check` accepts, with a real tokenizer.json of one token per word: enough for
the checks that read a model's files (config, weights header, tokenizer) without loading it."""

from __future__ import annotations

from pathlib import Path

from tests.hub_stand_in import EMPTY_SAFETENSORS


def word_model(folder: Path) -> Path:
    """Write the folder (config.json, an empty safetensors file, a WordLevel tokenizer.json) and return it."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder.mkdir(parents=True)
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "word": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text('{"model_type": "llama", "max_position_embeddings": 4096}')
    (folder / "model.safetensors").write_text(EMPTY_SAFETENSORS)
    return folder
