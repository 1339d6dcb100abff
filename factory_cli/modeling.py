"""Where a model comes from (registry, local dir, Hub, GGUF file) and loading it with its tokenizer.

The top of this module is pure (no torch, no transformers): `factory check` resolves sources with it.
Everything that needs the engines imports them inside the function.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from factory_cli.config.errors import UsageError
from factory_cli.devices import DeviceInfo

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from factory_cli.config.schema import MethodSection, ModelSection, QuantConfig

SourceKind = Literal["registry", "local", "hub", "gguf"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# Files up to this size are hashed whole; bigger ones by size plus evenly spaced samples (a 4 GB GGUF
# must not cost seconds on every run just to find its cached conversion).
_FULL_HASH_LIMIT = 256 * 2**20
_HASH_SAMPLES = 64
_HASH_CHUNK = 2**20
_SOURCE_FILE = "factory-source.json"


@dataclass(frozen=True)
class ModelSource:
    """A resolved `model.name_or_path`: what kind of source it is and where its files are."""

    kind: SourceKind
    path: str  # hub id, local dir, or (kind gguf) the .gguf file path
    gguf_file: str | None = None  # a .gguf file inside a Hub repo or local dir
    registry_name: str | None = None
    lora_targets: tuple[str, ...] | None = None  # the registry's default LoRA targets, if known

    @property
    def is_gguf(self) -> bool:
        """True when the weights come from a GGUF file and need converting once."""
        return self.kind == "gguf" or self.gguf_file is not None


# ---------------------------------------------------------------------------------------------- sources


def _candidates(raw: str, base_dirs: Sequence[Path]) -> list[Path]:
    """Where a relative path may live: the working directory, then each base dir."""
    path = Path(raw).expanduser()
    if path.is_absolute():
        return [path]
    return [Path.cwd() / path, *(Path(base) / path for base in base_dirs)]


def _find_local(raw: str, base_dirs: Sequence[Path]) -> Path | None:
    """The first existing file or directory `raw` names, resolved; None when there is none."""
    for candidate in _candidates(raw, base_dirs):
        if candidate.exists():
            return candidate.resolve()
    return None


def _looks_like_path(raw: str) -> bool:
    """Spelled as a filesystem path rather than a Hub id or registry name."""
    return raw.startswith(("/", "./", "../", "~")) or "\\" in raw or raw.lower().endswith(".gguf")


def _registry_hint(raw: str) -> str:
    """`did you mean ...?` from the registry names, else a pointer to the list."""
    from factory_cli.registry.models import load_model_registry

    names = sorted(load_model_registry())
    close = difflib.get_close_matches(raw.lower(), [n.lower() for n in names], n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(f"`{n}`" for n in close) + "? (factory list models)"
    return "use a registry name (factory list models), an existing directory, a .gguf file, or a Hub id owner/name"


def _gguf_in_dir(directory: Path, gguf_file: str) -> Path:
    """`directory/gguf_file`, or a UsageError listing the .gguf files that are there."""
    path = directory / gguf_file
    if path.is_file():
        return path
    present = sorted(p.name for p in directory.glob("*.gguf"))
    listing = ", ".join(present) if present else "none"
    raise UsageError(
        f"model.gguf_file `{gguf_file}` is not in {directory}",
        hint=f".gguf files there: {listing}",
    )


def resolve_model_source(model: ModelSection, base_dirs: Sequence[Path] = ()) -> ModelSource:
    """Resolve `model.name_or_path` (+ `gguf_file`): local path, registry entry, or Hub id. Pure, no torch."""
    from factory_cli.registry.models import find_model, gguf_path

    raw = model.name_or_path.strip()
    local = _find_local(raw, base_dirs)
    spec = find_model(raw)
    if model.gguf_file:
        if local is not None and local.is_dir():
            _gguf_in_dir(local, model.gguf_file)
            return ModelSource("local", str(local), gguf_file=model.gguf_file)
        if spec is not None and spec.gguf is None:
            targets = tuple(spec.lora_targets)
            return ModelSource("registry", spec.hf_id, model.gguf_file, spec.name, targets)
        if _HUB_ID.match(raw) and local is None:
            return ModelSource("hub", raw, gguf_file=model.gguf_file)
        raise UsageError(
            f"model.gguf_file needs model.name_or_path to be a directory or a Hub id, not `{raw}`",
            hint="or give the .gguf file itself as model.name_or_path and drop gguf_file",
        )
    if local is not None:
        if local.is_dir():
            ggufs = sorted(p.name for p in local.glob("*.gguf"))
            if ggufs and not (local / "config.json").is_file():
                raise UsageError(
                    f"model.name_or_path `{raw}` holds GGUF files but no config.json",
                    hint=f"set model.gguf_file to one of: {', '.join(ggufs)}",
                )
            return ModelSource("local", str(local))
        if local.suffix.lower() == ".gguf":
            return ModelSource("gguf", str(local))
        raise UsageError(
            f"model.name_or_path `{raw}` is a file but not a .gguf file ({local})",
            hint="give the checkpoint directory (with config.json), a .gguf file, a registry name or a Hub id",
        )
    if spec is not None:
        targets = tuple(spec.lora_targets)
        if spec.gguf is not None:
            return ModelSource("gguf", str(gguf_path(spec)), registry_name=spec.name, lora_targets=targets)
        return ModelSource("registry", spec.hf_id, registry_name=spec.name, lora_targets=targets)
    where = ", ".join(str(c.parent) for c in _candidates(raw, base_dirs))
    if _looks_like_path(raw):
        raise UsageError(f"model.name_or_path `{raw}` does not exist (looked in {where})", hint=_registry_hint(raw))
    if _HUB_ID.match(raw):
        first = raw.split("/", 1)[0]
        if _find_local(first, base_dirs) is not None:
            # `models/my-run` with `models/` present is a missing local checkpoint, not a Hub repo.
            raise UsageError(
                f"model.name_or_path `{raw}` does not exist, though `{first}/` does (looked in {where})",
                hint="check the directory name; a Hub id would be owner/name with no such local folder",
            )
        return ModelSource("hub", raw)
    raise UsageError(
        f"model.name_or_path `{raw}` is not a registry model, a local path or a Hub id", hint=_registry_hint(raw)
    )


# ---------------------------------------------------------------------------------------------- GGUF


def cache_root() -> Path:
    """Where factory caches converted models and data: $FACTORY_CACHE, else ~/.cache/factory."""
    env = os.environ.get("FACTORY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "factory"


def content_hash(path: Path) -> str:
    """A short content hash: the whole file when small, else its size plus evenly spaced samples."""
    size = path.stat().st_size
    digest = hashlib.sha256(f"{size}:".encode())
    with path.open("rb") as handle:
        if size <= _FULL_HASH_LIMIT:
            for chunk in iter(functools.partial(handle.read, 8 * _HASH_CHUNK), b""):
                digest.update(chunk)
        else:
            step = (size - _HASH_CHUNK) // (_HASH_SAMPLES - 1)
            for index in range(_HASH_SAMPLES):
                handle.seek(index * step)
                digest.update(handle.read(_HASH_CHUNK))
    return digest.hexdigest()[:12]


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
def _gguf_parsed_once() -> Iterator[None]:
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
    with _gguf_parsed_once():
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
    return (directory / _SOURCE_FILE).is_file() and (directory / "config.json").is_file()


def _conversion_dir(gguf_file: Path) -> Path:
    """Where `ensure_hf_checkpoint` converts `gguf_file` to."""
    return cache_root() / "models" / f"{gguf_file.stem}-{content_hash(gguf_file)}"


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
    target = _conversion_dir(gguf_file)
    return target if _is_complete(target) else None


def ensure_hf_checkpoint(source: ModelSource, *, trust_remote_code: bool = False, revision: str | None = None) -> str:
    """A path `from_pretrained` loads quickly: GGUF is dequantized once into the cache, anything else passes."""
    if not source.is_gguf:
        return source.path
    gguf_file = _gguf_local_file(source, revision)
    target = _conversion_dir(gguf_file)
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
        with _gguf_parsed_once():
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
        (staging / _SOURCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
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


# ---------------------------------------------------------------------------------------------- loading


def torch_dtype(name: str) -> torch.dtype:
    """`bf16` / `fp16` / `fp32` as a torch dtype."""
    import torch

    if name not in _DTYPES:
        raise ValueError(f"unknown dtype `{name}`; expected one of {sorted(_DTYPES)}")
    dtype: torch.dtype = getattr(torch, _DTYPES[name])
    return dtype


def resolve_dtype(requested: str, device: DeviceInfo) -> str:
    """`auto` -> bf16 where the device supports it, else fp32 (never fp16 by itself); else as given."""
    if requested != "auto":
        return requested
    return "bf16" if device.bf16 else "fp32"


def resolve_attn(requested: str, device: DeviceInfo, dtype: str = "auto") -> str:
    """`auto` -> flash_attention_2 on CUDA with flash-attn installed and 16-bit weights, else sdpa.

    Ascend: transformers runs sdpa on torch_npu (and routes it to the NPU fused attention), so sdpa.
    """
    if requested != "auto":
        return requested
    if device.kind == "cuda" and resolve_dtype(dtype, device) in ("bf16", "fp16"):
        from factory_cli.devices import cuda_only_features_available

        if cuda_only_features_available()["flash_attn"]:
            return "flash_attention_2"
    return "sdpa"


def load_tokenizer(
    path: str, *, trust_remote_code: bool = False, revision: str | None = None
) -> PreTrainedTokenizerBase:
    """The fast tokenizer at `path`, with a pad token (eos, else unk) and right padding for training."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise UsageError(
                f"the tokenizer at {path} has no pad, eos or unk token to pad with",
                hint="set a pad_token in its tokenizer_config.json",
            )
        tokenizer.pad_token = fallback
    tokenizer.padding_side = "right"
    return tokenizer


