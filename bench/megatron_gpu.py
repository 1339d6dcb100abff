"""The megatron backend's GPU proof (issue 17): the planned Megatron-LM pretraining steps, really run, on one GPU.

Beforehand, on a machine with the repository's environment (`python -m bench.gpu_sft --prepare` done first, for the
wheels and the SmolLM2 tokenizer):

    python -m bench.megatron_gpu prepare --megatron-lm /path/to/Megatron-LM   # a git checkout with core_v0.17.0

writes bench/.work/megatron_gpu/: Megatron-LM-core_v0.17.0.tar (the source), tiny-llama/ (a random 2-layer Llama
with SmolLM2's tokenizer, pad == EOS) and two pure-Python wheels into .whl/ (einops, and pybind11 to compile
megatron/core/datasets/helpers.cpp).
Then, on the GPU machine, without network: `bash bench/megatron_device_run.sh` (it calls the phases below):

    base    the starting checkpoint: megatron-core's GPTModel from the planned architecture flags, loaded with the
            tiny model's weights through the parity test's mapping (tests/integration/test_megatron_parity.py) and
            saved as a Megatron-LM torch_dist checkpoint (`release`), with the arguments parsed by Megatron-LM itself
    train   `factory`'s megatron backend run() on the planned job: preprocess (megatron-core indexed data), then
            torchrun pretrain_gpt.py with --transformer-impl local for train.max_steps iterations; run twice, the
            second time with more steps, which must resume from checkpoints/
    hf      the Hugging Face loss of the first global batch, read from the same GPTDataset Megatron reads
    report  JSON: iteration-1 loss against the HF loss, the resume iteration, each phase's status
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / ".work" / "megatron_gpu"
TARBALL = WORK / "Megatron-LM-core_v0.17.0.tar"
MODEL_DIR = WORK / "tiny-llama"
RUN_DIR = WORK / "run"
JOB = WORK / "job.yaml"
MEGATRON_TAG = "core_v0.17.0"
EXTRA_WHEELS = ("einops==0.8.2", "pybind11==2.13.6")
SEQ = 128
GLOBAL_BATCH = 4
FIRST_STEPS, MORE_STEPS, SAVE_EVERY = 4, 6, 2
LOSS_TOLERANCE = 0.02  # fp32 on both sides; Megatron's local attention and HF's eager attention differ in rounding
ITERATION = re.compile(r"iteration\s+(\d+)/\s*(\d+).*?lm loss: ([0-9.Ee+-]+)")
LOADED = re.compile(r"loaded checkpoint from (\S+).*? at iteration (\d+)")


def write_job(max_steps: int) -> Path:
    """The job: pt on the tiny Llama, one GPU, fp32, Megatron's local transformer, the base checkpoint given."""
    JOB.write_text(
        f"""backend: megatron
stage: pt
device: cuda
model:
  name_or_path: {MODEL_DIR}
method:
  type: full
data:
  train: [demo-pt]
  max_length: {SEQ}
train:
  max_steps: {max_steps}
  micro_batch_size: 2
  global_batch_size: {GLOBAL_BATCH}
  learning_rate: 1.0e-4
  precision: fp32
parallel:
  nproc_per_node: 1
megatron:
  load: {RUN_DIR / "megatron_base"}
  save_hf: false
  extra_args: [--transformer-impl, local, --no-gradient-accumulation-fusion]
output:
  dir: {RUN_DIR}
  save_steps: {SAVE_EVERY}
logging:
  steps: 1
""",
        encoding="utf-8",
    )
    return JOB


def plan_of(max_steps: int) -> Any:
    """factory's plan of the job (resolved for CUDA)."""
    from factory_cli.backends import get_backend
    from factory_cli.config.defaults import DeviceFacts, resolve_device_defaults
    from factory_cli.config.validate import load_and_validate

    job = resolve_device_defaults(load_and_validate(write_job(max_steps)).job, DeviceFacts("cuda", bf16=True))
    plan = get_backend("megatron").plan(job, "cuda")
    plan.base_dirs = [str(REPO / "examples")]
    return job, plan


