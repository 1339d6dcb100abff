"""Loading models and tokenizers through transformers / bitsandbytes on CPU; GGUF conversion of SmolLM2 (e2e)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from factory_cli.config.defaults import DeviceFacts, resolve_defaults, resolve_device_defaults
from factory_cli.config.schema import DeepSpeedJob, JobBase, MethodSection, ModelSection
from factory_cli.devices import DeviceInfo
from factory_cli.methods import count_parameters
from factory_cli.modeling.gguf import ensure_hf_checkpoint
from factory_cli.modeling.load import load_model, load_tokenizer, torch_dtype
from factory_cli.modeling.sources import resolve_model_source

CPU = DeviceInfo("cpu", 1, "cpu", bf16=False)
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def linear4bit_count(model: torch.nn.Module) -> int:
    """How many bitsandbytes 4-bit linear layers the model has."""
    import bitsandbytes as bnb

    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def cpu_job(path: Path | str, method: dict[str, object]) -> JobBase:
    """A job for `path` with every device `auto` resolved for a CPU, as `factory train` resolves it."""
    job = DeepSpeedJob.model_validate(
        {"backend": "deepspeed", "stage": "sft", "model": {"name_or_path": str(path)}, "method": method}
        | {"data": {"train": ["demo-sft-alpaca"]}}
    )
    return resolve_device_defaults(resolve_defaults(job), DeviceFacts("cpu"))


def load(path: Path | str, method: str = "full", **quant: object) -> torch.nn.Module:
    """load_model on CPU with the dtype, attention and QLoRA compute dtype of a job resolved for the CPU."""
    job = cpu_job(path, {"type": method, "quant": quant} if quant else {"type": method})
    model = job.model
    return load_model(
        str(path), dtype=model.dtype, attn_implementation=model.attn_implementation, method=job.method, device=CPU
    )


@pytest.mark.integration
def test_load_model_refuses_unresolved_auto(tiny_llama_dir: Path) -> None:
    """auto is the job resolver's (config/defaults.py) to fill, never a second guess at load time."""
    with pytest.raises(ValueError, match="resolved values"):
        load_model(str(tiny_llama_dir), dtype="auto", attn_implementation="sdpa", method=MethodSection(), device=CPU)


@pytest.mark.integration
def test_torch_dtype_names() -> None:
    assert torch_dtype("bf16") is torch.bfloat16
    assert torch_dtype("fp16") is torch.float16
    assert torch_dtype("fp32") is torch.float32
    with pytest.raises(ValueError, match="auto"):
        torch_dtype("auto")


# ---------------------------------------------------------------------------------------------- tokenizer


@pytest.mark.integration
def test_tokenizer_has_chat_template_pad_and_right_padding(tiny_llama_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_llama_dir))
    assert tokenizer.is_fast
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "right"
    text = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    ids = tokenizer("Hello world").input_ids
    assert tokenizer.decode(ids) == "Hello world"


@pytest.mark.integration
def test_tokenizer_without_pad_gets_eos(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(tiny_llama_dir)
    plain.pad_token = None
    plain.padding_side = "left"
    plain.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).pad_token is None
    tokenizer = load_tokenizer(str(tmp_path))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.padding_side == "right"


# ---------------------------------------------------------------------------------------------- models


@pytest.mark.integration
@pytest.mark.parametrize("method", ["full", "freeze", "lora"])
def test_dense_methods_load_fp32_sdpa_without_cache(tiny_llama_dir: Path, method: str) -> None:
    model = load(tiny_llama_dir, method)
    assert model.dtype == torch.float32  # auto on CPU: never 16-bit
    assert model.config._attn_implementation == "sdpa"
    assert model.config.use_cache is False
    assert linear4bit_count(model) == 0
    assert not getattr(model, "is_loaded_in_4bit", False)


@pytest.mark.integration
def test_explicit_dtype_and_attention(tiny_llama_dir: Path) -> None:
    model = load_model(
        str(tiny_llama_dir), dtype="bf16", attn_implementation="eager", method=MethodSection(type="full"), device=CPU
    )
    assert model.dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"


@pytest.mark.integration
def test_qlora_loads_4bit_nf4_on_cpu_and_runs(tiny_llama_dir: Path) -> None:
    full = load(tiny_llama_dir)
    model = load(tiny_llama_dir, "qlora")
    assert getattr(model, "is_loaded_in_4bit", False)
    assert linear4bit_count(model) == 2 * 7  # q k v o gate up down, per layer; lm_head stays dense
    q_proj = model.model.layers[0].self_attn.q_proj
    state = q_proj.weight.quant_state
    assert state.quant_type == "nf4" and state.nested  # double quantization on by default
    assert q_proj.weight.dtype == torch.uint8
    assert q_proj.compute_dtype == torch.float32  # a CPU job's auto compute dtype
    assert count_parameters(model)[1] == count_parameters(full)[1]
    ids = torch.randint(0, 1000, (2, 12))
    loss = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss)
    # Same weights, 4-bit: the loss moves a little, not a lot.
    assert abs(loss.item() - full(input_ids=ids, labels=ids).loss.item()) < 0.5


