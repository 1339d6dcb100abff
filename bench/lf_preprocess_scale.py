"""LlamaFactory's own pre-training data preparation, timed; runs inside bench/.venvs/llamafactory.

    bench/.venvs/llamafactory/bin/python bench/lf_preprocess_scale.py <config.json>

The config is a LlamaFactory pt training config (bench/preprocess_scale.py writes it). The tokenizer and template are
loaded first; the timed part is `llamafactory.data.get_dataset(..., stage="pt")`, as `llamafactory-cli train` runs it
before training. Prints one JSON line: seconds, rows, sequences and tokens (counted on the Arrow columns, so that the
count adds no memory of its own to the measured peak).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> int:
    """Parse the config as LlamaFactory does, run its dataset preparation once, print the measurements."""
    config = json.loads(Path(sys.argv[1]).read_text())
    import pyarrow.compute as pc
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, _finetuning_args, _generating_args = get_train_args(config)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    started = time.perf_counter()
    module = get_dataset(template, model_args, data_args, training_args, stage="pt", **tokenizer_module)
    seconds = time.perf_counter() - started
    train = module["train_dataset"]
    tokens = pc.sum(pc.list_value_length(train.data.column("input_ids"))).as_py()
    print(json.dumps({"seconds": seconds, "sequences": len(train), "tokens": tokens}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
