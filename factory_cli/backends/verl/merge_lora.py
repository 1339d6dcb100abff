"""`python -m factory_cli.backends.verl.merge_lora DIR`, run in verl's interpreter after verl's model merger: the
merger writes a LoRA run as the base weights plus `DIR/lora_adapter/`; PEFT's merge_and_unload folds the adapter in,
so final/ is one full model that `factory eval`, `export` and `chat` load as it is. The adapter stays in
`lora_adapter/` beside it. Imports torch, transformers and peft: never imported by factory itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ADAPTER_DIR = "lora_adapter"


def merge_lora(folder: Path) -> None:
    """Load the base weights in `folder`, apply `folder/lora_adapter`, merge, and save the merged weights there."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    saved = config.get("dtype") or config.get("torch_dtype")  # what the merger wrote the base weights in
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)  # merged in fp32, saved as written
    merged = PeftModel.from_pretrained(base, folder / ADAPTER_DIR).merge_and_unload()
    if isinstance(saved, str) and isinstance(getattr(torch, saved, None), torch.dtype):
        merged = merged.to(getattr(torch, saved))
    for old in folder.glob("model*.safetensors*"):
        old.unlink()
    merged.save_pretrained(folder)


if __name__ == "__main__":
    merge_lora(Path(sys.argv[1]))
