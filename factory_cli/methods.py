"""Training methods on a loaded model: full, freeze (last N layers), LoRA and QLoRA (PEFT on bitsandbytes).

Who does what with TRL 1.16 (read in trl/trainer/{sft,dpo,grpo}_trainer.py), so nothing is done twice:

* Given `peft_config=` (and a model that is not yet a PeftModel), SFTTrainer, DPOTrainer and GRPOTrainer
  call `peft.get_peft_model` themselves; passing a PeftModel *and* a peft_config is an error there.
  The plain transformers `Trainer` does not: the caller wraps the model first.
* None of them calls `prepare_model_for_kbit_training`: for qlora the caller runs `prepare_for_kbit`
  before handing the model over (with any trainer).
* With PEFT and `gradient_checkpointing`, they call `model.enable_input_require_grads()` themselves.
* On a 4/8-bit base model they cast the trainable adapter weights to bf16 after wrapping (the QLoRA
  paper's recipe) -- on CPU too; the DoRA magnitude vector stays fp32.
* DPO with peft_config and no ref model takes the base model (adapter disabled) as reference; GRPO the
  same when beta != 0. Hand them an already wrapped PeftModel instead and they add a second, frozen
  "ref" adapter copied from it: so pass the base model + peft_config to TRL, never both wrapped.
* Freeze (requires_grad) is ours alone: the trainers optimise whatever requires grad.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import prod
from typing import TYPE_CHECKING, Any

from factory_cli.config.errors import UsageError

if TYPE_CHECKING:
    import peft
    from torch import nn

    from factory_cli.config.schema import FreezeConfig, LoraConfig, MethodSection

ALL_LINEAR = "all-linear"  # PEFT's keyword: every linear layer except the output head


# ---------------------------------------------------------------------------------------------- LoRA


def _adaptable(module: nn.Module) -> bool:
    """A layer PEFT's LoRA can wrap: linear (incl. bitsandbytes 4/8-bit), embedding, conv, GPT-2 Conv1D."""
    from torch import nn

    if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)):
        return True
    return type(module).__name__ == "Conv1D"


def linear_module_names(model: nn.Module) -> list[str]:
    """The distinct short names of the model's linear layers (q_proj, ..., lm_head), sorted."""
    from torch import nn

    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    names |= {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if type(module).__name__ == "Conv1D"}
    return sorted(n for n in names if n)


def _matches(name: str, target: str) -> bool:
    """PEFT's rule for a list entry: the full module name, or its dotted suffix."""
    return name == target or name.endswith(f".{target}")


def _check_names(model: nn.Module, names: Sequence[str], what: str, *, adaptable_only: bool) -> None:
    """Every name must match some module (an adaptable one for LoRA targets); else UsageError listing them."""
    modules = list(model.named_modules())
    unknown = [
        target
        for target in names
        if not any(_matches(name, target) and (not adaptable_only or _adaptable(m)) for name, m in modules)
    ]
    if unknown:
        listed = ", ".join(f"`{n}`" for n in unknown)
        raise UsageError(
            f"{what} {listed} matches no {'linear ' if adaptable_only else ''}module of this model",
            hint=f"linear modules: {', '.join(linear_module_names(model))} (or `all` for every linear layer)",
        )


def lora_target_modules(
    model: nn.Module, lora: LoraConfig, registry_targets: Sequence[str] | None = None
) -> list[str] | str:
    """`all` -> PEFT's all-linear; explicit names are checked against the model (unknown ones are an error).

    An empty list falls back to the registry's targets for this family, else all-linear.
    """
    return _resolve_targets(model, list(lora.target), registry_targets)


def _resolve_targets(model: nn.Module, target: Sequence[str] | str, registry_targets: Sequence[str] | None) -> Any:
    """Shared by lora_target_modules and peft_config_from_kwargs."""
    if isinstance(target, str):
        target = [target]
    targets = [t for t in target if t]
    if not targets:
        targets = list(registry_targets) if registry_targets else ["all"]
    if any(t.lower() in ("all", ALL_LINEAR) for t in targets):
        if len(targets) > 1:
            raise UsageError(
                f"method.lora.target mixes `all` with module names: {targets}",
                hint="use either [all] or an explicit list such as [q_proj, v_proj]",
            )
        return ALL_LINEAR
    _check_names(model, targets, "method.lora.target", adaptable_only=True)
    return targets


def peft_config(
    model: nn.Module, method: MethodSection, registry_targets: Sequence[str] | None = None
) -> peft.LoraConfig | None:
    """The peft.LoraConfig for lora / qlora (targets checked against the model); None for full / freeze."""
    if method.type not in ("lora", "qlora"):
        return None
    lora = method.lora
    return peft_config_from_kwargs(
        model,
        {
            "r": lora.rank,
            "lora_alpha": lora.alpha or 2 * lora.rank,
            "lora_dropout": lora.dropout,
            "target_modules": list(lora.target),
            "use_rslora": lora.use_rslora,
            "use_dora": lora.use_dora,
            "modules_to_save": list(lora.modules_to_save) or None,
            "bias": "none",
            "task_type": "CAUSAL_LM",
        },
        registry_targets,
    )


