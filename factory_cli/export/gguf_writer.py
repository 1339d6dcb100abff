"""Write a Llama-architecture checkpoint (SmolLM2, Llama 3, Mistral, Qwen2) as an f16 or q8_0 GGUF file.

The fallback for machines without llama.cpp: where its convert_hf_to_gguf.py is on PATH, gguf_converter.py runs that
instead. What llama.cpp's converter does for these models, through the `gguf` package's GGUFWriter: hyperparameters
as metadata, the tokenizer (tokens, types, merges, special ids, chat template), 1-D tensors in F32, and the Q/K
projections of Llama-family models permuted into llama.cpp's rotary layout. The pre-tokenizer is named from a copy of
the converter's hashes for the families above only. `gguf_architecture` is pure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from hashlib import sha256
from pathlib import Path
from typing import Any

from factory_cli.config.errors import UsageError

GGUF_TYPES = ("f16", "q8_0")
# transformers model_type -> llama.cpp architecture. Mistral is written as llama (as llama.cpp does).
GGUF_ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}
# Which models' Q/K weights llama.cpp expects permuted (its LlamaModel); Qwen2 keeps the HF layout.
_PERMUTED_ARCHITECTURES = ("llama",)
Q8_0_BLOCK = 32

# llama.cpp tells BPE pre-tokenizers apart by hashing the ids of this text (convert_hf_to_gguf.py,
# get_vocab_base_pre); the few families this writer supports, keyed by that hash.
_CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
_PRE_TOKENIZERS = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM / SmolLM2
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 / Qwen2 / Qwen2.5
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3
}


def gguf_architecture(config: dict[str, Any]) -> str:
    """llama.cpp's architecture name for a config.json; UsageError listing the supported ones otherwise."""
    model_type = str(config.get("model_type", ""))
    if model_type not in GGUF_ARCHITECTURES:
        supported = ", ".join(sorted(GGUF_ARCHITECTURES))
        raise UsageError(
            f"GGUF export supports the model types {supported}; this model is `{model_type or 'unknown'}`",
            "install llama.cpp (its convert_hf_to_gguf.py on PATH is used when present), or export safetensors",
        )
    return GGUF_ARCHITECTURES[model_type]


def gguf_file_name(stem: str, gguf_type: str) -> str:
    """`<stem>-<type>.gguf`, e.g. merged-f16.gguf."""
    return f"{stem}-{gguf_type}.gguf"


