"""Job -> Megatron-LM (CUDA) or MindSpeed-LLM (Ascend NPU) steps: convert, preprocess, train, export. Pure.

Verified against (see args.py for the flag sources):
* MindSpeed-LLM 26.1.0: `convert_ckpt_v2.py` (hf <-> mg, --model-type-hf), `preprocess_data.py` handlers
  (GeneralPretrainHandler, SharegptStyleInstructionHandler, SharegptStylePairwiseHandler with --map-keys),
  `pretrain_gpt.py` for pt and `posttrain_gpt.py --stage sft|dpo` for post-training.
* Megatron-LM main (2026-08): `pretrain_gpt.py` (pt, and SFT with --sft over a jsonl of messages),
  `tools/preprocess_data.py`. HF <-> Megatron conversion is Megatron Bridge's (`scripts/conversion/
  run_conversion.py import|export`): Megatron-LM's own `tools/checkpoint/convert.py` no longer has a Llama /
  Qwen HF loader and its docs point to Megatron Bridge. Megatron-LM has no DPO and no LoRA.

Engine scripts are not pip-installed: argv names them under `$MINDSPEED_LLM_HOME`, `$MEGATRON_LM_HOME` and
`$MEGATRON_BRIDGE_HOME`, which `run` replaces with the checkouts named by those environment variables.
The run step puts the HF checkpoint at `<run_dir>/hf_model` and, for sft / dpo, writes the canonical rows as jsonl
(`megatron_input_row`) before the steps start; pt data is prepared by the preprocess step (indexed.py).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory_cli.backends.base import Plan, Step
from factory_cli.backends.common.plan import PYTHON, RunPaths
from factory_cli.backends.megatron.args import (
    BRIDGE_HOME_VAR,
    ENGINE_LABELS,
    HOME_VARS,
    MEGATRON_LM,
    MINDSPEED_LLM,
    architecture_args,
    layers_per_virtual_stage,
    lora_args,
    lora_target_modules,
    moe_args,
    optimizer_args,
    parallel_args,
    recompute_args,
    tokenizer_args,
    train_iters,
)
from factory_cli.backends.megatron.notes import plan_notes
from factory_cli.config.defaults import data_parallel_size
from factory_cli.config.errors import UsageError
from factory_cli.config.schema import MegatronJob
from factory_cli.data.formats import OPENAI_TAGS
from factory_cli.devices import ASCEND_ATB_SET_ENV_CANDIDATES, ASCEND_SET_ENV_CANDIDATES, DeviceKind, launch_env
from factory_cli.modeling.sources import tokenizer_reference
from factory_cli.registry.models import Architecture

ENGINE_METHODS = {MEGATRON_LM: ("full",), MINDSPEED_LLM: ("full", "lora")}
ENGINE_STAGES = {MEGATRON_LM: ("pt", "sft"), MINDSPEED_LLM: ("pt", "sft", "dpo")}

# HF model_type -> convert_ckpt_v2.py --model-type-hf (Llama-3 and Mistral share the llama2 layout).
# MoE: Qwen3-MoE and Qwen2-MoE convert with grouped-GEMM expert weights (--moe-grouped-gemm, as trained); its
# convert_ckpt_v2.py has no Mixtral.
MINDSPEED_MODEL_TYPES = {
    "llama": "llama2",
    "mistral": "llama2",
    "qwen2": "qwen25",
    "qwen3": "qwen3",
    "qwen2_moe": "qwen2-moe",
    "qwen3_moe": "qwen3-moe",
}
# HF model types Megatron Bridge converts (its models/ bridges: llama, mistral, qwen2, qwen3, qwen3_moe, mixtral);
# it has no Qwen2-MoE bridge.
BRIDGE_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "mixtral"})
# Our chat template names -> MindSpeed-LLM --prompt-type (configs/finetune/templates.json).
PROMPT_TYPES = {"chatml": "chatml", "qwen3": "qwen3", "llama3": "llama3", "mistral": "mistral", "glm4": "glm4"}
# Qwen2.5 chats in ChatML; MindSpeed-LLM's Qwen2.5 scripts use its `qwen` template (ChatML + Qwen's system).
MODEL_TYPE_PROMPTS = {"qwen2": "qwen", "qwen3": "qwen3"}
DPO_LOSSES = {"sigmoid": "sigmoid", "hinge": "hinge", "ipo": "ipo", "robust": "sigmoid"}
PREPROCESS_WORKERS = 8
# Engine scripts run under this module, so that one that fails always ends (guard.py says why).
GUARD = [PYTHON, "-m", "factory_cli.backends.megatron.guard"]
# Pretraining data is prepared by factory and written through megatron-core (indexed.py), in one process.
INDEXED_WRITER = [PYTHON, "-m", "factory_cli.backends.megatron.indexed"]


@dataclass(frozen=True)
class ModelFacts:
    """What the planner needs to know about the model; looked up by the backend (registry or config.json)."""

    architecture: Architecture | None
    source: str
    template: str | None = None
    rope_scaling_factor: float | None = None


@dataclass(frozen=True)
class MegatronPaths(RunPaths):
    """Every path a megatron run reads or writes, under the run directory."""

    base: str = ""
    tokenizer_source: str = ""

    @classmethod
    def of(cls, job: MegatronJob, base_dirs: Sequence[Path] = ()) -> MegatronPaths:
        """The run's paths; the tokenizer is model.tokenizer (resolved against `base_dirs`), else the model's."""
        run_dir = cls.run_dir_of(job)
        base = job.megatron.load or str(run_dir / "megatron_base")
        own = tokenizer_reference(job.model, base_dirs)
        return cls(run_dir=run_dir, base=base, tokenizer_source=own or str(run_dir / "hf_model"))

    @property
    def train_file(self) -> str:
        return self.sub("data", "train.jsonl")

    @property
    def prefix(self) -> str:
        return self.sub("data", "megatron", "train")

    @property
    def engine_tokenizer(self) -> str:
        """Megatron-LM SFT's tokenizer: the model's, with a pad that is not its EOS (tokenizer_copy.py)."""
        return self.sub("data", "megatron", "tokenizer")

    @property
    def roundtrip(self) -> str:
        """Where the converted checkpoint, converted back to HF, is written for the check (roundtrip.py)."""
        return self.sub("data", "megatron", "roundtrip_hf")

    @property
    def roundtrip_marker(self) -> str:
        return str(Path(self.base) / "factory_roundtrip_ok.json")

    @property
    def packed_index(self) -> str:
        """The `.idx` of MindSpeed-LLM's packed SFT input ids, whose sequence count sets the iterations."""
        return f"{self.prefix}_packed_input_ids_document.idx"


