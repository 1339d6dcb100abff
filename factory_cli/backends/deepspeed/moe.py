"""Mixture-of-experts models on the deepspeed backend, read from the loaded model: its sparse blocks, experts and
routers; the router loss weight TRL takes; LoRA on experts and routers; DeepSpeed ZeRO-3 leaf modules.

What the engines do themselves (read in the installed sources):

* transformers 5 keeps every MoE family's routed experts as fused 3-D parameters (`experts.gate_up_proj`,
  `experts.down_proj`: experts x out x in) and the router as a module holding a 2-D `weight` parameter
  (`mlp.gate`), not as `nn.Linear`. PEFT 0.21 still reads `all-linear` on these families as transformers 4 meant it
  (experts and router included, mapped onto the fused parameters). Qwen2-MoE's shared-expert gate is a `nn.Linear`
  (hidden -> 1).
* TRL 1.16's SFT, DPO and GRPO trainers take `router_aux_loss_coef` in their config (None: the model config's own),
  ask the model for its router logits, add coefficient x aux loss to the loss (scaled for gradient accumulation)
  and log `aux_loss` as a metric; our MetricsCallback writes it to metrics.jsonl. A model whose config has no
  `output_router_logits` (DeepSeek-V2/V3, GLM-4.5: routing balanced by a bias, not a loss) gets no aux loss, and a
  coefficient set for it is a ValueError there.
* PEFT 0.21 adapts parameters through `target_parameters` (LoRA's `ParamWrapper`, one low-rank pair per expert);
  it refuses lora_dropout and DoRA there. bitsandbytes quantizes `nn.Linear` layers only: fused experts would
  stay in 16 bit under qlora.
* DeepSpeed ZeRO-3 gathers parameters by module hooks; a sparse block whose experts run only for the tokens routed
  to them is marked a leaf (`deepspeed.utils.set_z3_leaf_modules`), so the whole block is gathered at once.
  DeepSpeed 0.19's default `zero_optimization.leaf_module` list names only the Mixtral, Qwen2-MoE and Qwen3-MoE
  blocks; the worker marks the block class of whichever family it loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from factory_cli.config.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

    from factory_cli.config.schema import LoraConfig

# The router's load-balancing loss weight when neither the job nor the model's config.json gives one.
DEFAULT_AUX_LOSS_COEF = 0.001
ROUTER_NAMES = ("gate", "router")
EXPERTS_NAME = "experts"
SHARED_EXPERT_GATE = "shared_expert_gate"
# transformers 4's names of the expert projections, which PEFT maps onto transformers 5's fused expert parameters.
EXPERT_PROJECTION_NAMES = frozenset({"gate_proj", "up_proj", "down_proj", "w1", "w2", "w3"})


@dataclass
class MoELayout:
    """Where a loaded model keeps its experts and routers (full module names)."""

    blocks: list[str] = field(default_factory=list)
    block_classes: list[type] = field(default_factory=list)
    fused_expert_parameters: list[str] = field(default_factory=list)  # e.g. model.layers.0.mlp.experts.down_proj
    expert_linears: list[str] = field(default_factory=list)  # per-expert nn.Linear (older / remote-code classes)
    router_parameters: list[str] = field(default_factory=list)  # a router module's own weight (transformers 5)
    router_linears: list[str] = field(default_factory=list)  # routers and shared-expert gates that are nn.Linear

    @property
    def is_moe(self) -> bool:
        return bool(self.blocks)


def _router_child(module: nn.Module) -> tuple[str, nn.Module] | None:
    for name in ROUTER_NAMES:
        child = getattr(module, name, None)
        if child is not None and hasattr(child, "weight"):
            return name, child
    return None


def moe_layout(model: nn.Module) -> MoELayout:
    """The sparse blocks (a module with an `experts` child and a `gate` / `router` child) and what they hold."""
    from torch import nn

    layout = MoELayout()
    for name, module in model.named_modules():
        experts = getattr(module, EXPERTS_NAME, None)
        router = _router_child(module)
        if not isinstance(experts, nn.Module) or router is None:
            continue
        layout.blocks.append(name)
        if type(module) not in layout.block_classes:
            layout.block_classes.append(type(module))
        prefix = f"{name}." if name else ""
        for param_name, param in experts.named_parameters(recurse=False):
            shape = getattr(param, "ds_shape", None) or param.shape  # ZeRO-3 keeps the full shape in ds_shape
            if len(shape) == 3:
                layout.fused_expert_parameters.append(f"{prefix}{EXPERTS_NAME}.{param_name}")
        for sub_name, sub in experts.named_modules():
            if isinstance(sub, nn.Linear):
                layout.expert_linears.append(f"{prefix}{EXPERTS_NAME}.{sub_name}")
        router_name, router_module = router
        if isinstance(router_module, nn.Linear):
            layout.router_linears.append(f"{prefix}{router_name}")
        else:
            layout.router_parameters.append(f"{prefix}{router_name}.weight")
        shared_gate = getattr(module, SHARED_EXPERT_GATE, None)
        if isinstance(shared_gate, nn.Linear):
            layout.router_linears.append(f"{prefix}{SHARED_EXPERT_GATE}")
    return layout


def _suffixes(names: list[str], parts: int) -> list[str]:
    """The distinct dotted suffixes of `parts` components (PEFT matches a target as a suffix of the full name)."""
    return sorted({".".join(name.split(".")[-parts:]) for name in names})


def _linear_leaf_names(model: Any, skip: set[str]) -> list[str]:
    """The short names of the model's nn.Linear layers but the output head and the full names in `skip`."""
    from torch import nn

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and module is not head and name not in skip
        }
    )