# ------------------------------------------------------------------------------------------------ prepare


def prepare(megatron_lm: Path) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "-C", str(megatron_lm), "archive", "-o", str(TARBALL), "--prefix", "Megatron-LM/", MEGATRON_TAG],
        check=True,
    )
    from bench.gpu_sft import WHEEL_DIR, ensure_tokenizer

    tokenizer_dir = ensure_tokenizer()
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(MODEL_DIR)
    tokenizer.save_pretrained(MODEL_DIR)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
         "3.12", "-d", str(WHEEL_DIR), *EXTRA_WHEELS],
        check=True,
    )  # fmt: skip
    print(f"prepared {WORK.relative_to(REPO)} and {len(EXTRA_WHEELS)} wheels in {WHEEL_DIR.relative_to(REPO)}")


# ------------------------------------------------------------------------------------------------ device phases


def write_base() -> dict[str, Any]:
    """The starting checkpoint at megatron.load's default place (<run>/megatron_base), as Megatron-LM saves one."""
    import torch
    import torch.distributed as dist
    from megatron.core import dist_checkpointing, parallel_state
    from megatron.training.arguments import parse_args, validate_args  # the checkout's parser
    from transformers import AutoModelForCausalLM

    from tests.integration.megatron_mapping import architecture_flags, build_gpt_model, hf_to_mcore, load

    _, plan = plan_of(FIRST_STEPS)
    train_args = plan.engine_config["train_args"]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29511")
    dist.init_process_group("nccl", rank=0, world_size=1)
    torch.cuda.set_device(0)
    parallel_state.initialize_model_parallel(1, 1)
    sys.argv = ["pretrain_gpt.py", *train_args]
    args = parse_args()
    validate_args(args)
    hf = AutoModelForCausalLM.from_pretrained(MODEL_DIR, torch_dtype=torch.float32)
    c = hf.config
    model = build_gpt_model(architecture_flags(train_args))
    load(model, hf_to_mcore(hf, c.num_attention_heads, c.num_key_value_heads, c.hidden_size // c.num_attention_heads))
    model = model.cuda()
    base = Path(plan.engine_config["megatron_checkpoint"])
    shutil.rmtree(base, ignore_errors=True)
    (base / "release").mkdir(parents=True)
    state = {"args": args, "checkpoint_version": 3.0, "iteration": 0, "model": model.sharded_state_dict()}
    dist_checkpointing.save(state, str(base / "release"))
    (base / "latest_checkpointed_iteration.txt").write_text("release")
    dist.destroy_process_group()
    return {"base": str(base)}


def train(max_steps: int) -> dict[str, Any]:
    """factory's run() of the planned job: the steps as planned, engine output in this process's log."""
    from factory_cli.backends import get_backend
    from factory_cli.config.dump import job_to_yaml

    job, plan = plan_of(max_steps)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    (RUN_DIR / "job.yaml").write_text(job_to_yaml(job), encoding="utf-8")

    class Ui:
        def info(self, text: str) -> None:
            print(f"factory: {text}", flush=True)

        warn = info

    result = get_backend("megatron").run(plan, Ui())  # type: ignore[arg-type]
    return {"ok": result.ok, "summary": result.summary}


def hf_first_batch_loss() -> dict[str, Any]:
    """The HF model's mean token loss over the first global batch Megatron draws (same dataset, seed, order)."""
    import torch
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.tokenizers import MegatronTokenizer
    from transformers import AutoModelForCausalLM

    job, plan = plan_of(FIRST_STEPS)
    args = plan.engine_config["train_args"]
    tokenizer = MegatronTokenizer.from_pretrained(str(MODEL_DIR), metadata_path={"library": "huggingface"})
    config = GPTDatasetConfig(
        random_seed=job.train.seed, sequence_length=SEQ, blend=([plan.engine_config["data_path"]], None),
        split=args[args.index("--split") + 1], tokenizer=tokenizer, reset_position_ids=False,
        reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False,
        path_to_cache=str(WORK / "hf_dataset_cache"),
    )  # fmt: skip
    # The sizes Megatron-LM asks of the first run (train_iters x global batch; no eval), so the sample order is its.
    sizes = [FIRST_STEPS * GLOBAL_BATCH, 0, 0]
    dataset, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, config).build()
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, torch_dtype=torch.float32).cuda().eval()
    total, count = 0.0, 0.0
    with torch.no_grad():
        for i in range(GLOBAL_BATCH):
            sample = dataset[i]
            logits = model(sample["tokens"][None].cuda()).logits[0].float()
            losses = torch.nn.functional.cross_entropy(logits, sample["labels"].cuda(), reduction="none")
            mask = sample["loss_mask"].cuda()
            total += float((losses * mask).sum())
            count += float(mask.sum())
    return {"hf_loss": total / count}