def _compute_dtype(quant: QuantConfig, device: DeviceInfo) -> str:
    """QLoRA compute dtype: as configured, else bf16 (fp16 on old GPUs) on accelerators, fp32 on CPU."""
    if quant.compute_dtype != "auto":
        return quant.compute_dtype
    if not device.is_accelerator:
        return "fp32"
    return "bf16" if device.bf16 else "fp16"


def bnb_config(quant: QuantConfig, device: DeviceInfo) -> Any:
    """The BitsAndBytesConfig for QLoRA's base weights."""
    import torch
    from transformers import BitsAndBytesConfig

    storage = torch.uint8 if quant.storage_dtype == "uint8" else torch_dtype(quant.storage_dtype)
    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(_compute_dtype(quant, device)),
        bnb_4bit_quant_storage=storage,
    )


def _quantized_device_map(device: DeviceInfo) -> dict[str, Any]:
    """Where a bitsandbytes model is placed: this process's device (quantized weights cannot move later)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.kind == "cuda":
        return {"": local_rank}
    if device.kind == "npu":
        return {"": f"npu:{local_rank}"}
    return {"": "cpu"}


def load_model(
    path: str,
    *,
    dtype: str,
    attn_implementation: str,
    method: MethodSection,
    device: DeviceInfo,
    trust_remote_code: bool = False,
    revision: str | None = None,
    device_map: Any = None,
) -> PreTrainedModel:
    """AutoModelForCausalLM for training: resolved dtype and attention, 4/8-bit base weights for qlora."""
    from transformers import AutoModelForCausalLM

    resolved_dtype = resolve_dtype(dtype, device)
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype(resolved_dtype),
        "attn_implementation": resolve_attn(attn_implementation, device, resolved_dtype),
        "trust_remote_code": trust_remote_code,
        "revision": revision,
    }
    if method.type == "qlora":
        kwargs["quantization_config"] = bnb_config(method.quant, device)
        kwargs["device_map"] = device_map if device_map is not None else _quantized_device_map(device)
    elif device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model.config.use_cache = False  # the KV cache only costs memory during training
    return model