def home(var: str, *parts: str) -> str:
    """A path inside an engine checkout, resolved from the environment variable `var` when the step runs."""
    return "/".join([f"${var}", *parts])


def choose_engine(job: MegatronJob, device: DeviceKind) -> str:
    """MindSpeed-LLM on Ascend NPU (megatron.use_mindspeed: auto), Megatron-LM on CUDA; mismatches are errors."""
    use = job.megatron.use_mindspeed
    engine = MINDSPEED_LLM if (use is True or (use == "auto" and device == "npu")) else MEGATRON_LM
    if device == "cpu":
        raise UsageError("the megatron backend needs GPUs or NPUs", "use backend: deepspeed on CPU")
    if engine == MINDSPEED_LLM and device != "npu":
        raise UsageError("MindSpeed-LLM runs on Ascend NPUs only", "set megatron.use_mindspeed: auto on CUDA")
    if engine == MEGATRON_LM and device == "npu":
        raise UsageError("Megatron-LM needs MindSpeed-LLM on Ascend NPUs", "set megatron.use_mindspeed: auto")
    return engine


def check_engine_support(job: MegatronJob, engine: str) -> None:
    """Stage and method against what the engine trains; raise UsageError naming the alternative."""
    label = ENGINE_LABELS[engine]
    if job.stage not in ENGINE_STAGES[engine]:
        raise UsageError(
            f"{label} has no stage {job.stage} (it runs {', '.join(ENGINE_STAGES[engine])})",
            "dpo with Megatron runs on Ascend NPUs (MindSpeed-LLM); on CUDA use backend: deepspeed",
        )
    if job.method.type not in ENGINE_METHODS[engine]:
        raise UsageError(
            f"{label} does not train method {job.method.type} (it trains {', '.join(ENGINE_METHODS[engine])})",
            "set method.type: full, or use backend: deepspeed for adapters",
        )
    if job.dpo is not None:
        if job.dpo.ref_model is not None:
            raise UsageError(
                "the megatron backend uses the starting checkpoint as the DPO reference, not dpo.ref_model",
                "remove dpo.ref_model",
            )
        if job.dpo.loss not in DPO_LOSSES:
            raise UsageError(
                f"MindSpeed-LLM has no DPO loss `{job.dpo.loss}`",
                f"use one of: {', '.join(DPO_LOSSES)}",
            )


