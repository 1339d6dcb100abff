"""The megatron planner: architecture / parallel / optimizer argv, engine choice, golden plans of the examples.

Golden files live in tests/unit/golden/. After an intended change to the plan, regenerate them with
    python -m tests.unit.plan_helpers --update-golden
and review the diff. No test needs Megatron-LM or MindSpeed-LLM installed.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy
import pytest

from factory_cli.backends import get_backend
from factory_cli.backends.base import Plan
from factory_cli.backends.common import run as common_run
from factory_cli.backends.common.plan import num, on_device
from factory_cli.backends.megatron import backend as megatron_backend
from factory_cli.backends.megatron.args import (
    MEGATRON_LM,
    MINDSPEED_LLM,
    architecture_args,
    lora_target_modules,
    optimizer_args,
    parallel_args,
    recompute_args,
    train_iters,
)
from factory_cli.backends.megatron.plan import (
    ModelFacts,
    megatron_input_row,
    plan_megatron,
)
from factory_cli.config.defaults import DeviceFacts, resolve_device_defaults
from factory_cli.config.errors import UsageError
from factory_cli.config.schema import MegatronJob, MegatronParallel, TrainSection
from factory_cli.config.validate import load_and_validate
from factory_cli.data.pipeline import read_canonical_rows
from factory_cli.registry.models import find_model
from tests.unit.plan_helpers import EXAMPLES, GoldenCheck, Recorder


def job_of(example: str, device: str, overrides: tuple[str, ...] = ()) -> MegatronJob:
    """An example job, validated and resolved for `device` (bf16 capable)."""
    job = load_and_validate(EXAMPLES / example, list(overrides)).job
    resolved = resolve_device_defaults(job, DeviceFacts(device, bf16=True))
    assert isinstance(resolved, MegatronJob)
    return resolved


def plan_of(example: str, device: str, overrides: tuple[str, ...] = (), train_samples: int | None = None) -> Plan:
    """The backend's plan (registry lookup included), or with a row count."""
    job = job_of(example, device, overrides)
    if train_samples is None:
        return get_backend("megatron").plan(job, device)
    return plan_megatron(job, device, megatron_backend.model_facts(job), train_samples)  # type: ignore[arg-type]


def arch(name: str) -> Any:
    spec = find_model(name)
    assert spec is not None
    return spec.architecture


