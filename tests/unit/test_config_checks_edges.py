"""config/checks.py issue by issue: each check's full message, hint, YAML path and severity for the jobs that trip
it (and the near misses that do not), the batch and parallel arithmetic with several processes, the data scan's
counts and warnings, the output folder and the reporters."""

from __future__ import annotations

from typing import Any

import pytest

from factory_cli.config import checks
from factory_cli.config.checks import CheckContext
from tests.unit.test_validate import make_job

Expected = list[tuple[str, str, str | None, str]]  # (path, message, hint, severity)

# (case, check, make_job arguments, the issues it yields)
ISSUES: list[tuple[str, str, dict[str, Any], Expected]] = [
    (
        "device npu flash3",
        "check_device",
        {"device": "npu", "model": {"attn_implementation": "flash_attention_3"}},
        [
            (
                "model.attn_implementation",
                "flash_attention_3 is CUDA-only (Ascend runs flash_attention_2)",
                "on npu use sdpa or eager (or auto)",
                "error",
            )
        ],
    ),
    ("device npu flash2", "check_device", {"device": "npu", "model": {"attn_implementation": "flash_attention_2"}}, []),
    (
        "device cpu flash2",
        "check_device",
        {"device": "cpu", "model": {"attn_implementation": "flash_attention_2"}},
        [
            (
                "model.attn_implementation",
                "flash_attention_2 is CUDA-only",
                "on cpu use sdpa or eager (or auto)",
                "error",
            )
        ],
    ),
    (
        "device cpu flex",
        "check_device",
        {"device": "cpu", "model": {"attn_implementation": "flex_attention"}},
        [
            (
                "model.attn_implementation",
                "flex_attention trains on CUDA only (torch's FlexAttention has no backward on cpu)",
                "on cpu use sdpa (or auto): packed rows then run sdpa once per example",
                "error",
            )
        ],
    ),
    (
        "device npu flex",
        "check_device",
        {"device": "npu", "model": {"attn_implementation": "flex_attention"}},
        [
            (
                "model.attn_implementation",
                "flex_attention trains on CUDA only (torch's FlexAttention has no backward on npu)",
                "on npu use sdpa (or auto): packed rows then run sdpa once per example",
                "error",
            )
        ],
    ),
    (
        "cpu fp16",
        "check_device",
        {"device": "cpu", "train": {"precision": "fp16"}},
        [("train.precision", "fp16 mixed precision does not run on CPU", "use fp32 (or bf16) on CPU", "error")],
    ),
    (
        "cpu bf16",
        "check_device",
        {"device": "cpu", "train": {"precision": "bf16"}},
        [("train.precision", "bf16 on CPU is emulated on many CPUs and can be slower than fp32", None, "warning")],
    ),
    (
        "npu fused",
        "check_device",
        {"device": "npu", "train": {"fused_kernels": True}},
        [("train.fused_kernels", "Liger fused kernels are CUDA-only", "set train.fused_kernels: auto", "error")],
    ),
    (
        "cpu fused",
        "check_device",
        {"device": "cpu", "train": {"fused_kernels": True}},
        [("train.fused_kernels", "Liger fused kernels are CUDA-only", "set train.fused_kernels: auto", "error")],
    ),
    ("cuda flex", "check_device", {"device": "cuda", "model": {"attn_implementation": "flex_attention"}}, []),
    (
        "megatron cpu",
        "check_device",
        {"backend": "megatron", "device": "cpu"},
        [("device", "the megatron backend needs GPUs or NPUs", "use backend: deepspeed on CPU", "error")],
    ),
    (
        "verl cpu grpo",
        "check_device",
        {"backend": "verl", "stage": "grpo", "device": "cpu"},
        [
            (
                "device",
                "verl's GRPO needs GPUs or NPUs: its rollouts are vLLM / SGLang servers (verl's SFT runs on the CPU)",
                "set device: cuda (or npu), or use backend: deepspeed for GRPO on the CPU",
                "error",
            )
        ],
    ),
    ("verl cpu sft", "check_device", {"backend": "verl", "stage": "sft", "device": "cpu"}, []),
    (
        "compile dpo",
        "check_compile",
        {"stage": "dpo", "train": {"compile": True}},
        [
            (
                "train.compile",
                "train.compile is for pt and sft on the deepspeed backend, not dpo on deepspeed",
                "remove train.compile (set it to false)",
                "error",
            )
        ],
    ),
    (
        "compile verl sft",
        "check_compile",
        {"backend": "verl", "train": {"compile": True}},
        [
            (
                "train.compile",
                "train.compile is for pt and sft on the deepspeed backend, not sft on verl",
                "remove train.compile (set it to false)",
                "error",
            )
        ],
    ),
    ("compile ok", "check_compile", {"stage": "pt", "train": {"compile": True}}, []),
    (
        "qlora megatron",
        "check_method",
        {"backend": "megatron", "method": {"type": "qlora"}},
        [("method.type", "qlora runs on the deepspeed backend only", "use method.type: lora here", "error")],
    ),
    (
        "freeze verl",
        "check_method",
        {"backend": "verl", "method": {"type": "freeze"}},
        [("method.type", "freeze runs on the deepspeed backend only", "use full or lora", "error")],
    ),
    (
        "qlora zero3 uint8",
        "check_method",
        {
            "device": "cuda",
            "method": {"type": "qlora", "quant": {"storage_dtype": "uint8"}},
            "parallel": {"zero_stage": 3},
        },
        [
            (
                "method.quant.storage_dtype",
                "QLoRA with ZeRO-3 needs the 4-bit weights stored in the compute dtype to shard them",
                "set method.quant.storage_dtype: bf16 (your compute dtype), or use parallel.zero_stage: 2",
                "error",
            )
        ],
    ),
    (
        "qlora npu",
        "check_method",
        {"device": "npu", "method": {"type": "qlora"}},
        [("method.type", "bitsandbytes QLoRA does not run on Ascend NPU", "use method.type: lora on NPU", "error")],
    ),
    (
        "lora rank 257",
        "check_method",
        {"method": {"type": "lora", "lora": {"rank": 257}}},
        [("method.lora.rank", "rank 257 is unusually high (8-64 is usual)", "try 16 or 32", "warning")],
    ),
    ("lora rank 256", "check_method", {"method": {"type": "lora", "lora": {"rank": 256}}}, []),
    ("full rank 512", "check_method", {"method": {"type": "full", "lora": {"rank": 512}}}, []),
    (
        "template unknown",
        "check_template",
        {"model": {"template": "chatlm"}},
        [("model.template", "unknown chat template `chatlm`", "did you mean `chatml`?", "error")],
    ),
    (
        "template far",
        "check_template",
        {"model": {"template": "zzzz"}},
        [
            (
                "model.template",
                "unknown chat template `zzzz`",
                "choose one of: auto, chatml, qwen3, llama3, mistral, glm4, deepseek_r1",
                "error",
            )
        ],
    ),
    (
        "template file",
        "check_template",
        {"model": {"template": "missing.jinja"}},
        [("model.template", "template file not found: missing.jinja", "give a path to a .jinja file", "error")],
    ),
    (
        "template j2",
        "check_template",
        {"model": {"template": "missing.j2"}},
        [("model.template", "template file not found: missing.j2", "give a path to a .jinja file", "error")],
    ),
    (
        "streaming megatron",
        "check_streaming",
        {"backend": "megatron", "stage": "pt", "data": {"streaming": True}, "train": {"max_steps": 5}},
        [
            (
                "data.streaming",
                "the megatron backend does not stream data (Megatron reads an indexed dataset)",
                "set data.streaming: false: the data is then prepared on disk in bounded memory and cached",
                "error",
            )
        ],
    ),
    (
        "streaming verl",
        "check_streaming",
        {"backend": "verl", "stage": "sft", "data": {"streaming": True}, "train": {"max_steps": 5}},
        [
            (
                "data.streaming",
                "the verl backend does not stream data (verl reads parquet files)",
                "set data.streaming: false: the data is then prepared on disk in bounded memory and cached",
                "error",
            )
        ],
    ),
    (
        "streaming sft",
        "check_streaming",
        {"stage": "sft", "data": {"streaming": True}},
        [
            (
                "data.streaming",
                "streaming is for pt corpora, not stage sft",
                "set data.streaming: false: the data is then prepared on disk in bounded memory and cached",
                "error",
            ),
            (
                "data.streaming",
                "a stream has no length to count epochs by: streaming needs train.max_steps",
                "set train.max_steps (optimizer steps to train), or data.streaming: false",
                "error",
            ),
        ],
    ),
    (
        "streaming eval",
        "check_streaming",
        {"stage": "pt", "data": {"streaming": True, "eval": ["demo-pt"]}, "train": {"max_steps": 3}},
        [
            (
                "data.eval",
                "a stream holds out no eval set",
                "remove data.eval, or set data.streaming: false: the data is then prepared on disk in bounded memory "
                "and cached",
                "error",
            )
        ],
    ),
    (
        "streaming eval ratio",
        "check_streaming",
        {"stage": "pt", "data": {"streaming": True, "eval_ratio": 0.1}, "train": {"max_steps": 3}},
        [
            (
                "data.eval_ratio",
                "a stream holds out no eval set",
                "remove data.eval_ratio, or set data.streaming: false: the data is then prepared on disk in bounded "
                "memory and cached",
                "error",
            )
        ],
    ),
    (
        "batch mismatch",
        "check_batch",
        {"train": {"global_batch_size": 10, "micro_batch_size": 2, "gradient_accumulation_steps": 4}},
        [
            (
                "train.global_batch_size",
                "10 != micro 2 x data-parallel 1 x accumulation 4 = 8",
                "set train.global_batch_size=8 or train.gradient_accumulation_steps=5, or give only one of the two "
                "(a run's resolved job.yaml holds both: change one with the process count)",
                "error",
            )
        ],
    ),
    (
        "batch mismatch indivisible",
        "check_batch",
        {"train": {"global_batch_size": 9, "micro_batch_size": 2, "gradient_accumulation_steps": 4}},
        [
            (
                "train.global_batch_size",
                "9 != micro 2 x data-parallel 1 x accumulation 4 = 8",
                "set train.global_batch_size=8, or give only one of the two (a run's resolved job.yaml holds both: "
                "change one with the process count)",
                "error",
            )
        ],
    ),
    (
        "batch not multiple",
        "check_batch",
        {"train": {"global_batch_size": 9, "micro_batch_size": 2}},
        [("train.global_batch_size", "9 is not a multiple of micro 2 x data-parallel 1 = 2", "use 8 or 10", "error")],
    ),
    (
        "batch smaller",
        "check_batch",
        {"train": {"global_batch_size": 1, "micro_batch_size": 2}},
        [("train.global_batch_size", "1 is not a multiple of micro 2 x data-parallel 1 = 2", "use 2 or 4", "error")],
    ),
    (
        "ranges",
        "check_ranges",
        {"train": {"learning_rate": 1.0, "warmup_ratio": 0.5, "max_grad_norm": 0}},
        [
            (
                "train.learning_rate",
                "1 is far outside the usual range for LoRA sft (0.0001-0.0002)",
                "0.0001-0.0002 is usual",
                "warning",
            ),
            ("train.warmup_ratio", "0.5 of the run is warm-up", "0.01-0.1 is usual", "warning"),
            ("train.max_grad_norm", "gradient clipping is off", "1.0 is usual", "warning"),
        ],
    ),
    (
        "ranges dpo",
        "check_ranges",
        {"stage": "dpo", "dpo": {"beta": 2.0}},
        [("dpo.beta", "beta 2.0 is far from the usual 0.1", "0.05-0.5 is usual", "warning")],
    ),
    (
        "ranges dpo low",
        "check_ranges",
        {"stage": "dpo", "dpo": {"beta": 0.001}},
        [("dpo.beta", "beta 0.001 is far from the usual 0.1", "0.05-0.5 is usual", "warning")],
    ),
    (
        "ranges grpo",
        "check_ranges",
        {"stage": "grpo", "grpo": {"rewards": ["math_answer"], "num_generations": 2, "epsilon": 0.5, "beta": 0.5}},
        [
            ("grpo.num_generations", "group of 2", "4-8 is usual (8 default)", "warning"),
            ("grpo.epsilon", "clip 0.5 is wide", "0.2 is usual", "warning"),
            ("grpo.beta", "KL weight 0.5 is large", "0-0.04 is usual", "warning"),
        ],
    ),
    (
        "ranges grpo 65",
        "check_ranges",
        {"stage": "grpo", "grpo": {"rewards": ["math_answer"], "num_generations": 65}},
        [("grpo.num_generations", "group of 65", "4-8 is usual (8 default)", "warning")],
    ),
    (
        "ranges full",
        "check_ranges",
        {"method": {"type": "full"}, "train": {"learning_rate": 1e-09}},
        [
            (
                "train.learning_rate",
                "1e-09 is far outside the usual range for full sft (1e-05-2e-05)",
                "1e-05-2e-05 is usual",
                "warning",
            )
        ],
    ),
    (
        "grpo eps",
        "check_grpo",
        {"stage": "grpo", "grpo": {"rewards": ["math_answer"], "epsilon": 0.3, "epsilon_high": 0.2}},
        [("grpo.epsilon_high", "clip-high must be >= epsilon", "dapo uses 0.3 / 0.28", "error")],
    ),
    (
        "grpo vllm",
        "check_grpo",
        {"stage": "grpo", "grpo": {"rewards": ["math_answer"], "use_vllm": True}},
        [("grpo.use_vllm", "vLLM needs a GPU", "set grpo.use_vllm: false on CPU", "error")],
    ),
    (
        "grpo dyn",
        "check_grpo",
        {"stage": "grpo", "grpo": {"rewards": ["math_answer"], "dynamic_sampling": True}},
        [
            (
                "grpo.dynamic_sampling",
                "the deepspeed backend (TRL) does not resample all-equal groups; their advantage is 0, so they add "
                "no policy gradient",
                "use backend: verl for DAPO dynamic sampling",
                "warning",
            )
        ],
    ),
    (
        "grpo groups",
        "check_grpo",
        {
            "stage": "grpo",
            "grpo": {"rewards": ["math_answer"], "num_generations": 3},
            "train": {"micro_batch_size": 2, "gradient_accumulation_steps": 2},
        },
        [
            (
                "grpo.num_generations",
                "the 4 completions of one step (micro x processes x accumulation) are not a whole number of groups "
                "of 3",
                "make the global batch a multiple of 3, e.g. train.gradient_accumulation_steps: 3",
                "error",
            )
        ],
    ),
    (
        "grpo long",
        "check_grpo",
        {
            "stage": "grpo",
            "grpo": {"rewards": ["math_answer"], "max_prompt_length": 8000, "max_completion_length": 8000},
        },
        [("grpo.max_completion_length", "prompt + completion 16000 exceeds the model context", None, "warning")],
    ),
]


@pytest.mark.parametrize(("check", "job", "expected"), [c[1:] for c in ISSUES], ids=[c[0] for c in ISSUES])
def test_each_issue_in_full(check: str, job: dict[str, Any], expected: Expected) -> None:
    found = list(getattr(checks, check)(make_job(**job), CheckContext()))
    assert [(i.path, i.message, i.hint, i.severity) for i in found] == expected
