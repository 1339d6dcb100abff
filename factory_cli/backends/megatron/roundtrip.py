"""The HF -> Megatron -> HF round trip of a converted checkpoint must give back the HF weights.

MindSpeed-LLM 26.1.0's convert_ckpt_v2.py exits 0 with wrong weights for some model types (q/k/v split as one
block, issue 17 row 6; changed on its master after 26.1.0, in no release yet). So after converting, the run converts
the Megatron checkpoint back to HF (the `roundtrip` step, the engine's own converter) and this module (the
`verify` step) compares every tensor with the HF checkpoint the run started from: the names, the shapes and the
values, exactly, after casting the reference to the round trip's dtype. On success it writes a marker into the
Megatron checkpoint, so a later run that reuses the conversion does not check again; on a difference it exits 1
naming the tensors, and training never starts from those weights.

    python -m factory_cli.backends.megatron.roundtrip --reference HF --candidate ROUNDTRIP --marker FILE

The same comparison, names and shapes only (`--shapes-only`), checks the trained model's export (`check-export`):
its weights changed, but every tensor of the model it started from must be there with its shape.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

MARKER = "factory_roundtrip_ok.json"
TIED = "lm_head.weight"
SHOWN = 10


def _tensors(folder: Path) -> Iterator[tuple[str, Any]]:
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no *.safetensors")
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                yield name, handle.get_tensor(name)


def differences(reference: Path, candidate: Path, values: bool = True) -> list[str]:
    """What differs between two HF checkpoints' weights, one line per tensor; empty when they are the same.

    `values=False` compares names and shapes only."""
    import torch

    ref = dict(_tensors(reference))
    got = dict(_tensors(candidate))
    tied = TIED not in ref or TIED not in got
    out = []
    for name in sorted(ref.keys() | got.keys()):
        if name == TIED and tied:
            continue  # tied embeddings: one side may leave the output layer out
        if name not in got:
            out.append(f"{name}: missing after the round trip")
        elif name not in ref:
            out.append(f"{name}: not in the original checkpoint")
        elif ref[name].shape != got[name].shape:
            out.append(f"{name}: shape {tuple(ref[name].shape)} became {tuple(got[name].shape)}")
        elif values:
            a, b = ref[name].to(got[name].dtype), got[name]
            if not torch.equal(a, b):
                changed = int((a != b).sum())
                out.append(f"{name}: {changed} of {a.numel()} values differ")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    found = differences(args.reference, args.candidate, values=not args.shapes_only)
    if found:
        if args.shapes_only:
            what = f"the export {args.candidate} does not have the layout of {args.reference}"
            fix = "fix: the exporter dropped or reshaped tensors; export again, or report it with the lines above"
        else:
            what = (
                "the converted checkpoint does not give back the HF weights after HF -> Megatron -> HF "
                f"({args.reference} vs {args.candidate})"
            )
            fix = (
                "fix: use a MindSpeed-LLM whose convert_ckpt_v2.py round-trips this model type (26.1.0 splits q/k/v "
                "wrongly for llama2 / qwen3), or convert yourself and give megatron.load"
            )
        print(f"{what}: {len(found)} tensors differ:", file=sys.stderr)
        for line in found[:SHOWN]:
            print(f"  {line}", file=sys.stderr)
        print(fix, file=sys.stderr)
        return 1
    checked = "names and shapes" if args.shapes_only else "identical"
    args.marker.write_text(json.dumps({"reference": str(args.reference), "checked": checked}), encoding="utf-8")
    print(f"{args.candidate}: every tensor of {args.reference} is there ({checked})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The step's command line (tests/unit/test_megatron_argv.py parses the planned argv with it)."""
    parser = argparse.ArgumentParser(description="compare a round-tripped HF checkpoint with the original")
    parser.add_argument("--reference", required=True, type=Path, help="the HF checkpoint the run started from")
    parser.add_argument("--candidate", required=True, type=Path, help="the HF checkpoint the round trip wrote")
    parser.add_argument("--marker", required=True, type=Path, help="written on success")
    parser.add_argument("--shapes-only", action="store_true", help="compare names and shapes, not values")
    return parser


if __name__ == "__main__":
    sys.exit(main())