def value_of(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def unwrap(step_argv: list[str]) -> list[str]:
    """The argv an Ascend step runs after its set_env prelude."""
    assert step_argv[:2] == ["bash", "-c"]
    return shlex.split(step_argv[2].split("; exec ", 1)[1])


# ------------------------------------------------------------------------------------------------ golden


@pytest.mark.parametrize(
    ("example", "device"),
    [
        ("megatron_pt.yaml", "cuda"),
        ("megatron_sft.yaml", "cuda"),
        ("megatron_sft.yaml", "npu"),
        # DPO runs on MindSpeed-LLM only (Megatron-LM has no DPO): its golden plan is the NPU one.
        ("megatron_dpo.yaml", "npu"),
    ],
)
def test_golden_plans(example: str, device: str, golden: GoldenCheck) -> None:
    plan = plan_of(example, device)
    golden(f"{Path(example).stem}.{device}", plan.to_dict())


def test_every_megatron_example_plans() -> None:
    examples = sorted(EXAMPLES.glob("megatron_*.yaml"))
    assert examples
    for path in examples:
        device = "npu" if "dpo" in path.name else "cuda"
        assert [s.name for s in plan_of(path.name, device).steps][-2:] == ["export", "check-export"]


# ------------------------------------------------------------------------------------------------ architecture


def test_qwen25_7b_architecture() -> None:
    args = architecture_args(arch("qwen2.5-7b"), 4096)
    assert value_of(args, "--num-layers") == "28"
    assert value_of(args, "--hidden-size") == "3584"
    assert value_of(args, "--ffn-hidden-size") == "18944"
    assert value_of(args, "--num-attention-heads") == "28"
    assert "--group-query-attention" in args and value_of(args, "--num-query-groups") == "4"
    assert "--disable-bias-linear" in args and "--add-qkv-bias" in args
    assert "--untie-embeddings-and-output-weights" in args
    assert value_of(args, "--padded-vocab-size") == "152064"
    assert value_of(args, "--make-vocab-size-divisible-by") == "1"
    assert value_of(args, "--rotary-base") == "1000000"
    assert value_of(args, "--position-embedding-type") == "rope"
    assert value_of(args, "--normalization") == "RMSNorm" and value_of(args, "--norm-epsilon") == "1e-06"
    assert value_of(args, "--seq-length") == "4096"
    assert value_of(args, "--max-position-embeddings") == "131072"
    assert "--swiglu" in args
    assert value_of(args, "--hidden-dropout") == "0.0"
    assert "--kv-channels" not in args and "--use-rope-scaling" not in args


def test_llama31_8b_architecture() -> None:
    args = architecture_args(arch("llama-3.1-8b"), 8192)
    assert value_of(args, "--num-query-groups") == "8"
    assert "--add-qkv-bias" not in args and "--disable-bias-linear" in args
    assert "--untie-embeddings-and-output-weights" in args
    assert value_of(args, "--rotary-base") == "500000"
    assert value_of(args, "--norm-epsilon") == "1e-05"
    assert "--use-rope-scaling" in args and value_of(args, "--rope-scaling-factor") == "8"
    npu = architecture_args(arch("llama-3.1-8b"), 8192, MINDSPEED_LLM)
    assert value_of(npu, "--rope-scaling-type") == "llama3"
    assert value_of(npu, "--original-max-position-embeddings") == "8192"
    assert value_of(npu, "--low-freq-factor") == "1" and value_of(npu, "--high-freq-factor") == "4"
    assert "--use-rope-scaling" not in npu


def test_llama32_takes_its_rope_factor() -> None:
    args = architecture_args(arch("llama-3.2-1b"), 2048, MEGATRON_LM, rope_scaling_factor=32.0)
    assert value_of(args, "--rope-scaling-factor") == "32"
    assert value_of(args, "--kv-channels") == "64"
    facts = megatron_backend.model_facts(job_of("megatron_pt.yaml", "cuda", ("model.name_or_path=llama-3.2-1b",)))
    assert facts.rope_scaling_factor == 32.0


def test_smollm2_ties_embeddings() -> None:
    args = architecture_args(arch("smollm2-135m"), 2048)
    assert "--untie-embeddings-and-output-weights" not in args
    assert value_of(args, "--num-attention-heads") == "9" and value_of(args, "--num-query-groups") == "3"
    assert value_of(args, "--rotary-base") == "100000"
    assert value_of(args, "--padded-vocab-size") == "49152"


def test_qwen3_uses_qk_norm_and_its_mindspeed_spec() -> None:
    args = architecture_args(arch("qwen3-8b"), 4096, MINDSPEED_LLM)
    assert "--qk-layernorm" in args and value_of(args, "--kv-channels") == "128"
    spec = args.index("--spec")
    assert args[spec + 1 : spec + 3] == ["mindspeed_llm.tasks.models.spec.qwen3_spec", "layer_spec"]
    assert "--spec" not in architecture_args(arch("qwen3-8b"), 4096, MEGATRON_LM)


def test_unsupported_architectures_are_refused() -> None:
    glm = arch("qwen2.5-7b").model_copy(update={"model_type": "glm4"})
    with pytest.raises(ValueError, match="glm4"):
        architecture_args(glm, 2048)
    with pytest.raises(ValueError, match=r"deepseek_v3.*multi-head latent attention"):
        architecture_args(arch("deepseek-v3"), 2048)


# ------------------------------------------------------------------------------------------------ other args


def test_parallel_args() -> None:
    p = MegatronParallel(nproc_per_node=16, tp=2, pp=2, cp=2, ep=2, vpp=2, sequence_parallel=True)
    args = parallel_args(p, num_layers=32)
    assert args == [
        "--tensor-model-parallel-size", "2",
        "--pipeline-model-parallel-size", "2",
        "--context-parallel-size", "2",
        "--expert-model-parallel-size", "2",
        "--num-layers-per-virtual-pipeline-stage", "8",
        "--sequence-parallel",
        "--use-distributed-optimizer",
    ]  # fmt: skip
    plain = parallel_args(MegatronParallel(distributed_optimizer=False))
    assert plain == ["--tensor-model-parallel-size", "1", "--pipeline-model-parallel-size", "1"]
    with pytest.raises(ValueError, match="number of layers"):
        parallel_args(p)
    with pytest.raises(ValueError, match="do not split"):
        parallel_args(p, num_layers=30)


def test_optimizer_args_and_length() -> None:
    train = TrainSection(
        epochs=2,
        learning_rate=1e-4,
        scheduler="cosine_with_min_lr",
        min_lr_ratio=0.1,
        warmup_ratio=0.01,
        weight_decay=0.1,
        adam_beta2=0.95,
        global_batch_size=32,
        precision="bf16",
    )
    args = optimizer_args(train)
    assert value_of(args, "--lr") == "0.0001" and value_of(args, "--min-lr") == "1e-05"
    assert value_of(args, "--lr-decay-style") == "cosine" and value_of(args, "--lr-warmup-fraction") == "0.01"
    assert value_of(args, "--adam-beta2") == "0.95" and value_of(args, "--global-batch-size") == "32"
    assert "--bf16" in args and "--fp16" not in args
    assert train_iters(train, None) is None
    assert train_iters(train, 1000) == 63  # ceil(2 x 1000 / 32)
    assert train_iters(train.model_copy(update={"max_steps": 7, "epochs": None}), 1000) == 7
    wsd = optimizer_args(train.model_copy(update={"scheduler": "warmup_stable_decay", "precision": "fp16"}))
    assert value_of(wsd, "--lr-decay-style") == "WSD" and "--fp16" in wsd
    assert num(1e-4 * 0.1) == "1e-05"


def test_recompute_and_lora_targets() -> None:
    assert recompute_args("selective") == ["--recompute-granularity", "selective"]
    assert recompute_args("full") == [
        "--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", "1",
    ]  # fmt: skip
    assert recompute_args("none") == []
    assert lora_target_modules(["all"]) == ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]
    assert lora_target_modules(["q_proj", "v_proj", "down_proj"]) == ["linear_qkv", "linear_fc2"]
    with pytest.raises(ValueError, match="lm_head"):
        lora_target_modules(["lm_head"])


