"""Build the engine's trainer for a stage: Transformers Trainer (pt) or TRL's SFT / DPO / GRPO trainers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CONFIG_CLASSES = {
    "Trainer": ("transformers", "TrainingArguments"),
    "SFTTrainer": ("trl", "SFTConfig"),
    "DPOTrainer": ("trl", "DPOConfig"),
    "GRPOTrainer": ("trl", "GRPOConfig"),
}


def make_training_args(trainer_name: str, kwargs: dict[str, Any]) -> Any:
    """TrainingArguments / SFTConfig / DPOConfig / GRPOConfig from the plan's keyword arguments."""
    import importlib

    module_name, class_name = CONFIG_CLASSES[trainer_name]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**kwargs)


def trl_reward_functions(specs: Sequence[dict[str, Any]], base_dirs: Sequence[Path]) -> list[Callable[..., Any]]:
    """Our reward specs as the callables GRPOTrainer takes (each named after its label for the logs)."""
    from factory_cli.rewards.loader import load_reward

    functions: list[Callable[..., Any]] = []
    for spec in specs:
        if spec["name"] == "soft_overlong_punishment":
            from trl.rewards import get_soft_overlong_punishment

            functions.append(_named(get_soft_overlong_punishment(**spec["kwargs"]), "overlong"))
            continue
        loaded = load_reward(spec["name"], spec["function"], spec["weight"], spec["kwargs"], base_dirs)
        functions.append(loaded.trl_function())
    return functions


def _named(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    wrapper.__name__ = wrapper.__qualname__ = name
    return wrapper


def router_loss_trainer(coef: float) -> type:
    """The plain Trainer (pt) for a mixture of experts, adding and logging the router's load-balancing loss as TRL's
    SFTTrainer does (trl/trainer/sft_trainer.py in the installed TRL): coefficient x aux loss, divided over the
    gradient accumulation steps when the loss is normalised by the tokens of the whole step, logged as `aux_loss`.
    The caller turns the model's own addition off (prepare_moe in backends/deepspeed/worker.py)."""
    from transformers import Trainer

    class RouterLossTrainer(Trainer):  # type: ignore[misc]
        router_aux_loss_coef = coef

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._aux_losses: list[float] = []

        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            routed = {**inputs, "output_router_logits": True}
            loss, outputs = super().compute_loss(
                model, routed, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
            steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss / steps
            if model.training:
                self._aux_losses.append(self.accelerator.gather_for_metrics(outputs.aux_loss.detach()).mean().item())
            return (loss, outputs) if return_outputs else loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if self._aux_losses and "loss" in logs:
                logs = {**logs, "aux_loss": sum(self._aux_losses) / len(self._aux_losses)}
                self._aux_losses.clear()
            super().log(logs, start_time)

    return RouterLossTrainer


def build_trainer(
    trainer_name: str,
    *,
    model: Any,
    args: Any,
    tokenizer: Any,
    train_dataset: Any,
    eval_dataset: Any,
    peft_config: Any,
    callbacks: list[Any],
    reward_functions: list[Callable[..., Any]] | None = None,
    ref_model: Any = None,
    packed: bool = False,
    router_aux_loss_coef: float | None = None,
) -> Any:
    """The engine's trainer, wired with our callbacks; the engine's own console printer is replaced by ours.
    `router_aux_loss_coef`: the plain Trainer's router loss weight for a mixture of experts (TRL's take it in args)."""
    from transformers.trainer_callback import PrinterCallback

    common = {
        "model": model,
        "args": args,
        "train_dataset": train_dataset,
        "eval_dataset": eval_dataset,
        "processing_class": tokenizer,
        "callbacks": callbacks,
    }
    if trainer_name == "Trainer":
        from transformers import Trainer
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        collator = DataCollatorForLanguageModeling(pad_token_id=pad, padding_free=packed)
        trainer_class = Trainer if router_aux_loss_coef is None else router_loss_trainer(router_aux_loss_coef)
        trainer = trainer_class(data_collator=collator, **common)
    elif trainer_name == "SFTTrainer":
        from trl import SFTTrainer

        trainer = SFTTrainer(peft_config=peft_config, **common)
    elif trainer_name == "DPOTrainer":
        from trl import DPOTrainer

        trainer = DPOTrainer(ref_model=ref_model, peft_config=peft_config, **common)
    elif trainer_name == "GRPOTrainer":
        from trl import GRPOTrainer

        reward_funcs: Any = reward_functions or []
        trainer = GRPOTrainer(reward_funcs=reward_funcs, peft_config=peft_config, **common)
    else:
        raise ValueError(f"unknown trainer {trainer_name}")
    trainer.remove_callback(PrinterCallback)
    return trainer
