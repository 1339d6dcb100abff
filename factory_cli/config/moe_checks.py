"""Checks of a job on a mixture-of-experts model, before launch. No torch, no engine import.

The model is a mixture of experts when its architecture (registry entry or local config.json) names a number of
experts. What the engines do with MoE models is described in factory_cli/backends/deepspeed/moe.py.

RL on a mixture of experts: a token-level importance ratio pi_theta(y_t) / pi_old(y_t) compares two forward passes; on
an MoE model the router may send the same token to other experts in each of them (routing drift between the rollout
policy and the trained policy), so single-token ratios jump and clipping stops bounding the update. GSPO's ratio is one
per sequence (the geometric mean over its tokens), which averages that noise out; routing replay removes it by training
on the routes the old policy took. `token_level_loss_on_moe` is the one warning every RL backend calls.
"""

from __future__ import annotations

from collections.abc import Iterator

from factory_cli.config.checks import CheckContext, error, job_architecture, warning
from factory_cli.config.errors import Issue
from factory_cli.config.schema import DeepSpeedJob, JobBase
from factory_cli.registry.models import Architecture

QLORA_FUSED_EXPERTS = (
    "qlora on a mixture of experts: bitsandbytes quantizes nn.Linear layers only, and transformers keeps this model's "
    "routed experts (most of its weights) as fused 3-D parameters, so they would stay in 16 bit"
)
QLORA_FUSED_EXPERTS_HINT = "use method.type: lora (with parallel.zero_stage: 3 to shard the experts), or full"
# Usual weights of the router's load-balancing loss (1e-3 to 1e-2); far above, the balance term outweighs the task.
AUX_LOSS_COEF_HIGH = 0.1
TOKEN_LEVEL_LOSSES = ("grpo", "dapo", "dr_grpo")
SEQUENCE_LEVEL_LOSS = "gspo"


def check_moe(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """MoE settings against the model: router loss weight, LoRA on experts and routers, qlora, the RL loss."""
    if not isinstance(job, DeepSpeedJob):
        return
    arch = job_architecture(job, ctx)
    lora = job.method.lora
    uses_lora = job.method.type in ("lora", "qlora")
    coef = job.model.moe.aux_loss_coef
    if arch is None:
        return  # a Hub model not downloaded yet: the worker checks the loaded model (backends/deepspeed/moe.py)
    if not arch.is_moe:
        if coef is not None:
            yield error(
                "model.moe.aux_loss_coef",
                f"`{job.model.name_or_path}` is a dense model: it has no router whose load-balancing loss to weigh",
                "remove model.moe.aux_loss_coef (it applies to mixture-of-experts models only)",
            )
        for name in ("experts", "router"):
            if uses_lora and getattr(lora, name):
                yield error(
                    f"method.lora.{name}",
                    f"`{job.model.name_or_path}` is a dense model: it has no {name}s to adapt",
                    f"remove method.lora.{name}",
                )
        return
    if coef is not None and coef > AUX_LOSS_COEF_HIGH:
        yield warning(
            "model.moe.aux_loss_coef",
            f"router load-balancing loss weight {coef:g} is far above the usual 0.001-0.01: balancing the experts "
            "would outweigh the task's loss",
            "leave it unset (the model's own router_aux_loss_coef) or use 0.001-0.01",
        )
    if job.method.type == "qlora" and not job.model.trust_remote_code:
        yield error("method.type", QLORA_FUSED_EXPERTS, QLORA_FUSED_EXPERTS_HINT)
    if uses_lora and (lora.experts or lora.router):
        what = "method.lora.experts" if lora.experts else "method.lora.router"
        if lora.dropout:
            yield error(
                "method.lora.dropout",
                f"{what}: PEFT adapts fused expert / router weights (target_parameters) without dropout",
                "set method.lora.dropout: 0",
            )
        if lora.use_dora:
            yield error(
                "method.lora.use_dora",
                f"{what}: PEFT has no DoRA for fused expert / router weights (target_parameters)",
                "set method.lora.use_dora: false, or leave the experts out",
            )
    if job.stage == "grpo" and job.grpo is not None:
        yield from token_level_loss_on_moe(job.grpo.loss, arch, [])


def token_level_loss_on_moe(loss: str, arch: Architecture | None, alternatives: list[str]) -> Iterator[Issue]:
    """A warning at grpo.loss when a token-level loss trains an MoE model; `alternatives` are the other remedies the
    backend offers, each a short imperative ("set ..."), after the loss change that every backend has."""
    if loss not in TOKEN_LEVEL_LOSSES or arch is None or not arch.is_moe:
        return
    ways = [f"use grpo.loss: {SEQUENCE_LEVEL_LOSS} (one importance ratio per sequence)", *alternatives]
    yield warning(
        "grpo.loss",
        f"grpo.loss {loss} weighs each token by its own importance ratio; on this mixture-of-experts model "
        f"({arch.num_experts} experts) the router can pick other experts for a token in the rollout policy than in "
        "the trained policy (routing drift), which makes token-level ratios unstable",
        "; or ".join(ways),
    )