# ------------------------------------------------------------------------------------------------ plans


def test_npu_sft_runs_mindspeed_with_hccl_and_no_cuda_flags() -> None:
    plan = plan_of("megatron_sft.yaml", "npu")
    assert plan.engine_config["engine"] == "mindspeed-llm"
    names = ["convert", "roundtrip", "verify", "preprocess", "train", "export", "check-export"]
    assert [s.name for s in plan.steps] == names
    train = plan.steps[4]
    assert train.argv[:2] == ["bash", "-c"]
    assert "/usr/local/Ascend/cann/set_env.sh" in train.argv[2] and "nnal/atb/set_env.sh" in train.argv[2]
    inner = unwrap(train.argv)
    assert inner[:3] == ["python", "-m", "torch.distributed.run"]
    assert "$MINDSPEED_LLM_HOME/posttrain_gpt.py" in inner
    args = plan.engine_config["train_args"]
    assert inner[-len(args) :] == args
    assert args[:4] == ["--stage", "sft", "--is-instruction-dataset", "--prompt-type"]
    assert value_of(args, "--prompt-type") == "qwen"
    assert "--use-flash-attn" in args and value_of(args, "--ckpt-format") == "torch"
    for cuda_only in ("--attention-backend", "--sft", "--use-rope-scaling"):
        assert cuda_only not in args
    assert "PYTORCH_NPU_ALLOC_CONF" in train.env and "PYTORCH_CUDA_ALLOC_CONF" not in train.env
    assert train.env["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
    notes = " ".join(plan.notes)
    assert "hccl" in notes and "ASCEND_RT_VISIBLE_DEVICES" in notes and "set_env.sh" in notes
    convert = unwrap(plan.steps[0].argv)
    assert value_of(convert, "--model-type-hf") == "qwen25"
    assert value_of(convert, "--target-tensor-parallel-size") == "4"


def test_cuda_sft_runs_megatron_lm_sft_on_the_jsonl() -> None:
    plan = plan_of("megatron_sft.yaml", "cuda")
    # No preprocess: SFTDataset reads the jsonl itself.
    assert [s.name for s in plan.steps] == ["convert", "train", "export", "check-export"]
    args = plan.engine_config["train_args"]
    assert args[:2] == ["--sft", "--no-create-attention-mask-in-dataloader"]  # sft_dataset.py asserts no mask
    assert value_of(args, "--tokenizer-type") == "SFTTokenizer"
    assert value_of(args, "--tokenizer-model").endswith("data/megatron/tokenizer")  # pad != EOS (tokenizer_copy.py)
    assert value_of(args, "--data-path").endswith("data/train.jsonl")
    assert plan.steps[1].argv[:3] == ["python", "-m", "torch.distributed.run"]
    assert "$MEGATRON_LM_HOME/pretrain_gpt.py" in plan.steps[1].argv
    assert plan.steps[0].argv[:3] == ["python", "-m", "factory_cli.backends.megatron.guard"]
    assert "run_conversion.py" in plan.steps[0].argv[3] and plan.steps[0].argv[4] == "import"
    assert any("Megatron Bridge" in n for n in plan.notes)


def test_cuda_pt_preprocesses_with_megatron_core() -> None:
    plan = plan_of("megatron_pt.yaml", "cuda")
    preprocess = plan.steps[1].argv
    assert preprocess[:3] == ["python", "-m", "factory_cli.backends.megatron.indexed"]
    assert value_of(preprocess, "--output-prefix").endswith("data/megatron/train")
    # factory's own preparation of the run's data (no jsonl), in the engine checkout's megatron-core
    assert value_of(preprocess, "--run-dir") == plan.run_dir and plan.engine_config["train_file"] is None
    assert value_of(preprocess, "--engine-home") == "$MEGATRON_LM_HOME"
    args = plan.engine_config["train_args"]
    assert value_of(args, "--data-path").endswith("data/megatron/train_text_document")
    assert plan.engine_config["document_index"] == value_of(args, "--data-path") + ".idx"
    assert any("(tokens - 1) // seq_length" in n for n in plan.notes)
    assert (
        value_of(plan.steps[2].argv, "--nnodes") == "2" and value_of(plan.steps[2].argv, "--master_addr") == "10.0.0.1"
    )


def test_train_iters_from_counted_rows() -> None:
    plan = plan_of("megatron_sft.yaml", "npu", train_samples=1000)
    assert value_of(plan.engine_config["train_args"], "--train-iters") == "63"  # ceil(2 x 1000 / 32)
    assert any("63 = ceil(2.0 epochs x 1000 rows / 32)" in n for n in plan.notes)
    assert "--train-iters" not in plan_of("megatron_sft.yaml", "npu").engine_config["train_args"]
    fixed = plan_of("megatron_sft.yaml", "npu", ("train.max_steps=50", "train.epochs=null"))
    assert value_of(fixed.engine_config["train_args"], "--train-iters") == "50"


def test_resume_modes_and_given_checkpoint() -> None:
    auto = plan_of("megatron_sft.yaml", "npu").engine_config["train_args"]
    assert value_of(auto, "--load").endswith("checkpoints")
    assert value_of(auto, "--pretrained-checkpoint").endswith("megatron_base") and "--finetune" not in auto
    never = plan_of("megatron_sft.yaml", "npu", ("output.resume=never",)).engine_config["train_args"]
    assert value_of(never, "--load").endswith("megatron_base") and "--finetune" in never
    loaded = plan_of("megatron_sft.yaml", "npu", ("megatron.load=/ckpt/qwen", "megatron.save_hf=false"))
    assert [s.name for s in loaded.steps] == ["preprocess", "train"]
    assert value_of(loaded.engine_config["train_args"], "--pretrained-checkpoint") == "/ckpt/qwen"


def test_dpo_on_mindspeed() -> None:
    plan = plan_of("megatron_dpo.yaml", "npu", ("dpo.loss=robust", "dpo.label_smoothing=0.1"))
    args = plan.engine_config["train_args"]
    assert args[:3] == ["--stage", "dpo", "--is-pairwise-dataset"]
    assert value_of(args, "--dpo-loss-type") == "sigmoid" and value_of(args, "--dpo-label-smoothing") == "0.1"
    assert value_of(args, "--ref-model").endswith("megatron_base")
    assert value_of(args, "--prompt-type") == "llama3"
    preprocess = unwrap(next(s for s in plan.steps if s.name == "preprocess").argv)
    assert value_of(preprocess, "--handler-name") == "SharegptStylePairwiseHandler"
    assert json.loads(value_of(preprocess, "--map-keys"))["chosen"] == "chosen"


def test_lora_on_mindspeed_exports_merged() -> None:
    plan = plan_of("megatron_sft.yaml", "npu", ("method.type=lora",))
    args = plan.engine_config["train_args"]
    assert value_of(args, "--lora-r") == "16" and value_of(args, "--lora-alpha") == "32"
    start = args.index("--lora-target-modules") + 1
    assert args[start : start + 4] == ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]
    export = unwrap(plan.steps[-2].argv)
    assert value_of(export, "--load-dir").endswith("megatron_base")
    assert value_of(export, "--lora-load").endswith("checkpoints")