@pytest.mark.integration
def test_qlora_quant_options_reach_bitsandbytes(tiny_llama_dir: Path) -> None:
    model = load(tiny_llama_dir, "qlora", type="fp4", double_quant=False, storage_dtype="bf16", compute_dtype="bf16")
    q_proj = model.model.layers[0].self_attn.q_proj
    assert q_proj.weight.quant_state.quant_type == "fp4"
    assert not q_proj.weight.quant_state.nested
    assert q_proj.weight.dtype == torch.bfloat16  # packed storage in the compute dtype (ZeRO-3 shardable)
    assert q_proj.compute_dtype == torch.bfloat16
    full = load(tiny_llama_dir)
    assert count_parameters(model)[1] == count_parameters(full)[1]


@pytest.mark.integration
def test_qlora_8bit_on_cpu(tiny_llama_dir: Path) -> None:
    import bitsandbytes as bnb

    model = load(tiny_llama_dir, "qlora", bits=8)
    assert getattr(model, "is_loaded_in_8bit", False)
    assert sum(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules()) == 2 * 7
    ids = torch.randint(0, 1000, (1, 8))
    assert torch.isfinite(model(input_ids=ids, labels=ids).loss)


# ---------------------------------------------------------------------------------------------- SmolLM2 GGUF (e2e)


@pytest.mark.e2e
def test_gguf_converts_once_then_is_cached(
    smollm2_hf_dir: Path, factory_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACTORY_CACHE", str(factory_cache))
    weights = smollm2_hf_dir / "model.safetensors"
    written = weights.stat().st_mtime_ns
    assert smollm2_hf_dir.parent == factory_cache / "models"
    assert smollm2_hf_dir.name.startswith("SmolLM2-135M-Instruct.Q4_1-")
    source = resolve_model_source(ModelSection(name_or_path="smollm2-135m-instruct-gguf"))
    started = time.perf_counter()
    again = ensure_hf_checkpoint(source)
    assert time.perf_counter() - started < 1.0
    assert Path(again) == smollm2_hf_dir
    assert weights.stat().st_mtime_ns == written  # not rewritten
    assert [p.name for p in (factory_cache / "models").iterdir() if not p.name.endswith(".lock")] == [
        smollm2_hf_dir.name
    ]  # no temp dirs left behind


@pytest.mark.e2e
def test_converted_tokenizer_has_the_gguf_special_tokens(smollm2_hf_dir: Path) -> None:
    tokenizer = load_tokenizer(str(smollm2_hf_dir))
    # transformers' GGUF converter sets eos from the bos id; ensure_hf_checkpoint repairs it.
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert (tokenizer.pad_token, tokenizer.unk_token) == ("<|im_end|>", "<|endoftext|>")
    assert tokenizer.model_max_length == 8192
    assert "<|im_start|>" in (tokenizer.chat_template or "")
    assert len(tokenizer) == 49152


@pytest.mark.e2e
def test_converted_model_reloads_saves_and_answers(smollm2_hf_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_hf_dir)
    assert model.dtype == torch.float32  # Q4_1 blocks dequantize to fp32
    assert getattr(model, "hf_quantizer", None) is None
    model.save_pretrained(tmp_path / "copy")  # a GGUF-quantized model would refuse this
    assert (tmp_path / "copy" / "model.safetensors").is_file()
    tokenizer = load_tokenizer(str(smollm2_hf_dir))
    inputs = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
    assert out[0, -1].item() == tokenizer.eos_token_id  # stops at <|im_end|>


@pytest.mark.e2e
def test_qlora_on_smollm2(smollm2_hf_dir: Path) -> None:
    model = load(smollm2_hf_dir, "qlora")
    assert linear4bit_count(model) == 30 * 7
    _, total = count_parameters(model)
    assert 134_000_000 < total < 135_000_000  # 134.5M, the 4-bit weights counted as the weights they hold
    tokenizer = load_tokenizer(str(smollm2_hf_dir))
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    loss = model(input_ids=ids["input_ids"], labels=ids["input_ids"]).loss
    assert torch.isfinite(loss) and loss.item() < 6.0  # a trained model, not noise (ln 49152 = 10.8)