def prompt_type(model: ModelFacts, template: str) -> str:
    """MindSpeed-LLM --prompt-type for the job's chat template (auto: the registry's, by model type first)."""
    arch = model.architecture
    if template == "auto":
        if arch is not None and arch.model_type in MODEL_TYPE_PROMPTS:
            return MODEL_TYPE_PROMPTS[arch.model_type]
        template = model.template or ""
    if template in PROMPT_TYPES:
        return PROMPT_TYPES[template]
    raise UsageError(
        f"chat template `{template or 'auto'}` has no MindSpeed-LLM --prompt-type",
        f"set model.template to one of: {', '.join(PROMPT_TYPES)}",
    )


def map_keys(stage: str) -> str:
    """--map-keys for the jsonl rows `megatron_input_row` writes (JSON text, one argv element)."""
    # OpenAI-style messages, read by MindSpeed-LLM's sharegpt handlers.
    keys: dict[str, Any] = {"messages": "messages", "system": "system", "tools": "tools", "tags": dict(OPENAI_TAGS)}
    if stage == "dpo":
        keys.update({"chosen": "chosen", "rejected": "rejected"})
    return json.dumps(keys, separators=(",", ":"))


def _function_call(message: dict[str, Any]) -> dict[str, Any]:
    calls = [call.get("function", call) for call in message["tool_calls"]]
    content = calls[0] if len(calls) == 1 else calls
    return {"role": "function_call", "content": json.dumps(content, ensure_ascii=False)}