def test_what_an_engine_cannot_do_is_refused() -> None:
    with pytest.raises(UsageError, match="no stage dpo") as dpo:
        plan_of("megatron_dpo.yaml", "cuda")
    assert "MindSpeed-LLM" in (dpo.value.hint or "")
    with pytest.raises(UsageError, match="does not train method lora"):
        plan_of("megatron_sft.yaml", "cuda", ("method.type=lora",))
    with pytest.raises(UsageError, match="Ascend NPUs only"):
        plan_of("megatron_sft.yaml", "cuda", ("megatron.use_mindspeed=true",))
    with pytest.raises(UsageError, match="needs MindSpeed-LLM"):
        plan_of("megatron_sft.yaml", "npu", ("megatron.use_mindspeed=false",))
    job = job_of("megatron_sft.yaml", "cuda")
    with pytest.raises(UsageError, match="GPUs or NPUs"):
        plan_megatron(job, "cpu", megatron_backend.model_facts(job))
    with pytest.raises(UsageError, match="architecture"):
        plan_megatron(job, "cuda", ModelFacts(architecture=None, source="x"))


def test_on_device_wraps_only_npu() -> None:
    argv = ["python", "x.py", "--map-keys", '{"a": "b c"}']
    assert on_device(argv, "cuda") == argv
    wrapped = on_device(argv, "npu")
    assert wrapped[:2] == ["bash", "-c"] and shlex.split(wrapped[2].split(" && exec ", 1)[1]) == argv


