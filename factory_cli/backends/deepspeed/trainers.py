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
) -> Any:
    """The engine's trainer, wired with our callbacks; the engine's own console printer is replaced by ours."""
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
        trainer = Trainer(data_collator=collator, **common)
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