def _sharegpt_turns(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    system = ""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "system":
            system = str(message.get("content") or "")
        elif message["role"] == "assistant" and message.get("tool_calls"):
            turns.append(_function_call(message))
        else:
            turns.append({"role": message["role"], "content": message.get("content") or ""})
    return system, turns


def megatron_input_row(stage: str, row: dict[str, Any], engine: str) -> dict[str, Any]:
    """One canonical row as the engine's data tools read it (pt: text; sft / dpo: OpenAI-tagged sharegpt)."""
    if stage == "pt":
        return {"text": row["text"]}
    if stage == "sft" and engine == MEGATRON_LM:
        # Megatron-LM's SFTDataset reads {"messages": [...]} and renders them with the tokenizer's chat template.
        return {"messages": row["messages"]}
    if stage == "sft":
        system, turns = _sharegpt_turns(row["messages"])
        return {"messages": turns, "system": system, "tools": row.get("tools") or ""}
    system, turns = _sharegpt_turns(row["prompt"])

    def answer(side: list[dict[str, Any]]) -> dict[str, Any]:
        return {"role": "assistant", "content": str(side[-1].get("content") or "")}

    return {
        "messages": turns,
        "system": system,
        "tools": "",
        "chosen": answer(row["chosen"]),
        "rejected": answer(row["rejected"]),
    }


def ascend_prelude() -> str:
    """Shell that sources the first CANN set_env.sh found and ATB's when present; exits 127 naming where it looked."""
    cann = " ".join(f'"{c}"' for c in ASCEND_SET_ENV_CANDIDATES)
    atb = " ".join(f'"{c}"' for c in ASCEND_ATB_SET_ENV_CANDIDATES)
    return (
        f'found=; for f in {cann}; do if [ -f "$f" ]; then source "$f"; found=$f; break; fi; done; '
        f'if [ -z "$found" ]; then echo "factory: no CANN set_env.sh in: {" ".join(ASCEND_SET_ENV_CANDIDATES)}; '
        'install CANN or source its set_env.sh" >&2; exit 127; fi; '
        f'for f in {atb}; do if [ -f "$f" ]; then source "$f"; break; fi; done'
    )


def on_device(argv: list[str], device: DeviceKind) -> list[str]:
    """On Ascend, run argv after CANN's and ATB's set_env.sh (the one use of a shell); elsewhere argv as is."""
    if device != "npu":
        return argv
    return ["bash", "-c", f"{ascend_prelude()}; exec {shlex.join(argv)}"]


def torchrun_argv(job: MegatronJob, script: str, args: list[str]) -> list[str]:
    """`python -m torch.distributed.run` over this node's devices, then the engine script and its arguments."""
    p = job.parallel
    return [
        PYTHON, "-m", "torch.distributed.run",
        "--nnodes", str(p.nnodes),
        "--nproc_per_node", str(p.nproc_per_node),
        "--node_rank", str(p.node_rank),
        "--master_addr", p.master_addr,
        "--master_port", str(p.master_port),
        script, *args,
    ]  # fmt: skip


def convert_argv(
    job: MegatronJob, engine: str, model_type_hf: str | None, paths: MegatronPaths, num_layers: int, moe: bool = False
) -> list[str]:
    """HF -> Megatron: MindSpeed-LLM's convert_ckpt_v2.py at the target TP/PP, or Megatron Bridge's import."""
    if engine == MINDSPEED_LLM:
        p = job.parallel
        argv = [
            *GUARD, home(HOME_VARS[engine], "convert_ckpt_v2.py"),
            "--load-model-type", "hf",
            "--save-model-type", "mg",
            "--target-tensor-parallel-size", str(p.tp),
            "--target-pipeline-parallel-size", str(p.pp),
        ]  # fmt: skip
        if p.ep > 1:
            argv += ["--target-expert-parallel-size", str(p.ep)]
        if moe:
            argv.append("--moe-grouped-gemm")
        if p.vpp is not None:
            argv += ["--num-layers-per-virtual-pipeline-stage", str(layers_per_virtual_stage(p, num_layers))]
        assert model_type_hf is not None
        return [*argv, "--load-dir", paths.hf_model, "--save-dir", paths.base, "--model-type-hf", model_type_hf]
    dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(job.train.precision, "float32")
    argv = [
        *GUARD, home(BRIDGE_HOME_VAR, "scripts", "conversion", "run_conversion.py"), "import",
        "--device", "cpu",
        "--hf-model", paths.hf_model,
        "--megatron-path", paths.base,
        "--torch-dtype", dtype,
    ]  # fmt: skip
    return argv + (["--trust-remote-code"] if job.model.trust_remote_code else [])


def preprocess_argv(job: MegatronJob, engine: str, paths: MegatronPaths, prompt: str | None) -> list[str] | None:
    """The indexed data the train step reads; None when training reads the jsonl the run step writes.

    pt (both engines): factory's own data preparation written through megatron-core (indexed.py), the
    `<prefix>_text_document` that `preprocess_data.py --json-keys text --append-eod` would write. MindSpeed-LLM sft /
    dpo: its preprocess_data.py, whose handlers apply its --prompt-type template and pack.
    """
    if job.stage == "pt":
        return [
            *INDEXED_WRITER,
            "--run-dir", str(paths.run_dir),
            "--output-prefix", paths.prefix,
            "--tokenizer", paths.tokenizer_source,
            "--engine-home", home(HOME_VARS[engine]),
        ]  # fmt: skip
    if engine == MEGATRON_LM:
        return None
    common = ["--input", paths.train_file, "--output-prefix", paths.prefix, "--workers", str(PREPROCESS_WORKERS)]
    argv = [
        *GUARD, home(HOME_VARS[engine], "preprocess_data.py"), *common,
        "--tokenizer-type", "PretrainedFromHF",
        "--tokenizer-name-or-path", paths.tokenizer_source,
        "--log-interval", "1000",
    ]  # fmt: skip
    assert prompt is not None
    handler = "SharegptStyleInstructionHandler" if job.stage == "sft" else "SharegptStylePairwiseHandler"
    argv += ["--handler-name", handler, "--prompt-type", prompt, "--map-keys", map_keys(job.stage)]
    argv += ["--seq-length", str(job.data.max_length)]
    if job.stage == "sft" and job.data.packing:
        argv += ["--pack", "--neat-pack"]
    return argv


def data_path(job: MegatronJob, engine: str, paths: MegatronPaths) -> str:
    """What --data-path names: the indexed dataset's prefix (pt adds the json key and level), or the jsonl."""
    if job.stage == "pt":
        return f"{paths.prefix}_text_document"
    if engine == MEGATRON_LM:
        return paths.train_file
    return paths.prefix


def stage_args(job: MegatronJob, engine: str, prompt: str | None, paths: MegatronPaths) -> list[str]:
    """What makes the script post-train: MindSpeed-LLM's --stage sft|dpo, Megatron-LM's --sft."""
    if job.stage == "pt":
        return []
    if engine == MEGATRON_LM:
        # sft_dataset.py asserts that the dataloader builds no attention mask (it packs with cu_seqlens).
        return ["--sft", "--no-create-attention-mask-in-dataloader"]
    assert prompt is not None
    if job.stage == "sft":
        args = ["--stage", "sft", "--is-instruction-dataset", "--prompt-type", prompt]
        if job.data.packing:
            args += ["--reset-attention-mask", "--neat-pack"]
        return args
    assert job.dpo is not None
    args = [
        "--stage", "dpo", "--is-pairwise-dataset", "--prompt-type", prompt,
        "--dpo-beta", str(job.dpo.beta),
        "--dpo-loss-type", DPO_LOSSES[job.dpo.loss],
    ]  # fmt: skip
    if job.dpo.label_smoothing > 0:
        args += ["--dpo-label-smoothing", str(job.dpo.label_smoothing)]
    # The starting weights, frozen: the reference stays the same when the policy resumes from a checkpoint.
    return [*args, "--ref-model", paths.base]


def device_args(job: MegatronJob, engine: str) -> list[str]:
    """Attention kernel and fused kernels: MindSpeed-LLM's Ascend kernels, or Megatron-LM's attention backend."""
    if engine == MINDSPEED_LLM:
        return [
            "--use-flash-attn",
            "--use-fused-rmsnorm",
            "--use-fused-swiglu",
            "--use-fused-rotary-pos-emb",
            "--no-masked-softmax-fusion",
            "--no-gradient-accumulation-fusion",
            "--transformer-impl", "local",
        ]  # fmt: skip
    flash = job.model.attn_implementation.startswith("flash_attention")
    return ["--attention-backend", "flash" if flash else "auto"]


def checkpoint_args(job: MegatronJob, engine: str, paths: MegatronPaths) -> list[str]:
    """Save to <run>/checkpoints; resume auto = load from there, else start from the converted weights."""
    resume = job.output.resume
    args = ["--save", paths.checkpoints, "--save-interval", str(job.output.save_steps)]
    if resume == "auto":
        # --pretrained-checkpoint is used (as a finetune: iteration 0, no optimizer state) only while
        # --load holds no checkpoint, so the same argv starts and resumes the run.
        args += ["--load", paths.checkpoints, "--pretrained-checkpoint", paths.base]
    elif resume == "never":
        args += ["--load", paths.base, "--finetune"]
    else:
        args += ["--load", resume]
    if engine == MINDSPEED_LLM:
        # convert_ckpt_v2.py writes Megatron's per-rank torch format.
        args += ["--ckpt-format", "torch"]
    return [*args, "--exit-on-missing-checkpoint"]


def logging_args(job: MegatronJob, paths: MegatronPaths, engine: str) -> list[str]:
    """Log interval, throughput, eval cadence and the split, tensorboard / wandb."""
    ratio = job.data.eval_ratio
    eval_percent = round(ratio * 100) if ratio > 0 else 0
    args = [
        "--log-interval", str(job.logging.steps),
        "--log-throughput",
        "--eval-interval", str(job.output.save_steps),
        "--eval-iters", "10" if eval_percent else "0",
        "--split", f"{100 - eval_percent},{eval_percent},0",
    ]  # fmt: skip
    report = job.logging.report_to
    if "tensorboard" in report:
        args += ["--tensorboard-dir", paths.sub("tensorboard")]
    if "wandb" in report:
        if engine == MINDSPEED_LLM:
            args.append("--use-wandb")
        args += ["--wandb-project", job.logging.project or "factory", "--wandb-exp-name", paths.run_dir.name]
    return args


def train_args(
    job: MegatronJob, engine: str, model: ModelFacts, paths: MegatronPaths, prompt: str | None, iters: int | None
) -> list[str]:
    """Everything after the script name of the training launch."""
    arch = model.architecture
    assert arch is not None
    try:
        shape = architecture_args(arch, job.data.max_length, engine, model.rope_scaling_factor)
        shape += moe_args(arch, engine, job.model.moe.aux_loss_coef)
        parallel = parallel_args(job.parallel, arch.num_hidden_layers)
    except ValueError as exc:
        raise UsageError(str(exc), "use backend: deepspeed for this model") from None
    args = stage_args(job, engine, prompt, paths)
    if job.method.type == "lora":
        args += lora_args(job.method.lora)
    args += shape
    sft_on_megatron_lm = job.stage == "sft" and engine == MEGATRON_LM
    tokenizer = paths.engine_tokenizer if sft_on_megatron_lm else paths.tokenizer_source
    args += tokenizer_args(engine, tokenizer, sft=job.stage == "sft")
    args += parallel
    args += optimizer_args(job.train, iters)
    if iters is not None:
        args += ["--train-iters", str(iters)]
    args += recompute_args(job.megatron.recompute)
    args += device_args(job, engine)
    args += ["--data-path", data_path(job, engine, paths)]
    args += checkpoint_args(job, engine, paths)
    args += logging_args(job, paths, engine)
    return args + list(job.megatron.extra_args)


def export_argv(
    job: MegatronJob, engine: str, model_type_hf: str | None, paths: MegatronPaths, moe: bool = False
) -> list[str]:
    """Megatron -> HF into <run>/final: convert_ckpt_v2.py (LoRA merged onto the base), or Megatron Bridge."""
    if engine == MINDSPEED_LLM:
        assert model_type_hf is not None
        argv = [*GUARD, home(HOME_VARS[engine], "convert_ckpt_v2.py"), "--load-model-type", "mg"]
        argv += ["--save-model-type", "hf"] + (["--moe-grouped-gemm"] if moe else [])
        if job.method.type == "lora":
            lora = job.method.lora
            argv += ["--load-dir", paths.base, "--lora-load", paths.checkpoints]
            argv += ["--lora-r", str(lora.rank), "--lora-alpha", str(lora.alpha or 2 * lora.rank)]
            argv += ["--lora-target-modules", *lora_target_modules(list(lora.target))]
        else:
            argv += ["--load-dir", paths.checkpoints]
        return [*argv, "--save-dir", paths.final, "--hf-cfg-dir", paths.hf_model, "--model-type-hf", model_type_hf]
    # Bridge's run_conversion.py export needs run_config.yaml, which Megatron-LM never writes; bridge_export.py
    # loads the checkpoint through Bridge's reader of Megatron-LM checkpoints instead.
    return [
        PYTHON, "-m", "factory_cli.backends.megatron.bridge_export",
        "--hf-model", paths.hf_model,
        "--megatron-path", paths.checkpoints,
        "--hf-path", paths.final,
    ]  # fmt: skip


def roundtrip_argvs(
    engine: str, model_type_hf: str, paths: MegatronPaths, moe: bool = False
) -> list[tuple[str, list[str]]]:
    """MindSpeed-LLM: convert the fresh Megatron checkpoint back to HF, then compare it with the original
    (roundtrip.py; 26.1.0's converter can exit 0 with wrong weights)."""
    back = [
        *GUARD, home(HOME_VARS[engine], "convert_ckpt_v2.py"),
        "--load-model-type", "mg",
        "--save-model-type", "hf",
        "--load-dir", paths.base,
        "--save-dir", paths.roundtrip,
        "--hf-cfg-dir", paths.hf_model,
        "--model-type-hf", model_type_hf,
        *(["--moe-grouped-gemm"] if moe else []),
    ]  # fmt: skip
    verify = [
        PYTHON, "-m", "factory_cli.backends.megatron.roundtrip",
        "--reference", paths.hf_model,
        "--candidate", paths.roundtrip,
        "--marker", paths.roundtrip_marker,
    ]  # fmt: skip
    return [("roundtrip", back), ("verify", verify)]


def plan_megatron(
    job: MegatronJob,
    device: DeviceKind,
    model: ModelFacts,
    train_samples: int | None = None,
    base_dirs: Sequence[Path] = (),
) -> Plan:
    """The whole plan for a job whose defaults (device ones included) are resolved.

    `train_samples` is the number of training samples, counted by the caller once the data is written (sft / dpo:
    the rows, or the packed sequences; pt: the seq_length samples GPTDataset cuts from the indexed corpus): without
    train.max_steps the length is --train-iters = ceil(epochs x train_samples / global batch). When it is
    None (a dry run) the train step has no --train-iters yet and a note says so; `run` plans again with it.
    `base_dirs` are where a relative model.tokenizer is looked up (the job file's folder, known at run time).
    """
    engine = choose_engine(job, device)
    check_engine_support(job, engine)
    if model.architecture is None:
        raise UsageError(
            f"the megatron backend needs the architecture of `{job.model.name_or_path}`",
            "use a registry model (factory list models) or a local directory with config.json",
        )
    arch = model.architecture
    paths = MegatronPaths.of(job, base_dirs)
    needs_model_type = engine == MINDSPEED_LLM and (job.megatron.load is None or job.megatron.save_hf)
    model_type_hf = MINDSPEED_MODEL_TYPES.get(arch.model_type) if engine == MINDSPEED_LLM else None
    if needs_model_type and model_type_hf is None:
        raise UsageError(
            f"MindSpeed-LLM's convert_ckpt_v2.py has no --model-type-hf for `{arch.model_type}`",
            "convert the checkpoint yourself, give it as megatron.load and set megatron.save_hf: false",
        )
    converts = job.megatron.load is None or job.megatron.save_hf
    if engine == MEGATRON_LM and converts and arch.model_type not in BRIDGE_MODEL_TYPES:
        raise UsageError(
            f"Megatron Bridge, which converts HF checkpoints for Megatron-LM, has no converter for `{arch.model_type}`",
            "convert the checkpoint yourself, give it as megatron.load and set megatron.save_hf: false "
            "(MindSpeed-LLM on Ascend converts it)",
        )
    prompt = prompt_type(model, job.model.template) if engine == MINDSPEED_LLM and job.stage != "pt" else None
    iters = train_iters(job.train, train_samples)
    env = {**launch_env(device, job.parallel.nproc_per_node), "CUDA_DEVICE_MAX_CONNECTIONS": "1", **job.env}

    steps: list[Step] = []
    if job.megatron.load is None:
        convert = convert_argv(job, engine, model_type_hf, paths, arch.num_hidden_layers, arch.is_moe)
        steps.append(Step(name="convert", argv=on_device(convert, device), env=env))
        if engine == MINDSPEED_LLM:
            assert model_type_hf is not None
            for name, argv in roundtrip_argvs(engine, model_type_hf, paths, arch.is_moe):
                steps.append(Step(name=name, argv=on_device(argv, device), env=env))
    preprocess = preprocess_argv(job, engine, paths, prompt)
    if preprocess is not None:
        steps.append(Step(name="preprocess", argv=on_device(preprocess, device), env=env))
    script = "pretrain_gpt.py" if job.stage == "pt" or engine == MEGATRON_LM else "posttrain_gpt.py"
    args = train_args(job, engine, model, paths, prompt, iters)
    launch = torchrun_argv(job, home(HOME_VARS[engine], script), args)
    steps.append(Step(name="train", argv=on_device(launch, device), env=env))
    if job.megatron.save_hf:
        export = export_argv(job, engine, model_type_hf, paths, arch.is_moe)
        steps.append(Step(name="export", argv=on_device(export, device), env=env))
        check = [
            PYTHON, "-m", "factory_cli.backends.megatron.roundtrip", "--shapes-only",
            "--reference", paths.hf_model,
            "--candidate", paths.final,
            "--marker", paths.sub("data", "megatron", "export_checked.json"),
        ]  # fmt: skip
        steps.append(Step(name="check-export", argv=on_device(check, device), env=env))

    return Plan(
        backend="megatron",
        stage=job.stage,
        run_dir=str(paths.run_dir),
        device=device,
        steps=steps,
        engine_config={
            "engine": engine,
            "engine_home_var": HOME_VARS[engine],
            "converter_home_var": BRIDGE_HOME_VAR if engine == MEGATRON_LM else HOME_VARS[engine],
            "script": script,
            "train_args": args,
            "train_iters": iters,
            "train_samples": train_samples,
            "hf_model": paths.hf_model,
            "tokenizer": paths.tokenizer_source,
            "model_source": model.source,
            "megatron_checkpoint": paths.base,
            # pt: no jsonl, the preprocess step prepares the data itself (indexed.py)
            "train_file": None if job.stage == "pt" else paths.train_file,
            "data_dir": str(Path(paths.prefix).parent),
            "engine_tokenizer": paths.engine_tokenizer if job.stage == "sft" and engine == MEGATRON_LM else None,
            "roundtrip_marker": paths.roundtrip_marker if engine == MINDSPEED_LLM else None,
            "packed_index": paths.packed_index
            if job.stage == "sft" and engine == MINDSPEED_LLM and job.data.packing
            else None,
            "document_index": f"{data_path(job, engine, paths)}.idx" if job.stage == "pt" else None,
            "data_path": data_path(job, engine, paths),
            "model_type_hf": model_type_hf,
            "prompt_type": prompt,
            "data_parallel_size": data_parallel_size(job),
        },
        notes=plan_notes(job, engine, device, paths, iters, train_samples, arch),
    )