# ------------------------------------------------------------------------------------------------ data rows


def test_input_rows() -> None:
    assert megatron_input_row("pt", {"text": "hello"}, MEGATRON_LM) == {"text": "hello"}
    sft = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ],
        "tools": '[{"name": "w"}]',
    }
    row = megatron_input_row("sft", sft, MINDSPEED_LLM)
    assert row["system"] == "be brief" and row["tools"] == '[{"name": "w"}]'
    assert [m["role"] for m in row["messages"]] == ["user", "function_call", "tool", "assistant"]
    assert json.loads(row["messages"][1]["content"]) == {"name": "w", "arguments": "{}"}
    assert megatron_input_row("sft", sft, MEGATRON_LM) == {"messages": sft["messages"]}
    dpo = {
        "prompt": [{"role": "user", "content": "2+2?"}],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "5"}],
    }
    assert megatron_input_row("dpo", dpo, MINDSPEED_LLM) == {
        "messages": [{"role": "user", "content": "2+2?"}],
        "system": "",
        "tools": "",
        "chosen": {"role": "assistant", "content": "4"},
        "rejected": {"role": "assistant", "content": "5"},
    }


def test_demo_rows_become_engine_rows(tmp_path: Path) -> None:
    job = job_of("megatron_sft.yaml", "npu")
    rows = read_canonical_rows(job, job.data.train, [EXAMPLES])
    assert rows
    out = tmp_path / "train.jsonl"
    common_run.write_jsonl(out, (megatron_input_row("sft", r, MINDSPEED_LLM) for r in rows))
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == len(rows)
    assert all(m["role"] in ("user", "assistant", "tool", "function_call") for r in lines for m in r["messages"])


# ------------------------------------------------------------------------------------------------ run


def test_run_refuses_without_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not `pip install factory-cli[megatron]` (the wheel holds megatron/core only): the checkouts and their steps."""
    for var in ("MEGATRON_LM_HOME", "MINDSPEED_LLM_HOME", "MEGATRON_BRIDGE_HOME"):
        monkeypatch.delenv(var, raising=False)
    for device, var in (("npu", "MINDSPEED_LLM_HOME"), ("cuda", "MEGATRON_LM_HOME")):
        plan = plan_of("megatron_sft.yaml", device)
        with pytest.raises(UsageError) as refused:
            get_backend("megatron").run(plan, Recorder())
        assert "the megatron backend cannot start" in refused.value.message
        assert f"${var} is not set" in refused.value.message
        assert "git clone" in (refused.value.hint or "") and "pip install 'factory-cli" not in (
            refused.value.hint or ""
        )


def test_run_needs_the_checkouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(megatron_backend, "stack_problems", lambda *args, **kwargs: [])
    monkeypatch.delenv("MINDSPEED_LLM_HOME", raising=False)
    with pytest.raises(UsageError, match=r"\$MINDSPEED_LLM_HOME"):
        get_backend("megatron").run(plan_of("megatron_sft.yaml", "npu"), Recorder())


def test_argv_placeholders_and_env(tmp_path: Path) -> None:
    argv = ["bash", "-c", "exec python '$MINDSPEED_LLM_HOME/posttrain_gpt.py' --x 1"]
    resolved = megatron_backend.resolve_argv(argv, {"MINDSPEED_LLM_HOME": "/opt/ms"})
    assert resolved[2] == "exec python '/opt/ms/posttrain_gpt.py' --x 1"
    env = common_run.child_env({"A": "1", "PATH": "/usr/bin"}, {str(tmp_path / "f.txt"): "hi"})
    assert env["A"] == "1" and env["PATH"].endswith("/usr/bin") and env["PATH"] != "/usr/bin"
    assert (tmp_path / "f.txt").read_text() == "hi"
    (tmp_path / "ck" / "iter_0000000").mkdir(parents=True)
    assert megatron_backend.has_checkpoint(tmp_path / "ck")
    assert not megatron_backend.has_checkpoint(tmp_path / "none")


def write_index(idx: Path, sequences: list[list[int]]) -> None:
    """An indexed dataset written by megatron-core's own builder."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    idx.parent.mkdir(parents=True, exist_ok=True)
    builder = IndexedDatasetBuilder(str(idx.with_suffix(".bin")), dtype=numpy.int32)
    for sequence in sequences:
        builder.add_document(sequence, [len(sequence)])
    builder.finalize(str(idx))


