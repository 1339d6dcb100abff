"""Megatron-LM checkpoint -> Hugging Face, through Megatron Bridge's API for Megatron-LM checkpoints.

Bridge's `scripts/conversion/run_conversion.py export` wants the `run_config.yaml` that only Bridge's own training
writes. Its `megatron.bridge.training.model_load_save.load_megatron_model` reads a Megatron-LM checkpoint without
one: it falls back to the arguments Megatron-LM stores in the checkpoint (`mlm_compat.arguments.
_load_args_from_checkpoint`, Megatron-Bridge v0.6.0) and builds the model from them on the CPU. The weights then
go out through `AutoBridge.from_hf_pretrained(<the HF model trained from>).save_hf_pretrained`.

Run inside the Bridge environment (Python 3.12; `$MEGATRON_BRIDGE_HOME/src` is put on sys.path when set):

    python -m factory_cli.backends.megatron.bridge_export --hf-model HF --megatron-path CKPTS --hf-path OUT
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

TRACKER = "latest_checkpointed_iteration.txt"  # written by Megatron-LM next to its iter_* folders


def latest_iteration_dir(checkpoints: Path) -> Path:
    """The folder of the checkpoint Megatron-LM's tracker file names (iter_0000100, or release)."""
    tracker = checkpoints / TRACKER
    if not tracker.is_file():
        raise FileNotFoundError(f"{checkpoints} has no {TRACKER}: no finished Megatron-LM checkpoint there")
    value = tracker.read_text(encoding="utf-8").strip()
    folder = checkpoints / ("release" if value == "release" else f"iter_{int(value):07d}")
    if not folder.is_dir():
        raise FileNotFoundError(f"{tracker} names {folder.name}, which is not in {checkpoints}")
    return folder


def export(hf_model: str, checkpoints: Path, hf_path: str) -> Path:
    """Load the latest checkpoint with Bridge (Megatron-LM args) and save it as HF next to hf_model's config."""
    from megatron.bridge import AutoBridge  # type: ignore[import-not-found]
    from megatron.bridge.training.model_load_save import load_megatron_model  # type: ignore[import-not-found]

    folder = latest_iteration_dir(checkpoints)
    model = load_megatron_model(str(folder), model_type="gpt", use_cpu_init=True)
    models = model if isinstance(model, list) else [model]
    AutoBridge.from_hf_pretrained(hf_model).save_hf_pretrained(models, hf_path)
    return folder


def build_parser() -> argparse.ArgumentParser:
    """The step's command line (tests/unit/test_megatron_argv.py parses the planned argv with it)."""
    parser = argparse.ArgumentParser(description="Megatron-LM checkpoint -> Hugging Face (Megatron Bridge)")
    parser.add_argument("--hf-model", required=True, help="the HF model the run started from (config, tokenizer)")
    parser.add_argument("--megatron-path", required=True, type=Path, help="Megatron-LM's --save folder")
    parser.add_argument("--hf-path", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    home = os.environ.get("MEGATRON_BRIDGE_HOME")
    if home:
        sys.path.insert(0, str(Path(home) / "src"))
    folder = export(args.hf_model, args.megatron_path, args.hf_path)
    print(f"exported {folder} to {args.hf_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