def moe_lora_kwargs(model: nn.Module, lora: LoraConfig, targets_all: bool) -> dict[str, Any]:
    """The peft.LoraConfig fields that say what LoRA does to a MoE model's experts and routers.

    `target: all` adapts the linear layers (attention; dense and shared-expert MLPs where PEFT keeps them apart
    from the experts); routed experts only with `method.lora.experts` (fused 3-D weights through `target_parameters`),
    routers and shared-expert gates only with `method.lora.router`. PEFT 0.21 reads `all-linear` on the MoE families
    whose experts transformers 5 fused (Qwen2/3-MoE, Mixtral, OLMoE, DeepSeek, GLM-4.5) as transformers 4 meant it:
    experts and routers included. So the targets are listed here, never left to `all-linear`; and since PEFT maps
    the names of transformers 4's expert projections (gate_proj, up_proj, down_proj, w1-w3) onto the fused experts
    wherever they appear (and drops them as modules), dense and shared-expert MLPs of those names are left out of
    the list: on these families LoRA cannot reach them apart from the experts.
    """
    layout = moe_layout(model)
    if not layout.is_moe:
        if lora.experts or lora.router:
            which = "method.lora.experts" if lora.experts else "method.lora.router"
            raise UsageError(f"{which}: this model has no mixture-of-experts blocks", hint=f"remove {which}")
        return {}
    kwargs: dict[str, Any] = {}
    parameters: list[str] = []
    if lora.experts:
        parameters += _suffixes(layout.fused_expert_parameters, 2)
    if lora.router:
        parameters += _suffixes(layout.router_parameters, 3)
    if parameters:
        if lora.dropout or lora.use_dora:
            raise UsageError(
                "LoRA on fused expert / router weights (PEFT target_parameters) takes no dropout or DoRA",
                hint="set method.lora.dropout: 0 and method.lora.use_dora: false",
            )
        kwargs["target_parameters"] = parameters
    named = [t for t in lora.target if t.rsplit(".", 1)[-1] in EXPERT_PROJECTION_NAMES]
    if not targets_all and named and layout.fused_expert_parameters and not lora.experts:
        raise UsageError(
            f"method.lora.target: PEFT maps {', '.join(named)} onto this model's fused experts (the names "
            "transformers 4 gave the expert projections), so the experts would be adapted",
            hint=f"leave {', '.join(named)} out of method.lora.target, or set method.lora.experts: true",
        )
    if targets_all:
        skip = set(() if lora.experts else layout.expert_linears) | set(() if lora.router else layout.router_linears)
        names = _linear_leaf_names(model, skip)
        if layout.fused_expert_parameters:
            names = [n for n in names if n not in EXPERT_PROJECTION_NAMES]
        kwargs["target_modules"] = names
    return kwargs


def adapted_moe_parts(model: nn.Module) -> dict[str, list[str]]:
    """The trainable LoRA parameters that sit in experts and in routers (full names), to hold the job's choice."""
    found: dict[str, list[str]] = {"experts": [], "router": []}
    for name, param in model.named_parameters():
        if not param.requires_grad or "lora_" not in name:
            continue
        parts = name.split(".")
        if EXPERTS_NAME in parts:
            found["experts"].append(name)
        elif any(p in (*ROUTER_NAMES, SHARED_EXPERT_GATE) for p in parts):
            found["router"].append(name)
    return found


def check_adapted_parts(model: nn.Module, lora: LoraConfig) -> None:
    """PEFT adapted exactly the MoE parts the job asked for (method.lora.experts / router); else a UsageError."""
    found = adapted_moe_parts(model)
    for part in ("experts", "router"):
        asked = getattr(lora, part)
        if found[part] and not asked:
            raise UsageError(
                f"LoRA reached the {part} ({found[part][0]}, ...) though method.lora.{part} is false",
                hint=f"set method.lora.{part}: true, or name method.lora.target modules outside the {part}",
            )
        if asked and not found[part]:
            raise UsageError(
                f"method.lora.{part}: no {part} weight of this model was adapted", hint=f"remove method.lora.{part}"
            )


def describe_moe_lora(lora: LoraConfig) -> str:
    """A line for the run log: what LoRA adapts in the experts and routers."""
    experts = "experts adapted (method.lora.experts)" if lora.experts else "experts frozen (method.lora.experts: false)"
    router = "routers adapted (method.lora.router)" if lora.router else "routers frozen"
    return f"mixture of experts: {experts}, {router}"


def router_loss_coef(model: Any, job_coef: float | None) -> float | None:
    """The router load-balancing loss weight for TRL: the job's, else the model config's router_aux_loss_coef, else
    DEFAULT_AUX_LOSS_COEF; None for a model whose transformers class computes no such loss."""
    config = model.config.get_text_config()
    if not hasattr(config, "output_router_logits"):
        if job_coef:
            raise UsageError(
                f"model.moe.aux_loss_coef: {type(model).__name__} computes no router load-balancing loss "
                "(a dense model, or a mixture of experts balanced by a routing bias)",
                hint="remove model.moe.aux_loss_coef",
            )
        return None
    if job_coef is not None:
        return job_coef
    own = getattr(config, "router_aux_loss_coef", None)
    return float(own) if own is not None else DEFAULT_AUX_LOSS_COEF


def set_zero3_leaf_modules(model: nn.Module) -> list[str]:
    """Mark the model's sparse MoE block classes as DeepSpeed ZeRO-3 leaf modules; returns their class names."""
    layout = moe_layout(model)
    if not layout.block_classes:
        return []
    from deepspeed.utils import set_z3_leaf_modules

    set_z3_leaf_modules(model, layout.block_classes)
    return [cls.__name__ for cls in layout.block_classes]