TINY_QWEN2 = {
    "model_type": "qwen2",
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 4096,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}


def test_run_writes_inputs_and_runs_the_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run() with the engine faked: model link, jsonl rows, iterations from the row count, every step launched."""
    from factory_cli import launching
    from factory_cli.config.dump import job_to_yaml

    model = tmp_path / "tiny-qwen2"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(TINY_QWEN2), encoding="utf-8")
    home = tmp_path / "MindSpeed-LLM"
    home.mkdir()
    run_dir = tmp_path / "run"
    job = job_of(
        "megatron_sft.yaml",
        "npu",
        (
            f"model.name_or_path={model}",
            f"output.dir={run_dir}",
            "parallel.tp=2",
            "data.max_length=1024",
            'megatron.extra_args=["--log-throughput", "--seed", "1234"]',
            "env.FACTORY_JOB_PROBE=from the job",
        ),
    )
    run_dir.mkdir()
    (run_dir / "job.yaml").write_text(job_to_yaml(job), encoding="utf-8")
    plan = get_backend("megatron").plan(job, "npu")
    plan.base_dirs = [str(EXAMPLES)]
    (run_dir / "megatron_base").mkdir()
    (run_dir / "megatron_base" / "latest_checkpointed_iteration.txt").write_text("release")
    (run_dir / "megatron_base" / "factory_roundtrip_ok.json").write_text("{}")  # its round trip was checked

    launched: list[tuple[list[str], dict[str, str]]] = []
    packed_index = run_dir / "data" / "megatron" / "train_packed_input_ids_document.idx"

    def fake_run_child(argv: list[str], env: dict[str, str], cwd: str | None = None) -> int:
        launched.append((list(argv), dict(env)))
        if "preprocess_data.py" in argv[-1]:
            # The output folder exists before the engine's preprocess runs (it does not create it).
            assert packed_index.parent.is_dir()
            write_index(packed_index, [[1, 2, 3]] * 3)  # 3 packed sequences
        return 0

    monkeypatch.setattr(megatron_backend, "stack_problems", lambda *args, **kwargs: [])  # engine faked
    monkeypatch.setenv("MINDSPEED_LLM_HOME", str(home))
    monkeypatch.setattr(launching, "run_child", fake_run_child)
    ui = Recorder()
    result = get_backend("megatron").run(plan, ui)

    assert result.ok
    assert (run_dir / "hf_model").is_symlink() and (run_dir / "hf_model").resolve() == model.resolve()
    rows = (run_dir / "data" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert rows and "messages" in json.loads(rows[0])
    # The converted (and checked) checkpoint exists already: preprocess, train, export and its check run.
    assert len(launched) == 4 and any("already converted" in line for line in ui.lines)
    assert any("roundtrip: the conversion was checked already" in line for line in ui.lines)
    train_cmd = launched[1][0][2]
    assert f"{home}/posttrain_gpt.py" in train_cmd and "$MINDSPEED_LLM_HOME" not in train_cmd
    # Packed SFT: iterations from the 3 packed sequences preprocess wrote, not the rows: ceil(2 epochs x 3 / 32).
    iters = 1
    assert len(rows) > 3 and f"--train-iters {iters}" in train_cmd
    assert json.loads((run_dir / "plan.json").read_text())["engine_config"]["train_iters"] == iters
    assert launched[1][1]["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    # megatron.extra_args come last, verbatim (so they win over what the plan set); the job's env reaches every step
    assert shlex.split(train_cmd)[-3:] == ["--log-throughput", "--seed", "1234"]
    assert [env["FACTORY_JOB_PROBE"] for _, env in launched] == ["from the job"] * 4


def test_pt_run_writes_no_rows_and_counts_the_indexed_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pt run() with the engine faked: no jsonl (preprocess prepares the data), and --train-iters from the samples
    GPTDataset cuts from what preprocess wrote: 3 epochs x (33 - 1) // 16 samples / global batch 1."""
    from factory_cli import launching
    from factory_cli.config.dump import job_to_yaml

    model = tmp_path / "tiny-qwen2"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(TINY_QWEN2), encoding="utf-8")
    homes = {var: tmp_path / var for var in ("MEGATRON_LM_HOME", "MEGATRON_BRIDGE_HOME")}
    run_dir = tmp_path / "run"
    single = ("parallel.nnodes=1", "parallel.nproc_per_node=1", "parallel.tp=1", "parallel.pp=1")
    more = ("parallel.sequence_parallel=false", "data.max_length=16", "train.global_batch_size=1", "train.epochs=3")
    job = job_of("megatron_pt.yaml", "cuda", (f"model.name_or_path={model}", f"output.dir={run_dir}", *single, *more))
    run_dir.mkdir()
    (run_dir / "job.yaml").write_text(job_to_yaml(job), encoding="utf-8")
    plan = get_backend("megatron").plan(job, "cuda")
    plan.base_dirs = [str(EXAMPLES)]
    assert "--train-iters" not in plan.engine_config["train_args"]
    (run_dir / "megatron_base" / "iter_0000001").mkdir(parents=True)
    launched: list[list[str]] = []

    def fake_run_child(argv: list[str], env: dict[str, str], cwd: str | None = None) -> int:
        launched.append(list(argv))
        if argv[1:3] == ["-m", "factory_cli.backends.megatron.indexed"]:
            assert value_of(argv, "--engine-home") == str(homes["MEGATRON_LM_HOME"].resolve())
            write_index(Path(plan.engine_config["document_index"]), [list(range(20)), list(range(13))])
        return 0

    monkeypatch.setattr(megatron_backend, "stack_problems", lambda *args, **kwargs: [])
    for var, path in homes.items():
        path.mkdir()
        monkeypatch.setenv(var, str(path))
    monkeypatch.setattr(launching, "run_child", fake_run_child)
    ui = Recorder()
    assert get_backend("megatron").run(plan, ui).ok
    assert not (run_dir / "data" / "train.jsonl").exists() and not any("training rows" in x for x in ui.lines)
    assert [a[2] for a in launched[:1]] == ["factory_cli.backends.megatron.indexed"]
    train_cmd = " ".join(launched[1])
    assert "pretrain_gpt.py" in train_cmd and "--train-iters 6 " in train_cmd
    assert json.loads((run_dir / "plan.json").read_text())["engine_config"]["train_samples"] == 2


