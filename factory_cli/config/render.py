"""`factory config`: templates/<backend>/<stage>.yaml.j2 + the registry -> a commented job file.

Values come from the job the options describe, with every default resolved (config/defaults.py),
so a rendered file always shows what would actually run. Comments come from the schema's
field descriptions, so they cannot drift from the code.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from factory_cli.config.defaults import resolve_defaults
from factory_cli.config.errors import UsageError
from factory_cli.config.load import PLACEHOLDER
from factory_cli.config.pydantic_issues import did_you_mean, field_description
from factory_cli.config.schema import JOB_MODELS, SUPPORTED_STAGES, JobBase
from factory_cli.paths import resource_dir

METHODS = ("full", "freeze", "lora", "qlora")
DEVICES = ("auto", "cuda", "npu", "cpu")
BACKEND_METHODS = {"deepspeed": METHODS, "megatron": ("full", "lora"), "verl": ("full", "lora")}
COMMENT_COLUMN = 44
STAGE_DATASETS = {"pt": "demo-pt", "sft": "demo-sft-alpaca", "dpo": "demo-dpo", "grpo": "demo-grpo-math"}
# Why a GRPO template on a mixture-of-experts model proposes gspo (config/moe_checks.py says more).
GSPO_FOR_MOE_NOTE = (
    "gspo for this mixture-of-experts model: one importance ratio per sequence; token-level ratios (grpo, dapo, "
    "dr_grpo) are unstable when routing drifts between rollout and training"
)


@dataclass(frozen=True)
class TemplateChoice:
    """The options of `factory config`; None means not given."""

    backend: str | None = None
    stage: str | None = None
    model: str | None = None
    method: str | None = None
    device: str | None = None
    dataset: str | None = None


def templates_dir() -> Path:
    """The folder of job templates."""
    return resource_dir("templates")


def available_templates() -> list[tuple[str, str, str]]:
    """(backend, stage, file) for every supported combination."""
    return [
        (backend, stage, f"templates/{backend}/{stage}.yaml.j2")
        for backend, stages in SUPPORTED_STAGES.items()
        for stage in stages
    ]


def _ask(label: str, choices: tuple[str, ...] | list[str], default: str) -> str:
    from rich.prompt import Prompt

    return Prompt.ask(label, choices=list(choices), default=default)


def resolve_choice(choice: TemplateChoice, interactive: bool = False) -> TemplateChoice:
    """Fill missing options (by prompting on a terminal, else with defaults) and refuse unsupported ones."""
    backend = choice.backend or (_ask("backend", list(SUPPORTED_STAGES), "deepspeed") if interactive else "deepspeed")
    if backend not in SUPPORTED_STAGES:
        raise UsageError(
            f"unknown backend `{backend}`",
            did_you_mean(backend, list(SUPPORTED_STAGES)) or f"choose one of: {', '.join(SUPPORTED_STAGES)}",
        )
    stages = SUPPORTED_STAGES[backend]
    stage = choice.stage or (_ask("stage", stages, "sft" if "sft" in stages else stages[0]) if interactive else None)
    stage = stage or ("sft" if "sft" in stages else stages[0])
    if stage not in stages:
        others = [b for b, s in SUPPORTED_STAGES.items() if stage in s]
        hint = f"supported on {backend}: {', '.join(stages)}"
        if others:
            hint += f"; {stage} runs on: {', '.join(others)}"
        raise UsageError(f"the {backend} backend has no `{stage}` stage", hint)
    methods = BACKEND_METHODS[backend]
    default_method = "lora" if "lora" in methods else methods[0]
    method = choice.method or (_ask("method", methods, default_method) if interactive else default_method)
    if method not in methods:
        raise UsageError(
            f"method `{method}` is not available on the {backend} backend", f"choose one of: {', '.join(methods)}"
        )
    device = choice.device or "auto"
    if device not in DEVICES:
        raise UsageError(f"unknown device `{device}`", f"choose one of: {', '.join(DEVICES)}")
    model = choice.model
    if model is None and interactive:
        from rich.prompt import Prompt

        model = Prompt.ask("model (registry name, path or Hub id; empty = fill in later)", default="") or None
    dataset = choice.dataset
    if dataset is None and interactive:
        from rich.prompt import Prompt

        dataset = Prompt.ask("dataset (registry name or file; empty = fill in later)", default="") or None
    return replace(choice, backend=backend, stage=stage, method=method, device=device, model=model, dataset=dataset)


def yaml_scalar(value: Any) -> str:
    """A value written the way YAML readers everywhere parse it back (1.0e-05, not 1e-05)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            text = f"{value:g}"
            return text if any(c in text for c in ".e") else f"{text}.0"
        mantissa, exponent = f"{value:e}".split("e")
        mantissa = mantissa.rstrip("0")
        mantissa = mantissa + "0" if mantissa.endswith(".") else mantissa
        return f"{mantissa}e{exponent}"
    if isinstance(value, list):
        return "[" + ", ".join(yaml_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_scalar(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and value == PLACEHOLDER:
        return f'"{PLACEHOLDER}"'
    dumped: str = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return dumped.removesuffix("\n...").removesuffix("...").strip()


def align_comments(text: str, column: int = COMMENT_COLUMN) -> str:
    """Line up ` # ` comments after values at one column (full-line comments stay as they are)."""
    out = []
    for line in text.splitlines():
        match = re.match(r"^(\s*[^#\s].*?)\s+#\s(.*)$", line)
        if match and not line.lstrip().startswith("#") and '"#' not in match.group(1):
            code, comment = match.group(1).rstrip(), match.group(2)
            out.append(f"{code.ljust(column - 1)} # {comment}")
        else:
            out.append(line.rstrip())
    return "\n".join(out).rstrip() + "\n"


def model_is_moe(model: str | None) -> bool:
    """Whether the chosen model (a registry name or a local directory with config.json) has experts."""
    from factory_cli.registry.models import architecture_of

    arch = architecture_of(model) if model else None
    return arch is not None and arch.is_moe


def suggested_grpo_loss(choice: TemplateChoice) -> str | None:
    """The GRPO loss the template proposes instead of the schema's default, or None."""
    if choice.stage == "grpo" and model_is_moe(choice.model):
        return "gspo"
    return None


def _stand_in_job(choice: TemplateChoice) -> JobBase:
    """The job the options describe, placeholders replaced by stand-ins, every default resolved."""
    assert choice.backend and choice.stage
    raw: dict[str, Any] = {
        "backend": choice.backend,
        "stage": choice.stage,
        "device": choice.device or "auto",
        "model": {"name_or_path": choice.model or "stand-in"},
        "method": {"type": choice.method or "lora"},
        "data": {"train": [choice.dataset or "stand-in"]},
    }
    if choice.stage == "grpo":
        raw["grpo"] = {"rewards": ["math_answer"]}
        loss = suggested_grpo_loss(choice)
        if loss is not None:
            raw["grpo"]["loss"] = loss
    return resolve_defaults(JOB_MODELS[choice.backend].model_validate(raw))


@functools.lru_cache(maxsize=4)
def _template_environment(folder: str) -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render_job(choice: TemplateChoice) -> str:
    """The commented job YAML for a resolved choice."""
    from factory_cli.registry.models import find_model

    assert choice.backend and choice.stage
    job = _stand_in_job(choice)
    root = JOB_MODELS[choice.backend]
    spec = find_model(choice.model) if choice.model else None
    env = _template_environment(str(templates_dir()))

    def doc(path: str) -> str:
        parts = tuple(int(p) if p.isdigit() else p for p in path.split("."))
        description = field_description(root, parts)
        if description is None:
            raise KeyError(f"template refers to unknown field {path}")
        return description

    context = {
        "job": job,
        "v": yaml_scalar,
        "doc": doc,
        "model_spec": spec,
        "model_value": yaml_scalar(choice.model) if choice.model else f'"{PLACEHOLDER}"',
        "model_given": choice.model is not None,
        "dataset_value": yaml_scalar(choice.dataset) if choice.dataset else f'"{PLACEHOLDER}"',
        "dataset_given": choice.dataset is not None,
        "example_dataset": STAGE_DATASETS[choice.stage],
        "placeholder": f'"{PLACEHOLDER}"',
        "moe": model_is_moe(choice.model),
        "grpo_loss_note": GSPO_FOR_MOE_NOTE if suggested_grpo_loss(choice) else None,
    }
    template = env.get_template(f"{choice.backend}/{choice.stage}.yaml.j2")
    return align_comments(template.render(**context))