def permute_for_llama_cpp(weights: Any, n_head: int, n_head_kv: int | None = None) -> Any:
    """Reorder a Q or K projection from HF's rotate-half layout to llama.cpp's interleaved rotary layout."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _rope_parameters(config: Any) -> dict[str, Any]:
    """rope_theta and scaling, from transformers 5's rope_parameters or the older rope_theta / rope_scaling."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    if "rope_theta" not in params:
        params["rope_theta"] = getattr(config, "rope_theta", 10000.0)
    scaling = getattr(config, "rope_scaling", None)
    if isinstance(scaling, dict):
        params = {**scaling, **params}
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def llama3_rope_factors(params: dict[str, Any], head_dim: int) -> Any:
    """The per-frequency factors llama.cpp reads from `rope_freqs.weight` for Llama 3.1-style rope scaling."""
    import numpy as np

    base = float(params["rope_theta"])
    factor = float(params.get("factor", 8.0))
    low = float(params.get("low_freq_factor", 1.0))
    high = float(params.get("high_freq_factor", 4.0))
    old_context = float(params.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_context / low, old_context / high
    factors = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi / (1.0 / base ** (i / head_dim))
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def _tokenizer_kind(tokenizer_dir: Path) -> str:
    """`gpt2` (byte-level BPE: SmolLM2, Llama 3, Qwen2) or `llama` (SentencePiece-style BPE with byte fallback)."""
    try:
        data = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UsageError(
            "GGUF export needs a fast tokenizer (tokenizer.json)", "save the tokenizer with transformers first"
        ) from None
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise UsageError(
            f"GGUF export supports BPE tokenizers; this one is {model.get('type')}", "export safetensors instead"
        )
    # Byte-level pre-tokenization makes it GPT-2 style even when byte_fallback is set (as in tokenizers that
    # transformers rebuilt from a GGUF file).
    if "ByteLevel" in json.dumps([data.get("pre_tokenizer"), data.get("decoder")]):
        return "gpt2"
    if model.get("byte_fallback"):
        return "llama"
    raise UsageError("GGUF export: unrecognised BPE tokenizer (neither byte-level nor byte-fallback)", None)


def _pre_tokenizer(tokenizer: Any, source: Path | None, notes: list[str]) -> str:
    """llama.cpp's pre-tokenizer name: the source GGUF's, else by llama.cpp's hash of a test text, else default."""
    if source is not None:
        from gguf import GGUFReader

        field = GGUFReader(str(source)).fields.get("tokenizer.ggml.pre")
        if field is not None:
            return str(field.contents())
    digest = sha256(str(tokenizer.encode(_CHKTXT)).encode()).hexdigest()
    if digest in _PRE_TOKENIZERS:
        return _PRE_TOKENIZERS[digest]
    notes.append("unknown BPE pre-tokenizer: wrote `default`; llama.cpp may split text differently than transformers")
    return "default"


def _bpe_vocab(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and their types in id order, padded to the model's vocab size (llama.cpp's get_vocab_base)."""
    from gguf import TokenType

    vocab = tokenizer.get_vocab()
    reverse = {i: t for t, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(max(vocab_size, len(vocab))):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.USER_DEFINED)
        elif reverse[i] in added:
            special = bool(getattr(decoder.get(i), "special", False))
            plain = tokenizer.decode(tokenizer.encode(reverse[i], add_special_tokens=False))
            tokens.append(reverse[i] if special else plain)
            types.append(TokenType.CONTROL if special else TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(TokenType.NORMAL)
    return tokens, types


def _add_tokenizer(
    writer: Any, tokenizer: Any, tokenizer_dir: Path, vocab_size: int, source: Path | None, notes: list[str]
) -> None:
    """Tokenizer metadata: model, pre-tokenizer, tokens, types (scores), merges, special ids, chat template."""
    import gguf

    kind = _tokenizer_kind(tokenizer_dir)
    if kind == "gpt2":
        tokens, types = _bpe_vocab(tokenizer, vocab_size)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_pre_tokenizer(tokenizer, source, notes))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
    else:
        vocab = gguf.vocab.LlamaHfVocab(tokenizer_dir)
        texts, scores, kinds = zip(*vocab.all_tokens(), strict=True)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(list(texts))
        writer.add_token_scores(list(scores))
        writer.add_token_types(list(kinds))
        tokens = list(texts)
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=kind == "gpt2", n_vocab=len(tokens))
    special.add_to_gguf(writer, quiet=True)
    if special.chat_template is None and isinstance(getattr(tokenizer, "chat_template", None), str):
        writer.add_chat_template(tokenizer.chat_template)


def _add_hyperparameters(writer: Any, config: Any, arch: str, gguf_type: str, name: str) -> dict[str, Any]:
    """Architecture metadata; returns the rope parameters (for the llama3 rope_freqs tensor)."""
    import gguf

    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    rope = _rope_parameters(config)
    writer.add_name(name)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or heads))
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    rope_type = str(rope.get("rope_type") or "default")
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope_type not in ("default", "llama3"):
        raise UsageError(
            f"GGUF export does not handle `{rope_type}` rope scaling",
            "export safetensors and use llama.cpp's converter",
        )
    file_type = gguf.LlamaFileType.MOSTLY_F16 if gguf_type == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    return {**rope, "head_dim": head_dim}


def _encode_tensor(data: Any, gguf_type: str) -> tuple[Any, Any]:
    """(array, raw dtype or None): 1-D in F32; 2-D in F16, or Q8_0 when the rows split into 32-wide blocks."""
    import gguf
    import numpy as np

    if data.ndim <= 1:
        return data.astype(np.float32), None
    if gguf_type == "q8_0" and data.shape[-1] % Q8_0_BLOCK == 0:
        qtype = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(data.astype(np.float32), qtype), qtype
    return data.astype(np.float16), None


def write_gguf(
    model: Any,
    tokenizer: Any,
    path: Path,
    gguf_type: str,
    *,
    name: str,
    source_gguf: Path | None = None,
) -> list[str]:
    """Write `model` (+ tokenizer) to `path` as an f16 / q8_0 GGUF; returns notes for the report."""
    import tempfile

    import gguf
    import numpy as np
    import torch

    if gguf_type not in GGUF_TYPES:
        raise UsageError(f"unknown GGUF type `{gguf_type}`", f"use one of {', '.join(GGUF_TYPES)}")
    config = model.config
    arch = gguf_architecture(config.to_dict())
    notes: list[str] = []
    writer = gguf.GGUFWriter(str(path), arch)
    rope = _add_hyperparameters(writer, config, arch, gguf_type, name)
    with tempfile.TemporaryDirectory(prefix="factory-gguf-tok-") as folder:
        tokenizer.save_pretrained(folder)
        _add_tokenizer(writer, tokenizer, Path(folder), int(config.vocab_size), source_gguf, notes)
    if rope.get("rope_type") == "llama3":
        writer.add_tensor("rope_freqs.weight", llama3_rope_factors(rope, int(rope["head_dim"])))
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], int(config.num_hidden_layers))
    tied = bool(getattr(config, "tie_word_embeddings", False))
    kept_f16 = 0
    for key, tensor in model.state_dict().items():
        if tied and key == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when there is no output tensor
        if key.endswith("rotary_emb.inv_freq"):
            continue
        target = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise UsageError(f"GGUF export does not know where tensor `{key}` goes", "export safetensors instead")
        data: np.ndarray = tensor.detach().to(torch.float32).cpu().numpy()
        if arch in _PERMUTED_ARCHITECTURES and key.endswith("q_proj.weight"):
            data = permute_for_llama_cpp(data, heads, heads)
        elif arch in _PERMUTED_ARCHITECTURES and key.endswith("k_proj.weight"):
            data = permute_for_llama_cpp(data, heads, kv_heads)
        array, raw = _encode_tensor(data, gguf_type)
        if gguf_type == "q8_0" and data.ndim > 1 and raw is None:
            kept_f16 += 1
        writer.add_tensor(target, array, raw_dtype=raw)  # get_name keeps the .weight / .bias suffix
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if kept_f16:
        notes.append(f"{kept_f16} tensor(s) with rows not divisible by {Q8_0_BLOCK} were written in F16")
    return notes


def supported_architectures() -> Sequence[str]:
    """The transformers model types this writer handles."""
    return tuple(sorted(GGUF_ARCHITECTURES))