def test_npu_pt_writes_its_data_through_factory_too() -> None:
    """MindSpeed-LLM reads the same `<prefix>_text_document` pretraining corpus: one preparation for both engines."""
    plan = plan_of("megatron_pt.yaml", "npu")
    (preprocess,) = [unwrap(s.argv) for s in plan.steps if s.name == "preprocess"]
    assert preprocess[:3] == ["python", "-m", "factory_cli.backends.megatron.indexed"]
    assert value_of(preprocess, "--engine-home") == "$MINDSPEED_LLM_HOME"
    assert value_of(plan.engine_config["train_args"], "--data-path") + ".idx" == plan.engine_config["document_index"]


def test_cuda_sft_notes_say_what_megatron_lm_trains_on() -> None:
    """Megatron-LM's SFT prompt format `default` trains on every token and pads one row per sequence."""
    notes = " ".join(plan_of("megatron_sft.yaml", "cuda", ("data.packing=true",)).notes)
    assert "trains on every token of it, system and user turns included" in notes
    assert "core_v0.17.0" in notes and "assistant tokens only" not in notes.split("ignored: data.train_on_prompt")[0]
    assert "ignored: data.packing: Megatron-LM's SFT dataset puts one row per sequence" in notes
    assert "ignored: data.train_on_prompt: false" in notes
    npu = " ".join(plan_of("megatron_sft.yaml", "npu").notes)
    assert "packed sequences' count" in npu and "every token" not in npu


def test_wsd_plans_its_decay_once_the_length_is_known() -> None:
    dry = plan_of("megatron_sft.yaml", "cuda", ("train.scheduler=warmup_stable_decay",))
    assert "--lr-wsd-decay-iters" not in dry.engine_config["train_args"]
    counted = plan_of("megatron_sft.yaml", "cuda", ("train.scheduler=warmup_stable_decay",), train_samples=1000)
    args = counted.engine_config["train_args"]
    assert value_of(args, "--lr-decay-style") == "WSD" and value_of(args, "--train-iters") == "63"
    assert value_of(args, "--lr-wsd-decay-iters") == "7" and value_of(args, "--lr-wsd-decay-style") == "cosine"


