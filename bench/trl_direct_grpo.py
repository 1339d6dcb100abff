"""The same GRPO-LoRA job driven by TRL directly: same checkpoint, prepared prompts, GRPOConfig, LoRA and reward.

    python bench/trl_direct_grpo.py <factory run dir> <output dir>

It reads the factory run's plan.json, job.yaml and data manifest, so the only difference is everything factory adds
(its callbacks, metrics file, progress display, signal handling). The reward is the same scoring function
(factory_cli.rewards.builtin.math_answer, pure Python) written as a plain TRL reward function. Step time is taken
the way factory's MetricsCallback takes it: the time between consecutive logs (logging every step).
Prints one JSON line: train_runtime, step_times, final loss.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def math_answer_reward(prompts: list[Any], completions: list[Any], answer: list[Any], **_: Any) -> list[float]:
    """1.0 when a completion's final answer equals the row's answer (factory's built-in math_answer scoring)."""
    from factory_cli.rewards.builtin import math_answer

    texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
    return [math_answer(text, gold) for text, gold in zip(texts, answer, strict=True)]


def main() -> None:
    """Build GRPOTrainer from the factory run's plan and train; print the measurements."""
    run_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    import torch
    from datasets import load_from_disk
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    plan = json.loads((run_dir / "plan.json").read_text())
    manifest = json.loads((run_dir / "data" / "manifest.json").read_text())
    job = yaml.safe_load((run_dir / "job.yaml").read_text())
    engine = plan["engine_config"]
    if [r["name"] for r in engine["rewards"]] != ["math_answer"]:
        raise SystemExit(f"this baseline implements the math_answer reward only, the job has {engine['rewards']}")
    torch.set_num_threads(int(plan["steps"][-1]["env"].get("OMP_NUM_THREADS", torch.get_num_threads())))
    args = dict(engine["training_args"])
    args["output_dir"] = str(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(manifest["model_path"])
    tokenizer.chat_template = manifest["chat_template"]
    attn = job["model"].get("attn_implementation") or "sdpa"
    model = AutoModelForCausalLM.from_pretrained(
        manifest["model_path"], dtype=torch.float32, attn_implementation="sdpa" if attn == "auto" else attn
    )

    step_times: list[float] = []

    class StepTimer(TrainerCallback):
        """Seconds per optimizer step between consecutive loss logs, as factory's MetricsCallback measures."""

        def __init__(self) -> None:
            self.last_time = time.time()
            self.last_step = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.last_time, self.last_step = time.time(), state.global_step

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "loss" in logs and state.global_step > self.last_step:
                now = time.time()
                step_times.append((now - self.last_time) / (state.global_step - self.last_step))
                self.last_time, self.last_step = now, state.global_step

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[math_answer_reward],
        args=GRPOConfig(**args),
        train_dataset=load_from_disk(manifest["train"]),
        processing_class=tokenizer,
        peft_config=LoraConfig(**engine["peft"]),
        callbacks=[StepTimer()],
    )
    output = trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    print(
        json.dumps(
            {
                "train_runtime": output.metrics["train_runtime"],
                "step_times": step_times,
                "steps": trainer.state.global_step,
                "final_loss": losses[-1] if losses else None,
            }
        )
    )


if __name__ == "__main__":
    main()
