"""GGUF weights as a Hugging Face checkpoint: dequantized once into the factory cache (keyed by the file's content
hash), and the tokenizer a GGUF file carries. torch / transformers / gguf are imported inside the functions."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factory_cli.cache import cache_root, content_hash
from factory_cli.config.errors import UsageError
from factory_cli.modeling.sources import ModelSource

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Files up to this size are hashed whole; bigger ones by size plus evenly spaced samples (a 4 GB GGUF
# must not cost seconds on every run just to find its cached conversion).
FULL_HASH_LIMIT = 256 * 2**20
SOURCE_FILE = "factory-source.json"  # provenance of a converted GGUF (export/merge.py reads it)


def _gguf_metadata(path: Path) -> dict[str, Any]:
    """The scalar metadata of a GGUF file (token lists left as counts)."""
    try:
        from transformers.integrations.gguf import read_gguf_metadata
    except ImportError:  # older transformers: the gguf package's reader (slower, same answer)
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        return {name: field.contents() for name, field in reader.fields.items() if len(field.data) == 1}
    metadata, _ = read_gguf_metadata(str(path))
    return dict(metadata)


def _gguf_save_dtype(metadata: dict[str, Any]) -> str:
    """fp16 / bf16 when the file is stored in that float type, else fp32 (dequantized blocks)."""
    from gguf import LlamaFileType

    file_type = metadata.get("general.file_type")
    if file_type == LlamaFileType.MOSTLY_F16:
        return "fp16"
    if file_type == LlamaFileType.MOSTLY_BF16:
        return "bf16"
    return "fp32"


@contextlib.contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """Share one parsed GGUF (and tensor-name map) across the config, weights and tokenizer loads.

    transformers re-parses the whole file (every vocabulary entry, ~6 s for a 49k vocab) for each of
    them; one conversion would parse it four times. The patch lives only for this block.
    """
    try:
        import gguf
    except ImportError:
        yield
        return
    original_reader = getattr(gguf, "GGUFReader", None)
    original_map = getattr(gguf, "get_tensor_name_map", None)
    if getattr(original_reader, "factory_shared", False):  # nested: the outer block already shares
        yield
        return
    readers: dict[tuple[str, str], Any] = {}

    def shared_reader(path: Any, mode: str = "r") -> Any:
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = original_reader(path, mode)  # type: ignore[misc]
        return readers[key]

    shared_reader.factory_shared = True  # type: ignore[attr-defined]
    try:
        if original_reader is not None:
            gguf.GGUFReader = shared_reader  # type: ignore[assignment,misc]
        if original_map is not None:
            gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
        yield
    finally:
        if original_reader is not None:
            gguf.GGUFReader = original_reader  # type: ignore[misc]
        if original_map is not None:
            gguf.get_tensor_name_map = original_map
        readers.clear()


def _repair_special_tokens(tokenizer: PreTrainedTokenizerBase, metadata: dict[str, Any]) -> None:
    """Set bos/eos/unk/pad from the GGUF's own token ids.

    transformers' GGUF Llama tokenizer converter takes eos from the *bos* id (SmolLM2: eos became
    `<|im_start|>` instead of `<|im_end|>`, so generation never stops) and ignores the padding id.
    """
    wanted = {
        "bos_token": metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token": metadata.get("tokenizer.ggml.eos_token_id"),
        "unk_token": metadata.get("tokenizer.ggml.unknown_token_id"),
        "pad_token": metadata.get("tokenizer.ggml.padding_token_id"),
    }
    for attribute, token_id in wanted.items():
        if isinstance(token_id, int) and 0 <= token_id < len(tokenizer):
            token = tokenizer.convert_ids_to_tokens(token_id)
            if isinstance(token, str) and getattr(tokenizer, attribute) != token:
                setattr(tokenizer, attribute, token)
    context = metadata.get(f"{metadata.get('general.architecture')}.context_length")
    if isinstance(context, int) and context > 0:
        tokenizer.model_max_length = context
    # Byte-level BPE: the WordPiece clean-up would strip spaces before punctuation (transformers warns on load).
    tokenizer.clean_up_tokenization_spaces = False


def load_gguf_tokenizer(gguf_path: str | Path) -> PreTrainedTokenizerBase:
    """The fast tokenizer (with its chat template) in a GGUF file, special tokens and max length as the file says."""
    from transformers import PreTrainedTokenizerFast

    path = Path(gguf_path).resolve()
    # The concrete class skips AutoTokenizer's extra pass over the file just to pick a class.
    with gguf_parsed_once():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path.parent), gguf_file=path.name)
    _repair_special_tokens(tokenizer, _gguf_metadata(path))
    return tokenizer


def _gguf_local_file(source: ModelSource, revision: str | None) -> Path:
    """The .gguf file on disk: given directly, inside a local dir, or downloaded from the Hub."""
    if source.kind == "gguf":
        return Path(source.path)
    assert source.gguf_file is not None
    if source.kind == "local":
        return Path(source.path) / source.gguf_file
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(source.path, source.gguf_file, revision=revision))


@contextlib.contextmanager
def _conversion_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive file lock, so two runs starting together convert once (no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_complete(directory: Path) -> bool:
    """A finished conversion: renamed into place only after everything was written."""
    return (directory / SOURCE_FILE).is_file() and (directory / "config.json").is_file()


def conversion_dir(gguf_file: Path) -> Path:
    """Where `ensure_hf_checkpoint` converts `gguf_file` to: named by the file's stem and (sampled) content hash."""
    return cache_root() / "models" / f"{gguf_file.stem}-{content_hash(gguf_file, FULL_HASH_LIMIT)[:12]}"