def test_cuda_sft_run_gives_megatron_lm_a_tokenizer_whose_pad_is_not_eos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_llama_dir: Path
) -> None:
    """run() on CUDA SFT with the engine faked: before any step, data/megatron/tokenizer holds the model's tokenizer
    with a pad other than its EOS (SmolLM2's pad is <|im_end|>, its EOS), and the train step reads that one."""
    from transformers import AutoTokenizer

    from factory_cli.config.dump import job_to_yaml

    run_dir = tmp_path / "run"
    job = job_of(
        "megatron_sft.yaml",
        "cuda",
        (f"model.name_or_path={tiny_llama_dir}", f"output.dir={run_dir}", "parallel.tp=2", "data.max_length=256"),
    )
    run_dir.mkdir()
    (run_dir / "job.yaml").write_text(job_to_yaml(job), encoding="utf-8")
    plan = get_backend("megatron").plan(job, "cuda")
    plan.base_dirs = [str(EXAMPLES)]
    ui = Recorder()
    launched = run_cuda_with_engine_faked(plan, ui, tmp_path, monkeypatch)
    copy = AutoTokenizer.from_pretrained(str(run_dir / "data" / "megatron" / "tokenizer"))
    assert copy.pad_token_id != copy.eos_token_id
    assert any("pads with <|endoftext|>" in line for line in ui.lines)
    train = next(argv for argv in launched if "torch.distributed.run" in argv)
    assert value_of(train, "--tokenizer-model") == str(run_dir / "data" / "megatron" / "tokenizer")
    assert launched[-2][:3] == ["python", "-m", "factory_cli.backends.megatron.bridge_export"]
    assert launched[-1][:4] == ["python", "-m", "factory_cli.backends.megatron.roundtrip", "--shapes-only"]


def test_model_tokenizer_reaches_every_step_that_tokenizes(tmp_path: Path) -> None:
    """model.tokenizer replaces the model's tokenizer in preprocessing and training, on both engines."""
    tokenizer = tmp_path / "own-tokenizer"
    tokenizer.mkdir()
    own = (f"model.tokenizer={tokenizer}",)
    pt = plan_of("megatron_pt.yaml", "cuda", own)
    (indexed_step,) = [s.argv for s in pt.steps if s.name == "preprocess"]
    assert value_of(indexed_step, "--tokenizer") == str(tokenizer)
    assert value_of(pt.engine_config["train_args"], "--tokenizer-model") == str(tokenizer)
    npu = plan_of("megatron_sft.yaml", "npu", own)
    steps = {s.name: unwrap(s.argv) for s in npu.steps}
    assert value_of(steps["preprocess"], "--tokenizer-name-or-path") == str(tokenizer)
    assert value_of(npu.engine_config["train_args"], "--tokenizer-name-or-path") == str(tokenizer)
    assert any("model.tokenizer" in note for note in npu.notes)
    # Without it, the model's own (the linked HF checkpoint).
    plain = plan_of("megatron_pt.yaml", "cuda")
    assert value_of(plain.engine_config["train_args"], "--tokenizer-model") == plain.engine_config["hf_model"]


def test_cuda_sft_run_copies_model_tokenizer_relative_to_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_llama_dir: Path
) -> None:
    """run() with the engine faked: a relative model.tokenizer is found next to the job file, and the tokenizer
    Megatron-LM SFT reads (data/megatron/tokenizer) is a copy of it, not of the model's."""
    from transformers import AutoTokenizer

    from factory_cli.config.dump import job_to_yaml

    job_dir = tmp_path / "jobs"
    own = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    own.add_tokens(["<factory_own_token>"])
    own.save_pretrained(str(job_dir / "own-tokenizer"))
    run_dir = tmp_path / "run"
    overrides = (f"model.name_or_path={tiny_llama_dir}", f"output.dir={run_dir}", "model.tokenizer=own-tokenizer")
    job = job_of("megatron_sft.yaml", "cuda", (*overrides, "parallel.tp=2", "data.max_length=256"))
    run_dir.mkdir()
    (run_dir / "job.yaml").write_text(job_to_yaml(job), encoding="utf-8")
    plan = get_backend("megatron").plan(job, "cuda")
    plan.base_dirs = [str(job_dir), str(EXAMPLES)]
    run_cuda_with_engine_faked(plan, Recorder(), tmp_path, monkeypatch)
    copy = AutoTokenizer.from_pretrained(str(run_dir / "data" / "megatron" / "tokenizer"))
    assert "<factory_own_token>" in copy.get_vocab()
    assert json.loads((run_dir / "plan.json").read_text())["engine_config"]["tokenizer"] == str(
        job_dir / "own-tokenizer"
    )


def run_cuda_with_engine_faked(
    plan: Plan, ui: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[list[str]]:
    """run() a CUDA megatron plan with the engine faked (checkouts are empty folders, children only recorded); the
    argv of every child it launched."""
    from factory_cli import launching

    launched: list[list[str]] = []

    def fake_run_child(argv: list[str], env: dict[str, str], cwd: str | None = None) -> int:
        launched.append(list(argv))
        return 0

    for var in ("MEGATRON_LM_HOME", "MEGATRON_BRIDGE_HOME"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setattr(megatron_backend, "stack_problems", lambda *args, **kwargs: [])  # engine faked
    monkeypatch.setattr(launching, "run_child", fake_run_child)
    assert get_backend("megatron").run(plan, ui).ok
    return launched