def parse_log(text: str) -> dict[str, Any]:
    """Megatron-LM's iteration losses and the checkpoint it resumed from, from a run's output."""
    losses = {int(m.group(1)): float(m.group(3)) for m in ITERATION.finditer(text)}
    loaded = [(m.group(1), int(m.group(2))) for m in LOADED.finditer(text)]
    return {"losses": losses, "loaded": loaded}


def report(out: Path) -> int:
    """The proof's verdict from the phase logs and records, as JSON in `out`."""
    record: dict[str, Any] = {"phases": {}}
    for phase in ("base", "train1", "hf", "train2"):
        status = WORK / f"{phase}.json"
        record["phases"][phase] = json.loads(status.read_text()) if status.is_file() else {"ran": False}
    first = parse_log((WORK / "train1.log").read_text(errors="replace")) if (WORK / "train1.log").is_file() else {}
    second = parse_log((WORK / "train2.log").read_text(errors="replace")) if (WORK / "train2.log").is_file() else {}
    hf_loss = record["phases"]["hf"].get("hf_loss")
    loss1 = first.get("losses", {}).get(1)
    record["iteration_1_loss"] = loss1
    record["hf_loss"] = hf_loss
    record["loss_matches"] = bool(
        loss1 is not None and hf_loss is not None and math.isfinite(loss1) and abs(loss1 - hf_loss) < LOSS_TOLERANCE
    )
    record["first_run_iterations"] = sorted(first.get("losses", {}))
    resumed = [it for path, it in second.get("loaded", []) if "checkpoints" in path]
    record["resumed_from_iteration"] = resumed[0] if resumed else None
    record["second_run_iterations"] = sorted(second.get("losses", {}))
    record["resume_ok"] = bool(
        resumed and resumed[0] == FIRST_STEPS and record["second_run_iterations"][:1] == [FIRST_STEPS + 1]
    )
    record["ok"] = record["loss_matches"] and record["resume_ok"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "megatron_gpu.json").write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    print(json.dumps(record, indent=1, default=str))
    return 0 if record["ok"] else 1


def run_phase(phase: str) -> int:
    """One device phase; its result (or its error) is recorded in <work>/<phase>.json for the report."""
    try:
        if phase == "base":
            result = write_base()
        elif phase == "train1":
            result = train(FIRST_STEPS)
        elif phase == "train2":
            result = train(MORE_STEPS)
        else:
            result = hf_first_batch_loss()
        result["ran"] = True
    except Exception as exc:  # the report says which phase failed and why
        result = {"ran": True, "error": f"{type(exc).__name__}: {exc}"}
    (WORK / f"{phase}.json").write_text(json.dumps(result, default=str), encoding="utf-8")
    print(json.dumps(result, default=str))
    return 0 if "error" not in result and result.get("ok", True) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.megatron_gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=("prepare", "base", "train1", "hf", "train2", "report"))
    parser.add_argument("--megatron-lm", type=Path, help="prepare: a Megatron-LM git checkout")
    parser.add_argument("--out", type=Path, default=WORK, help="report: where megatron_gpu.json goes")
    args = parser.parse_args(argv)
    if args.phase == "prepare":
        if args.megatron_lm is None:
            parser.error("prepare needs --megatron-lm")
        prepare(args.megatron_lm)
        return 0
    if args.phase == "report":
        return report(args.out)
    return run_phase(args.phase)


if __name__ == "__main__":
    sys.exit(main())
