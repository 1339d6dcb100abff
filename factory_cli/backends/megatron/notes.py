"""The notes of a megatron plan: what runs where, what the engine does differently from the job, what is ignored.

Pure; plan.py calls `plan_notes` with what it planned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from factory_cli.backends.megatron.args import (
    BRIDGE_HOME_VAR,
    ENGINE_LABELS,
    HOME_VARS,
    MEGATRON_LM,
    MINDSPEED_LLM,
    aux_loss_coef,
    wsd_decay_iters,
)
from factory_cli.config.defaults import data_parallel_size
from factory_cli.config.schema import MegatronJob
from factory_cli.devices import ASCEND_SET_ENV_CANDIDATES, DeviceKind, dist_backend, visible_devices_var

if TYPE_CHECKING:
    from factory_cli.backends.megatron.plan import MegatronPaths
    from factory_cli.registry.models import Architecture

WSD_NOTE = "--lr-wsd-decay-style cosine, --lr-wsd-decay-iters"
# Megatron-LM SFT as the engine runs it: megatron/training/datasets/sft_dataset.py and
# megatron/core/tokenizers/text/libraries/sft_tokenizer.py (core_v0.17.0; core_v0.16.1 has no `default` format).
SFT_NOTE = (
    "sft: Megatron-LM renders each row with the model's chat template (SFTTokenizer prompt format default, "
    "Megatron-LM core_v0.17.0 or later) and trains on every token of it, system and user turns included"
)
# megatron/training/datasets/sft_dataset.py skips the loss of every target equal to the tokenizer's pad id (the
# pretraining GPTDataset of megatron-core 0.16 drops a pad that collides with EOS/EOD by itself).
PAD_NOTE = (
    "sft: Megatron-LM skips every target equal to the tokenizer's pad id; it reads a copy of the tokenizer whose "
    "pad is not its EOS (data/megatron/tokenizer, written by the run step), so the end-of-turn token stays a target"
)


def plan_notes(
    job: MegatronJob,
    engine: str,
    device: DeviceKind,
    paths: MegatronPaths,
    iters: int | None,
    samples: int | None,
    arch: Architecture | None = None,
) -> list[str]:
    """Engine, devices, batch arithmetic, conversion, data, schedule, resume and export notes, then the ignored."""
    p, t = job.parallel, job.train
    home_var = HOME_VARS[engine]
    notes = [
        f"engine: {ENGINE_LABELS[engine]}; its scripts run from ${home_var} (a checkout of it)",
        f"distributed backend: {dist_backend(device)}",
        f"world {p.world_size} = DP {data_parallel_size(job)} x TP {p.tp} x PP {p.pp} x CP {p.cp}; global batch "
        f"{t.global_batch_size} = micro {t.micro_batch_size} x DP {data_parallel_size(job)} x accumulation "
        f"{t.gradient_accumulation_steps}",
    ]
    if arch is not None and arch.is_moe:
        notes += moe_notes(job, arch)
    if job.model.tokenizer:
        notes.append(f"tokenizer: model.tokenizer ({paths.tokenizer_source}) for preprocessing and training")
    visible = visible_devices_var(device)
    if visible:
        notes.append(f"devices are selected with {visible}")
    if device == "npu":
        notes.append(
            f"Ascend: every step first sources the first CANN set_env.sh of {', '.join(ASCEND_SET_ENV_CANDIDATES)} "
            f"(and ATB's nnal/atb/set_env.sh when present); torch_npu serves Megatron's default "
            "--distributed-backend nccl with HCCL; MindSpeed-LLM 26.x wants Megatron-LM core_v0.12.1's megatron/ "
            "inside its checkout"
        )
    if job.megatron.load is None:
        if engine == MEGATRON_LM:
            notes.append(
                f"HF -> Megatron conversion uses Megatron Bridge (${BRIDGE_HOME_VAR}, a Megatron-Bridge checkout), "
                "the converter Megatron-LM recommends: tools/checkpoint/convert.py has no Llama/Qwen HF loader any more"
            )
        else:
            notes.append(f"the HF weights are converted at TP {p.tp} / PP {p.pp} into {paths.base}")
            notes.append(
                "convert is checked: the Megatron checkpoint is converted back to HF and must give every tensor back "
                "exactly (MindSpeed-LLM 26.1.0 converts llama2 / qwen3 q/k/v wrongly and exits 0); a difference "
                "stops the run before training"
            )
    elif engine == MINDSPEED_LLM:
        notes.append(f"megatron.load must hold a torch-format checkpoint split for TP {p.tp} / PP {p.pp}")
    if job.stage == "pt":
        notes.append(
            f"the run step links the HF model to {paths.hf_model}; preprocess prepares the pt data with factory's "
            "pipeline (cached, the same report as the deepspeed backend) and writes it as Megatron indexed data, "
            f"{paths.prefix}_text_document.{{bin,idx}}, through megatron-core's builder"
        )
    else:
        notes.append(
            f"the run step writes the training rows to {paths.train_file} and the HF model to {paths.hf_model}"
        )
    unit = "sequences" if job.stage == "pt" else "rows"
    if iters is None:
        counted = (
            "preprocess has written the corpus (sequences: (tokens - 1) // seq_length, as GPTDataset cuts an epoch)"
            if job.stage == "pt"
            else "the run step has counted the rows"
        )
        notes.append(
            f"train iterations: ceil(epochs x training {unit} / global batch), fixed once {counted} "
            "(set train.max_steps to fix it here)"
        )
    elif t.max_steps is None:
        notes.append(f"train iterations: {iters} = ceil({t.epochs} epochs x {samples} {unit} / {t.global_batch_size})")
    if t.scheduler == "warmup_stable_decay":
        decay = f"{wsd_decay_iters(iters)} iterations" if iters is not None else "10% of the iterations"
        notes.append(f"warmup_stable_decay: stable after warmup, then the last {decay} decay ({WSD_NOTE})")
    if job.stage == "sft" and engine == MEGATRON_LM:
        notes += [SFT_NOTE, PAD_NOTE]
    if job.stage == "sft" and engine == MINDSPEED_LLM and job.data.packing and t.max_steps is None:
        notes.append(
            "packing: the rows count training samples only until preprocess has packed them; the run step plans "
            "again with the packed sequences' count (<prefix>_packed_input_ids_document.idx) before training"
        )
    if job.output.resume == "auto":
        notes.append(f"resume: auto continues from {paths.checkpoints}, else starts from {paths.base}")
    if job.megatron.save_hf:
        notes.append(
            f"export: the final checkpoint is converted to Hugging Face format in {paths.final}, then checked to "
            "hold every tensor of the starting model with its shape (check-export)"
        )
        if engine == MEGATRON_LM:
            notes.append(
                "export: factory_cli/backends/megatron/bridge_export.py loads the last checkpoint with Megatron "
                "Bridge's load_megatron_model, which reads the arguments Megatron-LM stores in a torch_dist "
                "checkpoint (no run_config.yaml needed), and saves it with AutoBridge.save_hf_pretrained; read from "
                "Megatron-Bridge v0.6.0's source, not yet run on a GPU"
            )
    notes += _ignored(job, engine)
    return notes


def moe_notes(job: MegatronJob, arch: Architecture) -> list[str]:
    """What EP does to the expert weights per rank (the memory arithmetic), and how the router loss is weighted."""
    from factory_cli.registry.parameters import count_parameters

    p = job.parallel
    assert arch.num_experts is not None
    count = count_parameters(arch)
    dense = count.total - count.experts
    experts_per_rank = count.experts / (p.ep * p.tp * p.pp)
    dense_per_rank = dense / (p.tp * p.pp)
    coef = aux_loss_coef(arch, job.model.moe.aux_loss_coef)
    source = (
        "model.moe.aux_loss_coef"
        if job.model.moe.aux_loss_coef is not None
        else "the model's router_aux_loss_coef"
        if arch.router_aux_loss_coef is not None
        else "the default"
    )
    return [
        f"MoE: {arch.num_experts} experts, {arch.num_experts_per_tok} per token; {count.total / 1e9:.3g}B parameters, "
        f"{count.active / 1e9:.3g}B active; grouped GEMM, all-to-all token dispatch, dropless",
        f"EP {p.ep}: {arch.num_experts} / {p.ep} = {arch.num_experts // p.ep} experts per rank; routed-expert weights "
        f"{count.experts / 1e9:.3g}B / (EP {p.ep} x TP {p.tp} x PP {p.pp}) = {experts_per_rank / 1e9:.3g}B per rank "
        f"({experts_per_rank * 2 / 1e9:.3g} GB in bf16), the other {dense / 1e9:.3g}B / (TP {p.tp} x PP {p.pp}) = "
        f"{dense_per_rank / 1e9:.3g}B; each rank also holds fp32 gradients (4 bytes a weight), and the distributed "
        "optimizer shards the Adam state (12 bytes a weight) of the expert weights over world / (EP x TP x PP) "
        "ranks, of the others over DP",
        f"router load-balancing loss: aux_loss, coefficient {coef:g} ({source}); Megatron adds it per MoE layer, "
        "transformers once over all layers' router logits",
    ]


def _ignored(job: MegatronJob, engine: str) -> list[str]:
    ignored = []
    if job.data.eval:
        ignored.append("data.eval is not used by the megatron backend (data.eval_ratio is, through --split)")
    if job.output.save_total_limit is not None:
        ignored.append("output.save_total_limit: Megatron keeps every checkpoint")
    if job.stage == "sft" and job.data.train_on_prompt and engine == MINDSPEED_LLM:
        ignored.append("data.train_on_prompt: MindSpeed-LLM trains on assistant tokens only")
    if job.stage == "sft" and not job.data.train_on_prompt and engine == MEGATRON_LM:
        ignored.append(
            "data.train_on_prompt: false: Megatron-LM's SFT (prompt format default) trains on every token of the "
            "chat-template text, system and user turns included; use Ascend (MindSpeed-LLM) or backend: deepspeed "
            "to train on assistant tokens only"
        )
    if job.stage == "sft" and job.data.packing and engine == MEGATRON_LM:
        ignored.append("data.packing: Megatron-LM's SFT dataset puts one row per sequence, padded to data.max_length")
    if job.train.optimizer not in ("adamw_torch", "adamw_torch_fused"):
        ignored.append(f"train.optimizer {job.train.optimizer}: Megatron uses its own AdamW")
    other = [r for r in job.logging.report_to if r not in ("tensorboard", "wandb")]
    if other:
        ignored.append(f"logging.report_to {', '.join(other)}: Megatron logs to tensorboard and wandb only")
    if job.dpo is not None and job.dpo.loss == "robust":
        ignored.append("dpo.loss robust: MindSpeed-LLM runs sigmoid DPO with --dpo-label-smoothing (cDPO)")
    return [f"ignored: {text}" for text in ignored]