def cached_hf_checkpoint(source: ModelSource) -> Path | None:
    """The finished conversion of a GGUF source already on disk (pure: converts and downloads nothing)."""
    if source.kind == "gguf":
        gguf_file = Path(source.path)
    elif source.kind == "local" and source.gguf_file is not None:
        gguf_file = Path(source.path) / source.gguf_file
    else:
        return None
    if not gguf_file.is_file():
        return None
    target = conversion_dir(gguf_file)
    return target if _is_complete(target) else None


def ensure_hf_checkpoint(source: ModelSource, *, trust_remote_code: bool = False, revision: str | None = None) -> str:
    """A path `from_pretrained` loads quickly: GGUF is dequantized once into the cache, anything else passes."""
    if not source.is_gguf:
        return source.path
    gguf_file = _gguf_local_file(source, revision)
    target = conversion_dir(gguf_file)
    if _is_complete(target):
        return str(target)
    with _conversion_lock(target.parent / f".{target.name}.lock"):
        if _is_complete(target):  # another process converted it while we waited
            return str(target)
        _convert_gguf(gguf_file, target, trust_remote_code=trust_remote_code)
    return str(target)


def _convert_gguf(gguf_file: Path, target: Path, *, trust_remote_code: bool) -> None:
    """Dequantize `gguf_file` into a safetensors checkpoint + tokenizer at `target`, atomically."""
    import transformers
    from transformers import AutoModelForCausalLM

    from factory_cli.modeling.load import torch_dtype
    from factory_cli.ui import console

    console.print(f"converting {gguf_file.name} from GGUF (once, cached at {target})", markup=False, soft_wrap=True)
    metadata = _gguf_metadata(gguf_file)
    save_dtype = _gguf_save_dtype(metadata)
    kwargs: dict[str, Any] = {"gguf_file": gguf_file.name, "dtype": torch_dtype(save_dtype)}
    try:
        from transformers import GgufConfig
    except ImportError:  # transformers before GgufConfig always dequantized GGUF weights
        pass
    else:
        # A plain gguf_file load may keep the blocks and a quantizer that refuses save_pretrained.
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        with gguf_parsed_once():
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    str(gguf_file.parent), trust_remote_code=trust_remote_code, **kwargs
                )
            except ValueError as exc:
                if "not supported" in str(exc):
                    raise UsageError(
                        f"{gguf_file.name}: {exc}",
                        hint="use the original (non-GGUF) checkpoint: a Hub id or a local directory",
                    ) from exc
                raise
            tokenizer = load_gguf_tokenizer(gguf_file)
        model.config.use_cache = True
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        provenance = {
            "gguf_file": str(gguf_file),
            "size": gguf_file.stat().st_size,
            "content_hash": target.name.rsplit("-", 1)[-1],
            "architecture": metadata.get("general.architecture"),
            "file_type": metadata.get("general.file_type"),
            "saved_dtype": save_dtype,
            "transformers": transformers.__version__,
        }
        (staging / SOURCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        staging.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        if target.exists() and not _is_complete(target):
            shutil.rmtree(target)  # left by a copy or a hand edit, never by us: rebuild it
        try:
            os.rename(staging, target)
        except OSError:
            if not _is_complete(target):
                raise
            shutil.rmtree(staging, ignore_errors=True)  # lost a race without a lock; theirs is as good
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
