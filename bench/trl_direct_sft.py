"""The same SFT-LoRA job driven by TRL directly: same checkpoint, same tokenized rows, same SFTConfig and LoRA.

    python bench/trl_direct_sft.py <factory run dir> <output dir>

It reads the factory run's plan.json and data manifest, so the only difference is everything factory adds.
Prints one JSON line: train_runtime, tokens, tokens_per_second, final loss.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    run_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from factory_cli.data.pipeline import load_prepared

    plan = json.loads((run_dir / "plan.json").read_text())
    manifest = json.loads((run_dir / "data" / "manifest.json").read_text())
    torch.set_num_threads(int(plan["steps"][-1]["env"].get("OMP_NUM_THREADS", torch.get_num_threads())))
    args = dict(plan["engine_config"]["training_args"])
    args["output_dir"] = str(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(manifest["model_path"])
    tokenizer.chat_template = manifest["chat_template"]
    model = AutoModelForCausalLM.from_pretrained(
        manifest["model_path"], dtype=torch.float32, attn_implementation="sdpa"
    )
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**args),
        train_dataset=load_prepared(manifest)[0],
        processing_class=tokenizer,
        peft_config=LoraConfig(**plan["engine_config"]["peft"]),
    )
    output = trainer.train()
    runtime = output.metrics["train_runtime"]
    tokens = trainer.state.num_input_tokens_seen
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    print(
        json.dumps(
            {
                "train_runtime": runtime,
                "tokens": tokens,
                "tokens_per_second": tokens / runtime,
                "final_loss": losses[-1] if losses else None,
            }
        )
    )


if __name__ == "__main__":
    main()
