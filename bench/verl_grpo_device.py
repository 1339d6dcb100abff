"""verl GRPO on one GPU, for real: a few rollout steps of a small random Qwen2.5-shaped model with vLLM rollouts,
launched by `factory train`, with the metrics written out. Run by bench/verl_device_run.sh on a CUDA machine whose
Python has verl (with vLLM and TransferQueue) and factory's base dependencies:

    python -m bench.verl_grpo_device --prepare     # here: SmolLM2's tokenizer under bench/.work/gpu_sft/tokenizer
    bash bench/verl_device_run.sh                  # there: model, job, factory train, verl_grpo_device.json

The model is random (the rewards stay near zero); what is proven is the loop: rollouts, rewards through factory's
reward module, actor updates, verl's checkpoint and final/ through verl's model merger.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.gpu_sft import REPO, ensure_tokenizer

WORK = REPO / "bench" / ".work" / "verl_grpo"
SHAPE = {  # Qwen2.5's layout (qkv bias, tied embeddings, GQA) at a size that loads in seconds
    "hidden_size": 256,
    "intermediate_size": 704,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}
ROLLOUT_STEPS = 3
REQUIRED = ("verl", "vllm", "ray", "transfer_queue", "pydantic", "torch")


def device_job(model_dir: Path, run_dir: Path, python: str) -> dict[str, Any]:
    """The job: 4 prompts x 4 samples per rollout step, one actor update each, ROLLOUT_STEPS steps."""
    return {
        "backend": "verl",
        "stage": "grpo",
        "device": "cuda",
        "model": {"name_or_path": str(model_dir)},
        "method": {"type": "full"},
        "data": {"train": [{"path": "demo-grpo-math", "max_samples": 32}], "max_length": 512},
        "train": {"max_steps": ROLLOUT_STEPS, "learning_rate": 1e-6, "micro_batch_size": 4},
        "grpo": {
            "num_generations": 4,
            "max_prompt_length": 256,
            "max_completion_length": 64,
            "rewards": ["math_answer", {"name": "format", "weight": 0.2}],
        },
        "parallel": {"nproc_per_node": 1, "strategy": "fsdp2"},
        "rollout": {"engine": "vllm", "tp": 1, "gpu_memory_utilization": 0.3, "prompts_per_step": 4},
        "output": {"dir": str(run_dir), "save_steps": ROLLOUT_STEPS},
        "engine": {"python": python},
    }


def build_model(target: Path, tokenizer_dir: Path) -> None:
    """A random Qwen2.5-shaped model with SmolLM2's tokenizer, saved in bf16."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SHAPE,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def missing_packages() -> list[str]:
    import importlib.util

    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def run(out: Path) -> dict[str, Any]:
    """Model, job, `factory train` in this interpreter (verl's too); the result, also written to out/."""
    result: dict[str, Any] = {"python": sys.executable, "missing": missing_packages()}
    if result["missing"]:
        result["outcome"] = "not run: " + ", ".join(result["missing"]) + " missing in " + sys.executable
        return result
    model_dir, run_dir = WORK / "model", WORK / "run"
    build_model(model_dir, ensure_tokenizer())
    job_file = WORK / "job.yaml"
    job_file.write_text(yaml.safe_dump(device_job(model_dir, run_dir, sys.executable), sort_keys=False))
    started = time.time()
    with open(out / "verl_grpo_train.log", "w", encoding="utf-8") as log:
        code = subprocess.run(
            [sys.executable, "-m", "factory_cli", "train", str(job_file), "output.resume=never"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    result.update(
        exit_code=code,
        wall_s=round(time.time() - started, 1),
        steps=[r.get("step") for r in records],
        reward=[r.get("reward") for r in records],
        loss=[r.get("loss") for r in records],
        final=(run_dir / "final" / "factory_complete.json").is_file(),
    )
    result["outcome"] = "ran" if code == 0 and result["final"] and len(records) >= 2 else "failed"
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verl_grpo_device", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepare", action="store_true", help="build the tokenizer here (bring bench/.work along)")
    parser.add_argument("--out", type=Path, default=WORK, help="where the result JSON and the log go")
    args = parser.parse_args(argv)
    if args.prepare:
        print(ensure_tokenizer())
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args.out)
    (args.out / "verl_grpo_device.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["outcome"] == "ran" else 1


if __name__ == "__main__":
    sys.exit(main())
