"""Generation of a group of answers per prompt: vLLM where it is installed and a CUDA GPU is at hand, else
transformers `generate` in batches through the one inference path (factory_cli/inference, docs/architecture.md §5).

Each batch is seeded with the run's seed and the batch's number, so a run gives the same answers whether it ran
through or was stopped and continued. torch, transformers and vLLM are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from factory_cli.config.errors import UsageError
from factory_cli.sampling.prompts import Prompt
from factory_cli.sampling.request import SampleRequest


@dataclass(frozen=True)
class Sampling:
    """How each batch is sampled."""

    n: int
    temperature: float
    max_new_tokens: int
    seed: int

    def batch_seed(self, batch: int) -> int:
        return (self.seed * 1_000_003 + batch) % 2**32


class Engine(Protocol):
    name: str

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling, batch: int) -> list[list[str]]:
        """`sampling.n` answers for each prompt, in order."""
        ...

    def close(self) -> None: ...


def choose_engine(request: SampleRequest) -> str:
    """`vllm` or `transformers`: auto takes vLLM when it is installed and the device is a CUDA GPU."""
    import importlib.util

    installed = importlib.util.find_spec("vllm") is not None
    if request.engine == "vllm":
        if not installed:
            raise UsageError(
                "--engine vllm: vLLM is not installed", "pip install vllm (CUDA), or --engine transformers"
            )
        return "vllm"
    if request.engine == "transformers" or not installed:
        return "transformers"
    from factory_cli.devices import detect_device

    return "vllm" if detect_device(request.device).kind == "cuda" else "transformers"


def open_engine(name: str, request: SampleRequest) -> Engine:
    """The engine, with the model loaded."""
    if name == "vllm":
        return VllmEngine(request)
    return TransformersEngine(request)


def _load_error(reference: str, exc: Exception) -> UsageError:
    return UsageError(f"cannot load model `{reference}`: {exc}", "give a run dir, model/adapter dir or registry name")


# Plain temperature sampling over the whole vocabulary, as vLLM's SamplingParams and TRL's GRPO generation sample:
# neither transformers' own default (top_k 50) nor a model's generation_config.json (top_k, top_p, a repetition
# penalty) narrows what the transformers engine samples from.
PLAIN_SAMPLING: dict[str, Any] = {
    "top_k": 0,
    "top_p": 1.0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
}


class TransformersEngine:
    """transformers `generate` on the model loaded by factory_cli/inference/load.py (an adapter merged)."""

    name = "transformers"

    def __init__(self, request: SampleRequest) -> None:
        from factory_cli.evaluation.run import chat_template_for
        from factory_cli.inference.load import load_for_inference

        try:
            self.loaded = load_for_inference(
                request.model, device=request.device, dtype=request.dtype, base_dirs=request.base_dirs
            )
        except RuntimeError as exc:
            if str(exc).startswith("device:"):
                raise UsageError(str(exc), "use --device auto or cpu") from None
            raise
        except OSError as exc:
            raise _load_error(request.model, exc) from None
        self.template = chat_template_for(self.loaded)
        defaults = self.loaded.model.generation_config  # what `generate` falls back on for what it is not given
        for key, value in PLAIN_SAMPLING.items():
            setattr(defaults, key, value)

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling, batch: int) -> list[list[str]]:
        import torch

        from factory_cli.inference.generate import generate
        from factory_cli.inference.render import encode_prompt

        encoded = [encode_prompt(self.loaded.tokenizer, p.messages, self.template) for p in prompts]
        repeated = [ids for ids in encoded for _ in range(sampling.n)]
        torch.manual_seed(sampling.batch_seed(batch))
        completions = generate(
            self.loaded.model,
            self.loaded.tokenizer,
            repeated,
            max_new_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            batch_size=len(repeated),
        )
        return [completions[i : i + sampling.n] for i in range(0, len(completions), sampling.n)]

    def close(self) -> None:
        self.loaded.model = None


class VllmEngine:
    """vLLM's offline `LLM`: the model's weights, an adapter served as a LoRA on its base."""

    name = "vllm"

    def __init__(self, request: SampleRequest) -> None:
        from types import SimpleNamespace

        from vllm import LLM

        from factory_cli.config.schema import ModelSection
        from factory_cli.evaluation.run import chat_template_for
        from factory_cli.inference.load import describe_model_dir
        from factory_cli.modeling.download import fetch_model

        info = describe_model_dir(request.model, request.base_dirs)
        weights = info.base if info.kind == "adapter" else info.path
        assert weights is not None
        path = weights if info.kind in ("full", "quantized") else fetch_model(ModelSection(name_or_path=weights))
        self.lora: Any = None
        if info.kind == "adapter":
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("sampled-adapter", 1, str(Path(info.path).resolve()))
        dtype = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[request.dtype]
        try:
            self.llm = LLM(model=path, dtype=dtype, seed=request.seed, enable_lora=self.lora is not None)
        except OSError as exc:
            raise _load_error(request.model, exc) from None
        tokenizer = self.llm.get_tokenizer()
        self.tokenizer = tokenizer
        self.template = chat_template_for(SimpleNamespace(info=info, tokenizer=tokenizer))

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling, batch: int) -> list[list[str]]:
        from vllm import SamplingParams

        from factory_cli.inference.render import encode_prompt

        inputs = [{"prompt_token_ids": encode_prompt(self.tokenizer, p.messages, self.template)} for p in prompts]
        params = SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.batch_seed(batch),
            skip_special_tokens=True,
        )
        outputs = self.llm.generate(inputs, params, lora_request=self.lora, use_tqdm=False)
        return [[choice.text.strip() for choice in output.outputs] for output in outputs]

    def close(self) -> None:
        self.llm = None