def peft_config_from_kwargs(
    model: nn.Module, kwargs: Mapping[str, Any], registry_targets: Sequence[str] | None = None
) -> peft.LoraConfig:
    """peft.LoraConfig from planned keyword arguments, with target_modules / modules_to_save checked."""
    from peft import LoraConfig as PeftLoraConfig

    values = dict(kwargs)
    values["target_modules"] = _resolve_targets(model, values.get("target_modules") or [], registry_targets)
    to_save = values.get("modules_to_save")
    if to_save:
        _check_names(model, list(to_save), "method.lora.modules_to_save", adaptable_only=False)
    values.setdefault("task_type", "CAUSAL_LM")
    return PeftLoraConfig(**values)


# ---------------------------------------------------------------------------------------------- freeze


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder blocks and their dotted name: `model.layers` (Llama, Qwen, Mistral, GLM) else the longest list."""
    from torch import nn

    for name in ("model.layers", "model.language_model.layers", "transformer.h", "transformer.layers", "layers"):
        found: Any = model
        for part in name.split("."):
            found = getattr(found, part, None)
            if found is None:
                break
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return name, found
    lists = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.ModuleList)]
    if not lists:
        raise UsageError(
            f"cannot find the decoder layers of {type(model).__name__} (no nn.ModuleList)",
            hint="use method.type: lora or full for this model",
        )
    return max(lists, key=lambda item: len(item[1]))


def apply_freeze(model: nn.Module, freeze: FreezeConfig) -> None:
    """Train only the last N decoder layers (negative N: the first), optionally only some modules in them."""
    layers_name, layers = decoder_layers(model)
    count = len(layers)
    wanted = freeze.trainable_layers
    if abs(wanted) > count:
        raise UsageError(
            f"method.freeze.trainable_layers is {wanted} but the model has {count} decoder layers",
            hint=f"use a value between -{count} and {count}",
        )
    chosen = range(count - wanted, count) if wanted >= 0 else range(-wanted)
    for param in model.parameters():
        param.requires_grad = False
    matched: set[str] = set()
    for index in chosen:
        for name, param in layers[index].named_parameters():
            hits = [m for m in freeze.trainable_modules if m in name]
            matched.update(hits)
            if not freeze.trainable_modules or hits:
                param.requires_grad = True
    missing = [m for m in freeze.trainable_modules if m not in matched]
    if missing and len(chosen) > 0:
        inside = sorted({name.rsplit(".", 1)[0] for name, _ in layers[chosen[0]].named_parameters()})
        raise UsageError(
            f"method.freeze.trainable_modules {missing} match nothing inside {layers_name}[i]",
            hint=f"module names inside a layer: {', '.join(inside)}",
        )
    # Tied weights appear once in named_parameters(); match every alias (lm_head -> embed_tokens).
    everything = list(model.named_parameters(remove_duplicate=False))
    for extra in freeze.extra_modules:
        selected = [param for name, param in everything if extra in name]
        if not selected:
            tops = sorted({name.split(".layers.", 1)[0].rsplit(".", 1)[0] for name, _ in everything})
            raise UsageError(
                f"method.freeze.extra_modules `{extra}` matches no parameter of this model",
                hint=f"parameter groups outside the layers include: {', '.join(tops)}",
            )
        for param in selected:
            param.requires_grad = True
    if not any(param.requires_grad for param in model.parameters()):
        raise UsageError(
            "method.freeze leaves nothing to train",
            hint="set trainable_layers to a non-zero number or name extra_modules",
        )


# ---------------------------------------------------------------------------------------------- QLoRA


def prepare_for_kbit(model: Any, gradient_checkpointing: bool) -> Any:
    """peft.prepare_model_for_kbit_training for a 4/8-bit model (TRL does not call it); others unchanged."""
    if not (getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)):
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


# ---------------------------------------------------------------------------------------------- counting


def _logical_numel(param: Any) -> int:
    """Weights a parameter stands for: bitsandbytes packs two 4-bit values per byte of its storage."""
    if type(param).__name__ == "Params4bit":
        state = getattr(param, "quant_state", None)
        if state is not None and getattr(state, "shape", None) is not None:
            return int(prod(state.shape))
        return int(param.numel()) * 2 * int(param.element_size())
    return int(param.numel())


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) weights, 4-bit packed parameters counted as the weights they hold."""
    trainable = total = 0
    for param in model.parameters():
        count = _logical_numel(param)
        total += count
        if param.requires_grad:
            trainable += count
    return trainable, total


def describe_trainable(model: nn.Module) -> str:
    """`trainable params: 1,234,567 of 135,000,000 (0.91%)`."""
    trainable, total = count_parameters(model)
    share = 100.0 * trainable / total if total else 0.0
    return f"trainable params: {trainable:,} of {total:,} ({share:.2f}%)"
