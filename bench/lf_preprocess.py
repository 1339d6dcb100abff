"""LlamaFactory's own SFT data preprocessing, timed; runs inside bench/.venvs/llamafactory (not the project venv).

    bench/.venvs/llamafactory/bin/python bench/lf_preprocess.py <config.json>

The config is a LlamaFactory training config (bench/train_sft_lora.py writes it). The tokenizer and template are
loaded first; the timed part is `llamafactory.data.get_dataset(..., stage="sft")`: load the file with `datasets`,
align it to LlamaFactory's format, render the template, tokenize, mask and (with packing) pack, exactly as
`llamafactory-cli train` does before training. Prints one JSON line: seconds, sequences, tokens, supervised tokens.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

IGNORE_INDEX = -100


def main() -> int:
    """Parse the config as LlamaFactory does, run its dataset preparation once, print the measurements."""
    config = json.loads(Path(sys.argv[1]).read_text())
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, _finetuning_args, _generating_args = get_train_args(config)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    started = time.perf_counter()
    module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    seconds = time.perf_counter() - started
    train = module["train_dataset"]
    tokens = supervised = 0
    for labels in train.with_format(None)["labels"]:
        tokens += len(labels)
        supervised += sum(1 for label in labels if label != IGNORE_INDEX)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "sequences": len(train),
                "tokens": tokens,
                "supervised_tokens": supervised,
                "workers": data_args.preprocessing_num_workers,
                "packing": bool(data_args.packing),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
