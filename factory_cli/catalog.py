"""`factory list ...`: what the toolkit knows, as tables. No torch."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from factory_cli.config.errors import UsageError
from factory_cli.config.pydantic_issues import did_you_mean
from factory_cli.config.schema import SUPPORTED_STAGES
from factory_cli.ui import print_table

if TYPE_CHECKING:
    from factory_cli.registry.models import Architecture

STAGE_DESCRIPTIONS = {
    "pt": "continued pre-training on raw text (causal LM, packed)",
    "sft": "supervised fine-tuning on conversations (loss on assistant tokens)",
    "dpo": "direct preference optimization on (prompt, chosen, rejected)",
    "grpo": "group-relative policy optimization with verifiable rewards (grpo, dapo, dr_grpo, gspo)",
}
ENGINE_MODULES = {"deepspeed": ("trl", "deepspeed"), "megatron": ("megatron", "mindspeed_llm"), "verl": ("verl",)}
ENGINE_DESCRIPTIONS = {
    "deepspeed": "Transformers + TRL + PEFT, DeepSpeed ZeRO / torchrun",
    "megatron": "Megatron-LM (CUDA) / MindSpeed-LLM (Ascend): TP, PP, CP, EP",
    "verl": "verl + Ray: large-scale RL rollouts (vLLM / SGLang)",
}


def _installed(modules: tuple[str, ...]) -> str:
    found = [m for m in modules if importlib.util.find_spec(m) is not None]
    return "yes" if found else "no"


def print_catalog(what: str) -> None:
    """Print one of the catalogs; an unknown name is a usage error with a suggestion."""
    printers = {
        "backends": _backends,
        "stages": _stages,
        "models": _models,
        "datasets": _datasets,
        "templates": _templates,
        "rewards": _rewards,
        "tasks": _tasks,
    }
    if what not in printers:
        raise UsageError(f"nothing called `{what}` to list", did_you_mean(what, list(printers)) or ", ".join(printers))
    printers[what]()


def _backends() -> None:
    rows = [
        (
            name,
            ", ".join(stages),
            ENGINE_DESCRIPTIONS[name],
            _installed(ENGINE_MODULES[name]),
            f"pip install 'factory-cli[{name}]'",
        )
        for name, stages in SUPPORTED_STAGES.items()
    ]
    print_table("backends", ["backend", "stages", "engine", "installed", "install"], rows)


def _stages() -> None:
    rows = [
        (stage, text, ", ".join(b for b, stages in SUPPORTED_STAGES.items() if stage in stages))
        for stage, text in STAGE_DESCRIPTIONS.items()
    ]
    print_table("stages", ["stage", "what", "backends"], rows)


def _models() -> None:
    from factory_cli.registry.models import load_model_registry

    rows = [
        (
            spec.name,
            spec.hf_id + (" (GGUF, pip " + spec.gguf.pip + ")" if spec.gguf else ""),
            spec.kind,
            *parameter_columns(spec.architecture),
            spec.template,
        )
        for spec in load_model_registry().values()
    ]
    print_table("models (model_registry/)", ["name", "source", "kind", "params", "active", "experts", "template"], rows)


def parameter_columns(arch: Architecture) -> tuple[str, str, str]:
    """Total and active parameters (computed from the architecture) and, for MoE, `experts/top-k`."""
    from factory_cli.registry.parameters import count_parameters

    count = count_parameters(arch)
    experts = f"{arch.num_experts_per_tok}/{arch.num_experts}" if arch.is_moe else "-"
    return _billions(count.total), _billions(count.active), experts


def _billions(n: int) -> str:
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M"


def _datasets() -> None:
    from factory_cli.registry.datasets import load_dataset_registry

    rows = [
        (
            entry.name,
            entry.stage or "-",
            entry.format,
            str(entry.file.name if entry.file else entry.hf_hub_url),
            entry.description,
        )
        for entry in load_dataset_registry().values()
    ]
    print_table("datasets (datasets_registry/)", ["name", "stage", "format", "file", "description"], rows)


def _templates() -> None:
    from factory_cli.config.render import available_templates
    from factory_cli.data.chat_templates import TEMPLATE_NAMES

    print_table("job templates (factory config)", ["backend", "stage", "file"], available_templates())
    print_table("chat templates (model.template)", ["name"], [(name,) for name in ("auto", *TEMPLATE_NAMES)])


def _rewards() -> None:
    from factory_cli.rewards.builtin import BUILTIN_REWARDS

    rows = [(r.name, r.description, "yes" if r.needs_answer else "no") for r in BUILTIN_REWARDS.values()]
    rows.append(("path/to/file.py:function", "your own (verl compute_score, TRL batch, or one completion)", "-"))
    print_table("rewards (grpo.rewards)", ["name", "what", "needs answer"], rows)


def _tasks() -> None:
    from factory_cli.evaluation.tasks import describe_tasks

    print_table("eval tasks", ["task", "kind", "metric", "description"], describe_tasks())
