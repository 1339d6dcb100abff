"""config/checks.py issue by issue: each check's full message, hint, YAML path and severity for the jobs that trip
it (and the near misses that do not), the batch and parallel arithmetic with several processes, the data scan's
counts and warnings, the output folder and the reporters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from factory_cli.config import checks
from factory_cli.config.checks import CheckContext
from factory_cli.config.errors import Issue
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
    ("compile sft ok", "check_compile", {"stage": "sft", "train": {"compile": True}}, []),
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
    ("freeze on deepspeed", "check_method", {"method": {"type": "freeze"}}, []),
    (
        "qlora rank 300",
        "check_method",
        {"device": "cuda", "method": {"type": "qlora", "lora": {"rank": 300}}},
        [("method.lora.rank", "rank 300 is unusually high (8-64 is usual)", "try 16 or 32", "warning")],
    ),
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
        "streaming dpo",
        "check_streaming",
        {"stage": "dpo", "data": {"streaming": True}},
        [
            (
                "data.streaming",
                "streaming is for pt and sft data, not stage dpo: its rows are read whole before training "
                "(preference pairs and prompts are short and few)",
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


# ----------------------------------------------------------------------------------------------------- data


def _jobs_over_files(tmp: Path) -> dict[str, dict[str, Any]]:
    """make_job arguments of jobs whose data are small files written into `tmp`."""

    def jl(name: str, rows: list[dict[str, Any]], raw: str | None = None) -> str:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(raw if raw is not None else "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return str(path)

    good = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)]
    pair = {"instruction": "q", "chosen": "a", "rejected": "b"}
    (tmp / "dd").mkdir()
    (tmp / "dd" / "dataset_info.json").write_text(json.dumps({"gone": {"file_name": "gone.jsonl"}}), encoding="utf-8")
    jl("two/b.jsonl", [pair, pair])
    return {
        "empty": {"data": {"train": [jl("empty.jsonl", [])]}},
        "bad first": {
            "data": {"train": [{"path": jl("bad.jsonl", [{"instruction": "q"}, *good]), "format": "alpaca"}]}
        },
        "bad later": {"data": {"train": [jl("later.jsonl", [*good[:6], {"instruction": "q"}, *good[6:]])]}},
        "bad later x2": {
            "data": {
                "train": [jl("later2.jsonl", [*good[:6], {"instruction": "q"}, {"instruction": "r", "output": " "}])]
            }
        },
        "pairs mixed": {"data": {"train": [jl("mixed.jsonl", [*good[:3], pair, pair])]}},
        "all pairs": {"data": {"train": [jl("pairs.jsonl", [pair] * 3)]}},
        "all pairs declared": {"data": {"train": [{"path": jl("pairs2.jsonl", [pair] * 3), "format": "preference"}]}},
        "micro too big": {"data": {"train": [jl("small.jsonl", good[:3])]}, "train": {"micro_batch_size": 4}},
        "max samples": {
            "data": {"train": [{"path": jl("ten.jsonl", good), "max_samples": 2}]},
            "train": {"micro_batch_size": 4},
        },
        "malformed": {
            "data": {"train": [jl("broken.jsonl", [], raw='{"instruction": "q", "output": "a"}\n{"instr\n')]}
        },
        "packing dpo": {"stage": "dpo", "data": {"train": ["demo-dpo"], "packing": True}},
        "dataset dir missing": {"data": {"train": ["x"], "dataset_dir": str(tmp / "nope")}},
        "missing file": {"data": {"train": [str(tmp / "nope.jsonl")]}},
        "pairs mixed, mapped": {
            "data": {
                "train": [
                    {
                        "path": jl("m.jsonl", [*good[:3], *[{"instruction": "q", "good": "a", "bad": "b"}] * 2]),
                        "columns": {"chosen": "good", "rejected": "bad"},
                    }
                ]
            }
        },
        "pairs ranked for sft": {
            "data": {"train": [{"path": jl("r.jsonl", [*good[:3], pair, pair]), "ranking": True}]}
        },
        "pairs for dpo": {"stage": "dpo", "data": {"train": [jl("d.jsonl", [pair] * 3)]}},
        "one pair mixed": {"data": {"train": [jl("one.jsonl", [*good[:3], pair])]}},
        "bad at row 6": {"data": {"train": [jl("six.jsonl", [*good[:5], {"instruction": "x"}, *good[5:]])]}},
        "unknown keys first": {"data": {"train": [jl("unk.jsonl", [{"a": 1}, *good])]}},
        "chosen only": {"data": {"train": [jl("ch.jsonl", [{**g, "chosen": "c"} for g in good[:3]])]}},
        "pairs in a second file": {"data": {"train": [str(Path(jl("two/a.jsonl", good[:3])).parent)]}},
        "missing then local": {"data": {"train": [str(tmp / "nope.jsonl"), jl("ten2.jsonl", good)]}},
        "hub then local": {"data": {"train": ["someorg/somedata", jl("ten3.jsonl", good)]}},
        "dataset_dir file gone": {"data": {"train": ["gone"], "dataset_dir": str(tmp / "dd")}},
        "micro equal rows": {"data": {"train": [jl("three.jsonl", good[:3])]}, "train": {"micro_batch_size": 3}},
        "micro over one row": {"data": {"train": [jl("onerow.jsonl", good[:1])]}, "train": {"micro_batch_size": 4}},
        "packing grpo": {"stage": "grpo", "data": {"train": ["demo-grpo-math"], "packing": True}},
        "eval rows": {
            "data": {"train": [jl("t.jsonl", good)], "eval": [jl("e1.jsonl", good[:2]), jl("e2.jsonl", good[:3])]}
        },
    }


# (case, (training rows, eval rows) counted, the issues of check_data with the folder written as TMP)
DATA: list[tuple[str, tuple[int | None, int | None], Expected]] = [
    (
        "empty",
        (None, 0),
        [("data.train[0]", "empty.jsonl holds no rows", "an empty dataset trains nothing: add rows", "error")],
    ),
    (
        "bad first",
        (None, 0),
        [
            (
                "data.train[0]",
                "row 1 of bad.jsonl: field `output`: alpaca row has no `output` column (keys: instruction); map the "
                "response column with columns.response",
                "format `alpaca`; stage sft expects alpaca {instruction, input, output}, sharegpt {conversations}, "
                "or {messages} (or map columns with columns: {...})",
                "error",
            )
        ],
    ),
    (
        "bad later",
        (11, 0),
        [
            (
                "data.train[0]",
                "1 of its 11 rows would be dropped at train time (first: row 7 of later.jsonl: field `output`: "
                "alpaca row has no `output` column (keys: instruction); map the response column with "
                "columns.response)",
                "fix or remove them; training counts and skips them",
                "warning",
            )
        ],
    ),
    (
        "bad later x2",
        (8, 0),
        [
            (
                "data.train[0]",
                "2 of its 8 rows would be dropped at train time (first: row 7 of later2.jsonl: field `output`: "
                "alpaca row has no `output` column (keys: instruction); map the response column with "
                "columns.response)",
                "fix or remove them; training counts and skips them",
                "warning",
            )
        ],
    ),
    (
        "pairs mixed",
        (None, 0),
        [
            (
                "data.train[0]",
                "2 of the 5 rows read are preference pairs (chosen/rejected; the first: row 4 of mixed.jsonl) mixed "
                "in with sft rows: stage sft would train on their chosen answers and ignore the rejected ones",
                "remove them (a dpo job trains on pairs); to train sft on the chosen answers of preference data on "
                "purpose, give those rows as a dataset of their own with format: preference",
                "error",
            )
        ],
    ),
    (
        "all pairs",
        (3, 0),
        [
            (
                "data.train[0]",
                "every row is a preference pair (chosen/rejected): stage sft trains on the chosen answers only",
                "set format: preference on this dataset to say that is meant, or use stage: dpo to learn from the "
                "pairs",
                "warning",
            )
        ],
    ),
    (
        "all pairs declared",
        (None, 0),
        [
            (
                "data.train[0]",
                "row 1 of pairs2.jsonl: field `chosen`: `chosen` must be a list of messages, got str",
                "format `preference`; stage sft expects alpaca {instruction, input, output}, sharegpt "
                "{conversations}, or {messages} (or map columns with columns: {...})",
                "error",
            )
        ],
    ),
    (
        "micro too big",
        (3, 0),
        [
            (
                "train.micro_batch_size",
                "micro 4 x data-parallel 1 = 4 samples per forward pass, but the training data has 3 rows: every "
                "step holds all of them",
                "set train.micro_batch_size: 3 or less",
                "warning",
            )
        ],
    ),
    (
        "max samples",
        (2, 0),
        [
            (
                "train.micro_batch_size",
                "micro 4 x data-parallel 1 = 4 samples per forward pass, but the training data has 2 rows: every "
                "step holds all of them",
                "set train.micro_batch_size: 2 or less",
                "warning",
            )
        ],
    ),
    (
        "malformed",
        (None, 0),
        [
            (
                "data.train[0]",
                "broken.jsonl:2: invalid JSON at column 8: Invalid control character at",
                "a .jsonl file holds one JSON object per line",
                "error",
            )
        ],
    ),
    (
        "packing dpo",
        (150, 0),
        [("data.packing", "packing applies to pt and sft, not dpo", "set data.packing: false", "error")],
    ),
    (
        "dataset dir missing",
        (None, None),
        [
            (
                "data.dataset_dir",
                "folder not found: TMP/nope",
                "give the folder that holds your LlamaFactory dataset_info.json",
                "error",
            )
        ],
    ),
    (
        "missing file",
        (0, 0),
        [
            (
                "data.train[0].path",
                "dataset `TMP/nope.jsonl` is not a file, a registry name or a Hub id",
                "see `factory list datasets`, or give a file path",
                "error",
            )
        ],
    ),
    (
        "pairs mixed, mapped",
        (None, 0),
        [
            (
                "data.train[0]",
                "2 of the 5 rows read are preference pairs (chosen/rejected; the first: row 4 of m.jsonl) mixed in "
                "with sft rows: stage sft would train on their chosen answers and ignore the rejected ones",
                "remove them (a dpo job trains on pairs); to train sft on the chosen answers of preference data on "
                "purpose, give those rows as a dataset of their own with format: preference",
                "error",
            )
        ],
    ),
    ("pairs ranked for sft", (5, 0), []),
    ("pairs for dpo", (3, 0), []),
    ("eval rows", (10, 5), []),
    (
        "one pair mixed",
        (None, 0),
        [
            (
                "data.train[0]",
                "1 of the 4 rows read are preference pairs (chosen/rejected; the first: row 4 of one.jsonl) mixed in "
                "with sft rows: stage sft would train on their chosen answers and ignore the rejected ones",
                "remove them (a dpo job trains on pairs); to train sft on the chosen answers of preference data on "
                "purpose, give those rows as a dataset of their own with format: preference",
                "error",
            )
        ],
    ),
    (
        "bad at row 6",
        (11, 0),
        [
            (
                "data.train[0]",
                "1 of its 11 rows would be dropped at train time (first: row 6 of six.jsonl: field `output`: alpaca "
                "row has no `output` column (keys: instruction); map the response column with columns.response)",
                "fix or remove them; training counts and skips them",
                "warning",
            )
        ],
    ),
    (
        "unknown keys first",
        (None, 0),
        [
            (
                "data.train[0]",
                "row 1 of unk.jsonl: cannot tell the format of a row with keys [a]; known formats: alpaca "
                "(instruction/input/output), sharegpt (conversations of from/value), messages (OpenAI role/content), "
                "preference (prompt/chosen/rejected), rl (prompt + answer, verl parquet), text (text). Set `format:` "
                "(and `columns:` to map your column names) for this dataset",
                "format `auto`; stage sft expects alpaca {instruction, input, output}, sharegpt {conversations}, or "
                "{messages} (or map columns with columns: {...})",
                "error",
            )
        ],
    ),
    ("chosen only", (3, 0), []),
    (
        "pairs in a second file",
        (None, 0),
        [
            (
                "data.train[0]",
                "2 of the 5 rows read are preference pairs (chosen/rejected; the first: row 1 of b.jsonl) mixed in "
                "with sft rows: stage sft would train on their chosen answers and ignore the rejected ones",
                "remove them (a dpo job trains on pairs); to train sft on the chosen answers of preference data on "
                "purpose, give those rows as a dataset of their own with format: preference",
                "error",
            )
        ],
    ),
    (
        "missing then local",
        (10, 0),
        [
            (
                "data.train[0].path",
                "dataset `TMP/nope.jsonl` is not a file, a registry name or a Hub id",
                "see `factory list datasets`, or give a file path",
                "error",
            )
        ],
    ),
    ("hub then local", (None, 0), []),
    (
        "dataset_dir file gone",
        (None, 0),
        [
            (
                "data.train[0]",
                "dataset `gone` is TMP/dd/gone.jsonl, which does not exist",
                "fix its file_name in TMP/dd/dataset_info.json, or put the file there",
                "error",
            )
        ],
    ),
    ("micro equal rows", (3, 0), []),
    (
        "micro over one row",
        (1, 0),
        [
            (
                "train.micro_batch_size",
                "micro 4 x data-parallel 1 = 4 samples per forward pass, but the training data has 1 rows: every "
                "step holds all of them",
                "set train.micro_batch_size: 1 or less",
                "warning",
            )
        ],
    ),
    (
        "packing grpo",
        (300, 0),
        [("data.packing", "packing applies to pt and sft, not grpo", "set data.packing: false", "error")],
    ),
]


@pytest.mark.parametrize(("case", "rows", "expected"), DATA, ids=[d[0] for d in DATA])
def test_the_data_scan_counts_and_reports(
    case: str, rows: tuple[int | None, int | None], expected: Expected, tmp_path: Path
) -> None:
    job = make_job(**_jobs_over_files(tmp_path)[case])
    ctx = CheckContext(base_dirs=(tmp_path,))
    scan = checks.data_scan(job, ctx)
    assert (scan.train_rows, scan.eval_rows) == rows
    found = [
        (i.path, i.message.replace(str(tmp_path), "TMP"), i.hint and i.hint.replace(str(tmp_path), "TMP"), i.severity)
        for i in checks.check_data(job, ctx)
    ]
    assert found == expected
    assert checks.data_scan(job, ctx) is scan  # read once per job and context


def _in(tmp: Path, value: Any) -> Any:
    """`value` with TMP in its strings replaced by the folder `tmp`."""
    if isinstance(value, str):
        return value.replace("TMP", str(tmp))
    if isinstance(value, dict):
        return {k: _in(tmp, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_in(tmp, v) for v in value)
    return value


# (case, check, make_job arguments, the issues it yields) where TMP is a folder holding a file `afile`, a template
# `mine.jinja` and an empty folder `ckpt`, and relative paths resolve against it.
WITH_FILES: list[tuple[str, str, dict[str, Any], Expected]] = [
    (
        "output is a file",
        "check_output",
        {"output": {"dir": "TMP/afile"}},
        [
            (
                "output.dir",
                "TMP/afile is a file, not a folder",
                "give a folder you can write to (it is created when missing)",
                "error",
            )
        ],
    ),
    (
        "output under a file",
        "check_output",
        {"output": {"dir": "TMP/afile/run"}},
        [
            (
                "output.dir",
                "TMP/afile/run would be created under TMP/afile, which is a file",
                "give a folder you can write to (it is created when missing)",
                "error",
            )
        ],
    ),
    ("output ok", "check_output", {"output": {"dir": "TMP/new/run"}}, []),
    (
        "resume missing",
        "check_output",
        {"output": {"resume": "TMP/nope"}},
        [("output.resume", "checkpoint not found: TMP/nope", "use auto, never, or an existing checkpoint", "error")],
    ),
    ("resume found", "check_output", {"output": {"resume": "ckpt"}}, []),
    (
        "reporters",
        "check_output",
        {"logging": {"report_to": ["tensorboard", "wandb", "swanlab", "mlflow"]}},
        [
            (
                "logging.report_to[1]",
                "wandb is not installed; metrics still go to metrics.jsonl",
                "pip install wandb",
                "warning",
            ),
            (
                "logging.report_to[2]",
                "swanlab is not installed; metrics still go to metrics.jsonl",
                "pip install swanlab",
                "warning",
            ),
            (
                "logging.report_to[3]",
                "mlflow is not installed; metrics still go to metrics.jsonl",
                "pip install mlflow",
                "warning",
            ),
        ],
    ),
    ("template file ok", "check_template", {"model": {"template": "mine.jinja"}}, []),
    ("template tokenizer", "check_template", {"model": {"template": "tokenizer"}}, []),
    ("template named", "check_template", {"model": {"template": "llama3"}}, []),
    (
        "megatron batch",
        "check_batch",
        {
            "backend": "megatron",
            "parallel": {"nproc_per_node": 8, "tp": 2},
            "train": {"global_batch_size": 6, "micro_batch_size": 1},
        },
        [("train.global_batch_size", "6 is not a multiple of micro 1 x data-parallel 4 = 4", "use 4 or 8", "error")],
    ),
    (
        "megatron batch acc",
        "check_batch",
        {
            "backend": "megatron",
            "parallel": {"nproc_per_node": 8, "tp": 2, "pp": 2},
            "train": {"global_batch_size": 6, "micro_batch_size": 1, "gradient_accumulation_steps": 2},
        },
        [
            (
                "train.global_batch_size",
                "6 != micro 1 x data-parallel 2 x accumulation 2 = 4",
                "set train.global_batch_size=4 or train.gradient_accumulation_steps=3, or give only one of the two "
                "(a run's resolved job.yaml holds both: change one with the process count)",
                "error",
            )
        ],
    ),
    (
        "lora bf16 base megatron",
        "check_lora_base_precision",
        {"backend": "megatron", "method": {"type": "lora", "lora": {"base_precision": "bf16"}}},
        [
            (
                "method.lora.base_precision",
                "bf16 base layers are for method.type: lora on the deepspeed backend",
                "set method.lora.base_precision: auto",
                "error",
            )
        ],
    ),
    (
        "lora bf16 base ok",
        "check_lora_base_precision",
        {"method": {"type": "lora", "lora": {"base_precision": "bf16"}}, "train": {"precision": "fp32"}},
        [],
    ),
    (
        "model missing",
        "check_model",
        {"model": {"name_or_path": "smollm2-135m-instruc"}},
        [
            (
                "model.name_or_path",
                "model `smollm2-135m-instruc` not found",
                "did you mean `smollm2-135m-instruct`?",
                "error",
            )
        ],
    ),
    (
        "model missing far",
        "check_model",
        {"model": {"name_or_path": "zzzz"}},
        [
            (
                "model.name_or_path",
                "model `zzzz` not found",
                "a registry name (factory list models), a local directory, a .gguf file or a Hub id like org/name",
                "error",
            )
        ],
    ),
    (
        "model gguf missing",
        "check_model",
        {"model": {"name_or_path": "TMP/m.gguf"}},
        [
            (
                "model.name_or_path",
                "model `TMP/m.gguf` not found",
                "a registry name (factory list models), a local directory, a .gguf file or a Hub id like org/name",
                "error",
            )
        ],
    ),
    (
        "model dir no config",
        "check_model",
        {"model": {"name_or_path": "TMP/ckpt"}},
        [("model.name_or_path", "TMP/ckpt has no config.json", "give a Hugging Face model directory", "error")],
    ),
    (
        "model long context",
        "check_model",
        {"data": {"max_length": 100000}},
        [
            (
                "data.max_length",
                "100000 is longer than the model's context (8192 positions)",
                "set data.max_length: 8192 or less",
                "warning",
            )
        ],
    ),
    (
        "megatron gguf",
        "check_model",
        {"backend": "megatron", "model": {"name_or_path": "smollm2-135m-instruct-gguf"}},
        [
            (
                "model.name_or_path",
                "the megatron backend cannot start from a GGUF file",
                "use the Hugging Face model (registry name or directory) instead of the GGUF file",
                "error",
            )
        ],
    ),
    (
        "megatron local dir",
        "check_model",
        {"backend": "megatron", "model": {"name_or_path": "TMP/ckpt"}},
        [
            ("model.name_or_path", "TMP/ckpt has no config.json", "give a Hugging Face model directory", "error"),
            (
                "model.name_or_path",
                "the megatron backend needs the model's architecture (layers, heads, hidden size)",
                "use a registry model or a local directory with config.json",
                "error",
            ),
        ],
    ),
    (
        "deepspeed dp batch",
        "check_batch",
        {"device": "cuda", "parallel": {"nproc_per_node": 2}, "train": {"global_batch_size": 6, "micro_batch_size": 2}},
        [("train.global_batch_size", "6 is not a multiple of micro 2 x data-parallel 2 = 4", "use 4 or 8", "error")],
    ),
    (
        "deepspeed dp batch acc",
        "check_batch",
        {
            "device": "cuda",
            "parallel": {"nproc_per_node": 2},
            "train": {"global_batch_size": 8, "micro_batch_size": 2, "gradient_accumulation_steps": 4},
        },
        [
            (
                "train.global_batch_size",
                "8 != micro 2 x data-parallel 2 x accumulation 4 = 16",
                "set train.global_batch_size=16 or train.gradient_accumulation_steps=2, or give only one of the two "
                "(a run's resolved job.yaml holds both: change one with the process count)",
                "error",
            )
        ],
    ),
    (
        "grpo groups dp",
        "check_grpo",
        {
            "stage": "grpo",
            "device": "cuda",
            "parallel": {"nproc_per_node": 2},
            "grpo": {"rewards": ["math_answer"], "num_generations": 8},
            "train": {"micro_batch_size": 2, "gradient_accumulation_steps": 1},
        },
        [
            (
                "grpo.num_generations",
                "the 4 completions of one step (micro x processes x accumulation) are not a whole number of groups "
                "of 8",
                "make the global batch a multiple of 8, e.g. train.gradient_accumulation_steps: 8",
                "error",
            )
        ],
    ),
    (
        "micro too big dp",
        "check_data",
        {
            "device": "cuda",
            "parallel": {"nproc_per_node": 4},
            "data": {"train": ["demo-sft-alpaca"]},
            "train": {"micro_batch_size": 64},
        },
        [
            (
                "train.micro_batch_size",
                "micro 64 x data-parallel 4 = 256 samples per forward pass, but the training data has 200 rows: "
                "every step holds all of them",
                "set train.micro_batch_size: 50 or less",
                "warning",
            )
        ],
    ),
    ("hub id", "check_model", {"model": {"name_or_path": "org/name"}}, []),
    (
        "hub id 3 parts",
        "check_model",
        {"model": {"name_or_path": "a/b/c"}},
        [
            (
                "model.name_or_path",
                "model `a/b/c` not found",
                "a registry name (factory list models), a local directory, a .gguf file or a Hub id like org/name",
                "error",
            )
        ],
    ),
]


@pytest.mark.parametrize(("check", "job", "expected"), [c[1:] for c in WITH_FILES], ids=[c[0] for c in WITH_FILES])
def test_each_issue_about_files_in_full(check: str, job: dict[str, Any], expected: Expected, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    (tmp_path / "mine.jinja").write_text("{{ messages }}", encoding="utf-8")
    (tmp_path / "ckpt").mkdir()
    found = getattr(checks, check)(make_job(**_in(tmp_path, job)), CheckContext(base_dirs=(tmp_path,)))
    assert [(i.path, i.message, i.hint, i.severity) for i in found] == _in(tmp_path, expected)


def test_the_backend_checks_come_only_through_the_context() -> None:
    job = make_job()
    with pytest.raises(ValueError) as missing:
        list(checks.check_backend(job, CheckContext()))
    assert str(missing.value) == (
        "run_checks needs CheckContext.backend_check (validate.py passes backends.check_with_backend)"
    )
    seen: list[Any] = []

    def backend(j: Any, ctx: CheckContext) -> list[Issue]:
        seen.append((j, ctx))
        return [checks.warning("parallel", "from the backend")]

    ctx = CheckContext(backend_check=backend)
    assert list(checks.check_backend(job, ctx)) == [Issue("parallel", "from the backend", severity="warning")]
    assert seen == [(job, ctx)]
    order = checks.run_checks(job, ctx, (lambda j, c: [checks.error("a", "1")], lambda j, c: [checks.error("b", "2")]))
    assert [(i.path, i.message, i.severity) for i in order] == [("a", "1", "error"), ("b", "2", "error")]


@pytest.mark.parametrize(
    ("count", "written"),
    [
        (999, "1 kB"),
        (1_000, "1 kB"),
        (999_499, "999 kB"),
        (1_000_000, "1 MB"),
        (999_000_000, "999 MB"),
        (10**9, "1.0 GB"),
    ],
)
def test_file_sizes_are_written_in_decimal_units(count: int, written: str) -> None:
    assert checks._size(count) == written


def test_the_format_hint_names_what_each_stage_expects() -> None:
    assert [checks._format_hint("auto", stage) for stage in ("pt", "sft", "dpo", "grpo")] == [
        "format `auto`; stage pt expects rows like {text: ...} (or map columns with columns: {...})",
        "format `auto`; stage sft expects alpaca {instruction, input, output}, sharegpt {conversations}, or {messages} "
        "(or map columns with columns: {...})",
        "format `auto`; stage dpo expects {prompt, chosen, rejected}, or alpaca/sharegpt with ranking: true "
        "(or map columns with columns: {...})",
        "format `auto`; stage grpo expects {prompt, answer} (or map columns with columns: {...})",
    ]


def test_a_file_larger_than_check_reads_is_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"instruction": f"question {i}", "output": f"answer {i}"} for i in range(100)]
    (tmp_path / "big.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "big.json").write_text(json.dumps(rows), encoding="utf-8")
    monkeypatch.setattr(checks, "FULL_CHECK_BYTES", 1500)
    found = {}
    for name in ("big.jsonl", "big.json"):
        job = make_job(data={"train": [str(tmp_path / name)]})
        found[name] = [(i.path, i.message, i.hint, i.severity) for i in checks.check_data(job, CheckContext())]
    assert found == {
        "big.jsonl": [
            (
                "data.train[0]",
                "big.jsonl is 5 kB: check read its first 2 kB (100 rows); the rest is read at train time",
                None,
                "warning",
            )
        ],
        "big.json": [
            (
                "data.train[0]",
                "big.json is 5 kB: check read none of it (one JSON document); the rest is read at train time",
                "a .jsonl file is checked by streaming",
                "warning",
            )
        ],
    }


def test_rows_past_those_converted_are_not_counted_as_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(12)]
    rows.insert(8, {"instruction": "x"})
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setattr(checks, "ROWS_CONVERTED", 10)
    job = make_job(data={"train": [str(tmp_path / "d.jsonl")]})
    (issue,) = checks.check_data(job, CheckContext())
    assert issue.message == (
        "1 of the first 10 rows would be dropped at train time (first: row 9 of d.jsonl: field `output`: alpaca row "
        "has no `output` column (keys: instruction); map the response column with columns.response)"
    )
    monkeypatch.setattr(checks, "ROWS_CHECKED", 9)  # row 9 is now one of the first: the mapping is wrong
    (error,) = checks.check_data(make_job(data={"train": [str(tmp_path / "d.jsonl")]}), CheckContext())
    assert error.severity == "error" and error.message.startswith("row 9 of d.jsonl: field `output`: ")


def test_bf16_base_layers_on_a_cpu_without_bf16_instructions_are_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    job = make_job(method={"type": "lora", "lora": {"base_precision": "bf16"}}, train={"precision": "fp32"})
    monkeypatch.setattr(checks, "cpu_has_bf16_matmul", lambda: False)
    assert [(i.path, i.message, i.hint, i.severity) for i in checks.check_lora_base_precision(job, CheckContext())] == [
        (
            "method.lora.base_precision",
            "this CPU has no bf16 matrix instructions (AMX-BF16, AVX512-BF16): bf16 multiplies are emulated and slower",
            "set method.lora.base_precision: auto",
            "warning",
        )
    ]
    monkeypatch.setattr(checks, "cpu_has_bf16_matmul", lambda: True)
    assert list(checks.check_lora_base_precision(job, CheckContext())) == []
    cuda = make_job(
        device="cuda", method={"type": "lora", "lora": {"base_precision": "bf16"}}, train={"precision": "fp32"}
    )
    monkeypatch.setattr(checks, "cpu_has_bf16_matmul", lambda: False)
    assert [(i.message, i.severity) for i in checks.check_lora_base_precision(cuda, CheckContext())] == [
        ("bf16 base layers are a CPU speed-up; on cuda set train.precision: bf16", "error")
    ]  # an obstacle, not the CPU's instructions


def test_a_hub_dataset_that_cannot_be_downloaded_is_named_with_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from factory_cli.modeling import hubs

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    hub = hubs.HUBS["hf"]
    monkeypatch.setattr(type(hub), "unavailable", lambda self: "no network here")
    job = make_job(data={"train": ["demo-sft-alpaca", "someorg/somedata"], "eval": ["other/evalset"]})
    found = [(i.path, i.message, i.hint, i.severity) for i in checks.check_dataset_sources(job, CheckContext())]

    def refused(split: str, index: int, name: str) -> tuple[str, str, str, str]:
        return (
            f"data.{split}[{index}]",
            f"dataset `{name}` is not on this machine and cannot be downloaded: no network here. Looked in the "
            f"Hugging Face cache ({hub.cache_dir()}) and the datasets cache",
            f"give a local file or folder (json, jsonl, csv, parquet); or on a connected machine run `factory download "
            f"{name} --dataset --to DIR`, copy DIR here and name it in data.{split}; "
            "or set HF_ENDPOINT to a mirror you can reach",
            "error",
        )

    assert found == [refused("train", 1, "someorg/somedata"), refused("eval", 0, "other/evalset")]
    monkeypatch.setattr(type(hub), "unavailable", lambda self: None)
    assert list(checks.check_dataset_sources(job, CheckContext())) == []  # reachable: it downloads at train time


def test_a_dpo_reference_that_names_nothing_is_reported_under_its_own_key(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}", encoding="utf-8")
    ctx = CheckContext(base_dirs=(tmp_path,))
    job = make_job(stage="dpo", model={"name_or_path": str(tmp_path / "base")}, dpo={"ref_model": "./missing-ref"})
    (issue,) = checks.check_model_source(job, ctx)
    assert (issue.path, issue.severity) == ("dpo.ref_model", "error")
    assert issue.message.startswith("dpo.ref_model `./missing-ref` does not exist (looked in ")
    assert issue.message.endswith(f"{tmp_path})")
    assert (
        issue.hint
        == "use a registry name (factory list models), an existing directory, a .gguf file, or a Hub id owner/name"
    )
    # the model itself naming nothing is check_model's to report, not this check's
    missing = make_job(stage="dpo", model={"name_or_path": str(tmp_path / "nothere")}, dpo={"ref_model": "base"})
    assert list(checks.check_model_source(missing, ctx)) == []


# ----------------------------------------------------------------------------------------- prompt lengths

LONG = "word " * 80  # 80 tokens of the word model, more than max_length 64


def _long_prompt_job(tmp: Path, prompts: list[str], **sections: Any) -> Any:
    from tests.unit.word_model import word_model

    model = tmp / "model"
    if not model.is_dir():
        word_model(model)
    rows = tmp / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": p, "output": "5"}) + "\n" for p in prompts), encoding="utf-8")
    data = {"train": [str(rows)], "max_length": 64, **sections.pop("data", {})}
    return make_job(model={"name_or_path": str(model)}, data=data, **sections)


def _data_issues(job: Any) -> list[tuple[str, str, str]]:
    return [(i.path, i.message, i.severity) for i in checks.check_data(job, CheckContext())]


def test_prompts_are_measured_only_where_training_drops_long_ones(tmp_path: Path) -> None:
    on_prompt = _long_prompt_job(tmp_path, [LONG] * 3, data={"train_on_prompt": True})
    assert _data_issues(on_prompt) == []
    assert checks.data_scan(on_prompt, CheckContext()).train_rows == 3
    short = _long_prompt_job(tmp_path, ["word"] * 3)
    assert _data_issues(short) == [] and checks.data_scan(short, CheckContext()).train_rows == 3
    every = _long_prompt_job(tmp_path, [LONG] * 3)
    (error,) = checks.check_data(every, CheckContext())
    assert error.hint == "raise data.max_length (now 64), or shorten the prompts"
    assert checks.data_scan(every, CheckContext()).train_rows is None  # nothing to count after that error
    verl = _long_prompt_job(tmp_path, [LONG] * 3, backend="verl", device="cuda")
    assert _data_issues(verl) == []  # verl reads the data itself
    assert _data_issues(_long_prompt_job(tmp_path, [LONG] * 3)) == [
        (
            "data.train[0]",
            "no row would be left to train on: the prompt of each of its 3 rows fills data.max_length: 64 tokens, and "
            "training drops such rows",
            "error",
        )
    ]


def test_prompts_measured_from_the_first_rows_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "ROWS_TOKENIZED", 2)
    assert _data_issues(_long_prompt_job(tmp_path, [LONG, "word", LONG, "word"])) == [
        (
            "data.train[0]",
            "1 of the first 2 rows would be dropped at train time: the prompt alone fills data.max_length: 64 tokens "
            "(first: row 1 of rows.jsonl)",
            "warning",
        )
    ]
    assert checks.data_scan(_long_prompt_job(tmp_path, [LONG, "word", LONG, "word"]), CheckContext()).train_rows == 4
    # every row long, but only the first ones measured: a warning, not the error of an empty dataset
    assert [severity for _, _, severity in _data_issues(_long_prompt_job(tmp_path, [LONG] * 4))] == ["warning"]


def test_a_tokenizer_the_library_cannot_read_leaves_the_rows_counted(tmp_path: Path) -> None:
    broken = tmp_path / "tok"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{not a tokenizer", encoding="utf-8")
    job = _long_prompt_job(tmp_path, [LONG] * 3)
    job = job.model_copy(update={"model": job.model.model_copy(update={"tokenizer": str(broken)})})
    assert _data_issues(job) == [] and checks.data_scan(job, CheckContext()).train_rows == 3


TINY_CONFIG = {
    "model_type": "llama",
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "hidden_size": 64,
    "max_position_embeddings": 128,
    "vocab_size": 100,
    "intermediate_size": 128,
}


def test_a_damaged_local_model_lists_every_problem_and_stops_there(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{not json", encoding="utf-8")
    (model / "model.safetensors").write_bytes(b"12345678xx")
    found = list(
        checks.check_model(make_job(model={"name_or_path": str(model)}, data={"max_length": 10**6}), CheckContext())
    )
    assert [(i.path, i.hint, i.severity) for i in found] == [
        ("model.name_or_path", "copy the checkpoint again from its source (factory download)", "error")
    ] * 2
    assert found[0].message.startswith(f"{model / 'config.json'} is not valid JSON (")
    assert found[1].message == (
        f"{model / 'model.safetensors'} is not a safetensors file "
        "(header length 4050765991979987505 in a file of 10 bytes)"
    )


def test_a_local_model_gives_its_architecture(tmp_path: Path) -> None:
    model = tmp_path / "ok"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
    long = make_job(model={"name_or_path": str(model)}, data={"max_length": 512})
    assert [(i.path, i.message, i.hint, i.severity) for i in checks.check_model(long, CheckContext())] == [
        (
            "data.max_length",
            "512 is longer than the model's context (128 positions)",
            "set data.max_length: 128 or less",
            "warning",
        )
    ]
    megatron = make_job(backend="megatron", model={"name_or_path": str(model)}, data={"max_length": 128})
    assert list(checks.check_model(megatron, CheckContext())) == []
    arch = checks.job_architecture(megatron, CheckContext())
    assert arch is not None and (arch.num_hidden_layers, arch.max_position_embeddings) == (2, 128)
    assert checks.model_source(megatron, CheckContext()) == ("local", None, model)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert checks.model_source(make_job(model={"name_or_path": str(gguf)}), CheckContext()) == ("gguf", None, gguf)
    assert checks.job_architecture(make_job(model={"name_or_path": str(gguf)}), CheckContext()) is None
    assert checks.model_source(make_job(model={"name_or_path": "org/name"}), CheckContext()) == ("hub", None, None)
    assert checks.model_source(make_job(model={"name_or_path": "org/"}), CheckContext()) == ("missing", None, None)
    registry = checks.model_source(make_job(), CheckContext())
    assert registry[0] == "registry" and registry[1] is not None and registry[2] is None


def test_divides_names_the_sizes_that_would_divide_up_to_64() -> None:
    def issues(size: int, total: int) -> list[tuple[str, str, str | None]]:
        return [(i.path, i.message, i.hint) for i in checks.divides("parallel.tp", "tp", size, total, "heads")]

    assert issues(1, 7) == [] and issues(2, 4) == []
    assert issues(2, 7) == [("parallel.tp", "tp 2 does not divide heads 7", "valid sizes: [1, 7]")]
    assert issues(3, 128) == [
        ("parallel.tp", "tp 3 does not divide heads 128", "valid sizes: [1, 2, 4, 8, 16, 32, 64]")
    ]
    assert issues(3, 130)[0][2] == "valid sizes: [1, 2, 5, 10, 13, 26]"  # 65 divides 130 but is over 64


def test_a_user_reward_is_called_with_its_kwargs(tmp_path: Path) -> None:
    (tmp_path / "reward.py").write_text(
        "def score(completions, target, **kwargs):\n"
        "    return [1.0 if target in str(c) else 0.0 for c in completions]\n",
        encoding="utf-8",
    )
    ctx = CheckContext(base_dirs=(tmp_path,))
    given = make_job(stage="grpo", grpo={"rewards": [{"function": "reward.py:score", "kwargs": {"target": "4"}}]})
    assert list(checks.check_grpo(given, ctx)) == []
    missing = make_job(stage="grpo", grpo={"rewards": [{"function": "reward.py:score"}]})
    assert [(i.path, i.message, i.hint) for i in checks.check_grpo(missing, ctx)] == [
        (
            "grpo.rewards[0]",
            "reward `score` raised TypeError: score() missing 1 required positional argument: 'target' on a batch of "
            "5 rows (factory check calls each reward on the first rows)",
            "run the reward on that row by hand to see the full error",
        )
    ]


def test_hub_datasets_are_looked_up_in_the_dataset_dir_and_past_a_bad_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from factory_cli.modeling import hubs

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(type(hubs.HUBS["hf"]), "unavailable", lambda self: "no network here")
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "dataset_info.json").write_text(json.dumps({"remote": {"hf_hub_url": "org/remote"}}))
    job = make_job(data={"train": ["no-such-dataset-here", "remote"], "dataset_dir": "dd"})
    found = [
        (i.path, i.message.split(":")[0])
        for i in checks.check_dataset_sources(job, CheckContext(base_dirs=(tmp_path,)))
    ]
    assert found == [("data.train[1]", "dataset `org/remote` is not on this machine and cannot be downloaded")]


def _range_warnings(**sections: Any) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in checks.check_ranges(make_job(**sections), CheckContext())]


def test_range_warnings_start_just_outside_ten_times_the_usual_range() -> None:
    # LoRA sft: usual 1e-4 to 2e-4, so 1e-5 and 2e-3 are still quiet
    assert _range_warnings(train={"learning_rate": 1e-5}) == _range_warnings(train={"learning_rate": 2e-3}) == []
    assert _range_warnings(train={"learning_rate": 9.5e-6}) == [
        ("train.learning_rate", "9.5e-06 is far outside the usual range for LoRA sft (0.0001-0.0002)")
    ]
    assert _range_warnings(train={"learning_rate": 2.1e-3}) == [
        ("train.learning_rate", "0.0021 is far outside the usual range for LoRA sft (0.0001-0.0002)")
    ]
    assert _range_warnings(device="cuda", method={"type": "qlora"}, train={"learning_rate": 1.0}) == [
        ("train.learning_rate", "1 is far outside the usual range for LoRA sft (0.0001-0.0002)")
    ]
    assert _range_warnings(train={"warmup_ratio": 0.3}) == []
    for beta in (0.01, 0.5, 1.0):
        assert _range_warnings(stage="dpo", dpo={"beta": beta}) == [], beta


def test_group_size_and_clip_warnings_at_their_bounds() -> None:
    def grpo(**values: Any) -> list[tuple[str, str]]:
        return _range_warnings(stage="grpo", grpo={"rewards": ["math_answer"], **values})

    assert grpo(num_generations=4) == grpo(num_generations=64) == []
    assert grpo(num_generations=3) == [("grpo.num_generations", "group of 3")]
    assert grpo(epsilon=0.4) == grpo(beta=0.4) == []


@pytest.mark.parametrize(("count", "written"), [(1_350_000_000, "1.4 GB"), (1_500_000, "2 MB")])
def test_file_sizes_round_to_what_is_shown(count: int, written: str) -> None:
    assert checks._size(count) == written


def test_a_model_that_cannot_be_downloaded_names_the_field_to_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from factory_cli.modeling import hubs

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub = type(hubs.HUBS["hf"])
    monkeypatch.setattr(hub, "unavailable", lambda self: "no network here")
    ctx = CheckContext(base_dirs=(tmp_path,))
    job = make_job(stage="dpo", model={"name_or_path": "org/base"}, dpo={"ref_model": "org/ref"})
    found = [(i.path, i.message.split(":")[0]) for i in checks.check_model_source(job, ctx)]
    hints = [i.hint or "" for i in checks.check_model_source(job, ctx)]
    assert all(h.startswith("use a local checkpoint folder instead (model.name_or_path, or --model)") for h in hints)
    assert found == [
        ("model.name_or_path", "model `org/base` is not on this machine and cannot be downloaded"),
        ("dpo.ref_model", "model `org/ref` is not on this machine and cannot be downloaded"),
    ]
    # without the hub's library the fix is another source
    monkeypatch.setattr(hub, "installed", lambda self: False)
    assert [i.path for i in checks.check_model_source(job, ctx)] == ["model.source", "model.source"]
    # a model that names nothing is skipped (check_model reports it); the reference is still checked
    monkeypatch.setattr(hub, "installed", lambda self: True)
    nothing = make_job(stage="dpo", model={"name_or_path": "./nothing-here"}, dpo={"ref_model": "org/ref"})
    assert [i.path for i in checks.check_model_source(nothing, ctx)] == ["dpo.ref_model"]
    monkeypatch.setattr(hub, "unavailable", lambda self: None)
    assert list(checks.check_model_source(job, ctx)) == []  # reachable: downloaded at train time


def test_a_registry_gguf_that_cannot_be_found_is_the_models_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from factory_cli.config.errors import UsageError

    def missing(spec: Any) -> Path:
        raise UsageError("the GGUF package is missing", "pip install it")

    monkeypatch.setattr(checks, "gguf_path", missing)
    issues = {}
    local_gguf = tmp_path / "m.gguf"
    local_gguf.write_bytes(b"GGUF")
    for name in ("smollm2-135m-instruct-gguf", "smollm2-135m-instruct", str(local_gguf)):
        found = checks.check_model(make_job(model={"name_or_path": name}), CheckContext())
        issues[name] = [(i.path, i.message, i.hint, i.severity) for i in found]
    assert issues == {
        "smollm2-135m-instruct-gguf": [
            ("model.name_or_path", "the GGUF package is missing", "pip install it", "error")
        ],
        "smollm2-135m-instruct": [],
        str(local_gguf): [],  # a file of the user's own: nothing to look up
    }


def test_a_local_file_that_is_no_model_folder_has_no_architecture(tmp_path: Path) -> None:
    weights = tmp_path / "weights.bin"
    weights.write_text("x", encoding="utf-8")
    job = make_job(model={"name_or_path": str(weights)})
    assert checks.model_source(job, CheckContext())[0] == "local"
    assert checks.job_architecture(job, CheckContext()) is None
    assert list(checks.check_model(job, CheckContext())) == []


def test_datasets_after_one_that_cannot_be_read_are_still_scanned(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "dataset_info.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "dd").mkdir()
    info = {"here": {"file_name": "here.jsonl"}, "gone": {"file_name": "gone.jsonl"}}
    (tmp_path / "dd" / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    (tmp_path / "dd" / "here.jsonl").write_text(
        json.dumps({"instruction": "q", "output": "a"}) + "\n", encoding="utf-8"
    )
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    ctx = CheckContext(base_dirs=(tmp_path,))
    empty = ("data.train[1]", "empty.jsonl holds no rows")

    def paths(**data: Any) -> list[tuple[str, str]]:
        return [(i.path, i.message) for i in checks.check_data(make_job(data=data), ctx)]

    after_bad_info = paths(train=["x", str(tmp_path / "empty.jsonl")], dataset_dir=str(tmp_path / "bad"))
    assert [p for p, _ in after_bad_info] == ["data.train[0]", "data.train[1]"] and after_bad_info[1] == empty
    assert paths(train=["someorg/somedata", str(tmp_path / "empty.jsonl")]) == [empty]  # after a Hub dataset
    here = make_job(data={"train": ["here"], "dataset_dir": "dd"})
    assert list(checks.check_data(here, ctx)) == [] and checks.data_scan(here, ctx).train_rows == 1
    (gone,) = checks.check_data(make_job(data={"train": ["gone"], "dataset_dir": "dd"}), ctx)
    assert gone.message == f"dataset `gone` is {tmp_path / 'dd' / 'gone.jsonl'}, which does not exist"
    assert gone.hint == f"fix its file_name in {tmp_path / 'dd' / 'dataset_info.json'}, or put the file there"


def test_installed_reporters_and_resume_words_need_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = {"tensorboard", "wandb", "swanlab", "mlflow"}
    monkeypatch.setattr(checks.importlib.util, "find_spec", lambda name: object() if name in installed else None)
    job = make_job(logging={"report_to": sorted(installed)})
    assert list(checks.check_output(job, CheckContext())) == []
    for resume in ("auto", "never"):
        assert list(checks.check_output(make_job(output={"resume": resume}), CheckContext())) == [], resume


def test_output_folders_that_cannot_be_written() -> None:
    # /proc takes no new files (the reason, from the kernel, varies): the folder itself, or one to create in it
    problem = checks.output_dir_problem(Path("/proc"))
    assert problem is not None and problem.startswith("/proc is not writable (") and problem.endswith(")")
    problem = checks.output_dir_problem(Path("/proc/factory-run"))
    assert problem is not None and problem.startswith("/proc/factory-run cannot be created in /proc (")
    assert "None" not in problem


def test_batches_that_divide_and_a_grpo_run_that_fills_the_context_exactly() -> None:
    assert list(checks.check_batch(make_job(train={"micro_batch_size": 2}), CheckContext())) == []
    assert (
        list(checks.check_batch(make_job(train={"global_batch_size": 8, "micro_batch_size": 2}), CheckContext())) == []
    )
    fills = make_job(
        stage="grpo", grpo={"rewards": ["math_answer"], "max_prompt_length": 4096, "max_completion_length": 4096}
    )
    assert list(checks.check_grpo(fills, CheckContext())) == []  # 8192 positions: exactly the model's context
    assert checks.model_source(make_job(model={"name_or_path": "org/m.gguf"}), CheckContext()) == (
        "missing",
        None,
        None,
    )
