"""The megatron plan at its edges (factory_cli/backends/megatron/plan.py): what the golden plans of the examples do
not vary — every refusal's message and hint in full, the conversion rules (megatron.load / save_hf, Bridge and
MindSpeed-LLM model types), MoE conversion and export, LoRA export, logging and eval flags, resume, attention,
precision, and the engine rows written for tool calls, empty contents and several calls."""

from __future__ import annotations

import json

import pytest

from factory_cli.backends.base import Plan
from factory_cli.backends.megatron import backend as megatron_backend
from factory_cli.backends.megatron.args import MEGATRON_LM, MINDSPEED_LLM
from factory_cli.backends.megatron.plan import (
    MegatronPaths,
    ModelFacts,
    checkpoint_args,
    convert_argv,
    export_argv,
    logging_args,
    megatron_input_row,
    plan_megatron,
    prompt_type,
    roundtrip_argvs,
)
from factory_cli.config.defaults import DeviceFacts, resolve_device_defaults
from factory_cli.config.errors import UsageError
from factory_cli.config.schema import MegatronJob
from factory_cli.config.validate import load_and_validate
from tests.unit.plan_helpers import EXAMPLES
from tests.unit.test_megatron_plan import arch, job_of, unwrap, value_of

QWEN3_MOE = ("model.name_or_path=qwen3-30b-a3b", "parallel.nproc_per_node=8", "parallel.tp=1")
QWEN3_MOE_NPU = (*QWEN3_MOE, "parallel.sequence_parallel=false", "parallel.ep=4")


def unchecked(example: str, device: str, overrides: tuple[str, ...] = ()) -> MegatronJob:
    """An example job resolved for `device` without factory check (which refuses some of these jobs first)."""
    job = load_and_validate(EXAMPLES / example, list(overrides), checks=False).job
    resolved = resolve_device_defaults(job, DeviceFacts(device, bf16=True))
    assert isinstance(resolved, MegatronJob)
    return resolved


def plan(example: str, device: str, overrides: tuple[str, ...] = ()) -> Plan:
    job = unchecked(example, device, overrides)
    return plan_megatron(job, device, megatron_backend.model_facts(job))  # type: ignore[arg-type]


def refusal(example: str, device: str, overrides: tuple[str, ...] = ()) -> tuple[str, str | None]:
    with pytest.raises(UsageError) as err:
        plan(example, device, overrides)
    return err.value.message, err.value.hint


def step(p: Plan, name: str) -> list[str]:
    argv = next(s.argv for s in p.steps if s.name == name)
    return unwrap(argv) if p.device == "npu" else argv


# ------------------------------------------------------------------------------------------------ refusals


def test_engine_choice_refusals_in_full() -> None:
    job = job_of("megatron_sft.yaml", "cuda")
    with pytest.raises(UsageError) as cpu:
        plan_megatron(job, "cpu", megatron_backend.model_facts(job))
    assert (cpu.value.message, cpu.value.hint) == (
        "the megatron backend needs GPUs or NPUs",
        "use backend: deepspeed on CPU",
    )
    assert refusal("megatron_sft.yaml", "cuda", ("megatron.use_mindspeed=true",)) == (
        "MindSpeed-LLM runs on Ascend NPUs only",
        "set megatron.use_mindspeed: auto on CUDA",
    )
    assert refusal("megatron_sft.yaml", "npu", ("megatron.use_mindspeed=false",)) == (
        "Megatron-LM needs MindSpeed-LLM on Ascend NPUs",
        "set megatron.use_mindspeed: auto",
    )


def test_engine_support_refusals_list_what_the_engine_does() -> None:
    assert refusal("megatron_dpo.yaml", "cuda") == (
        "Megatron-LM has no stage dpo (it runs pt, sft)",
        "dpo with Megatron runs on Ascend NPUs (MindSpeed-LLM); on CUDA use backend: deepspeed",
    )
    assert refusal("megatron_sft.yaml", "cuda", ("method.type=lora",)) == (
        "Megatron-LM does not train method lora (it trains full)",
        "set method.type: full, or use backend: deepspeed for adapters",
    )
    assert refusal("megatron_sft.yaml", "npu", ("method.type=qlora",)) == (
        "MindSpeed-LLM does not train method qlora (it trains full, lora)",
        "set method.type: full, or use backend: deepspeed for adapters",
    )


def test_dpo_refusals_on_mindspeed() -> None:
    assert refusal("megatron_dpo.yaml", "npu", ("dpo.ref_model=llama-3.1-8b",)) == (
        "the megatron backend uses the starting checkpoint as the DPO reference, not dpo.ref_model",
        "remove dpo.ref_model",
    )
    assert refusal("megatron_dpo.yaml", "npu", ("dpo.loss=bco_pair",)) == (
        "MindSpeed-LLM has no DPO loss `bco_pair`",
        "use one of: sigmoid, hinge, ipo, robust",
    )


def test_a_model_without_architecture_is_refused_with_its_hint() -> None:
    job = job_of("megatron_sft.yaml", "cuda")
    with pytest.raises(UsageError) as err:
        plan_megatron(job, "cuda", ModelFacts(architecture=None, source="x"))
    assert (err.value.message, err.value.hint) == (
        "the megatron backend needs the architecture of `qwen2.5-14b-instruct`",
        "use a registry model (factory list models) or a local directory with config.json",
    )


def test_prompt_type_of_an_unknown_template_names_the_known_ones() -> None:
    hint = "set model.template to one of: chatml, qwen3, llama3, mistral, glm4"
    with pytest.raises(UsageError) as named:
        prompt_type(ModelFacts(architecture=arch("llama-3.1-8b"), source="x"), "deepseek_r1")
    assert (named.value.message, named.value.hint) == (
        "chat template `deepseek_r1` has no MindSpeed-LLM --prompt-type",
        hint,
    )
    # auto, a model type without its own prompt and no registry template: the message says auto
    with pytest.raises(UsageError) as auto:
        prompt_type(ModelFacts(architecture=arch("llama-3.1-8b"), source="x"), "auto")
    assert (auto.value.message, auto.value.hint) == ("chat template `auto` has no MindSpeed-LLM --prompt-type", hint)
    facts = ModelFacts(architecture=arch("llama-3.1-8b"), source="x", template="llama3")
    assert prompt_type(facts, "auto") == "llama3"


def test_an_architecture_megatron_cannot_build_is_a_usage_error() -> None:
    # Starting from a Megatron checkpoint skips every converter; the layout itself is what Megatron cannot build.
    overrides = ("model.name_or_path=deepseek-v3", "megatron.load=/ckpt/dsv3", "megatron.save_hf=false")
    message, hint = refusal("megatron_pt.yaml", "cuda", overrides)
    assert "deepseek_v3" in message and "multi-head latent attention" in message
    assert hint == "use backend: deepspeed for this model"


# ------------------------------------------------------------------------------------------------ conversion rules

BRIDGE_HINT = (
    "convert the checkpoint yourself, give it as megatron.load and set megatron.save_hf: false "
    "(MindSpeed-LLM on Ascend converts it)"
)
BRIDGE_QWEN2_MOE = "Megatron Bridge, which converts HF checkpoints for Megatron-LM, has no converter for `qwen2_moe`"
QWEN2_MOE = ("model.name_or_path=qwen1.5-moe-a2.7b-chat", "parallel.nproc_per_node=8", "parallel.tp=1")


def test_bridge_converts_in_and_out_unless_both_are_megatron() -> None:
    # HF in (no megatron.load) or HF out (save_hf): each needs a Bridge converter
    assert refusal("megatron_sft.yaml", "cuda", (*QWEN2_MOE, "megatron.save_hf=false")) == (
        BRIDGE_QWEN2_MOE,
        BRIDGE_HINT,
    )
    assert refusal("megatron_sft.yaml", "cuda", (*QWEN2_MOE, "megatron.load=/ckpt/q")) == (
        BRIDGE_QWEN2_MOE,
        BRIDGE_HINT,
    )
    both = plan("megatron_sft.yaml", "cuda", (*QWEN2_MOE, "megatron.load=/ckpt/q", "megatron.save_hf=false"))
    assert [s.name for s in both.steps] == ["train"]
    # MindSpeed-LLM converts Qwen2-MoE itself
    npu = plan("megatron_sft.yaml", "npu", (*QWEN2_MOE, "parallel.sequence_parallel=false"))
    assert npu.engine_config["model_type_hf"] == "qwen2-moe"
    assert [s.name for s in npu.steps][:3] == ["convert", "roundtrip", "verify"]


MINDSPEED_MIXTRAL = (
    "MindSpeed-LLM's convert_ckpt_v2.py has no --model-type-hf for `mixtral`",
    "convert the checkpoint yourself, give it as megatron.load and set megatron.save_hf: false",
)
MIXTRAL = ("model.name_or_path=mixtral-8x7b-instruct", "parallel.nproc_per_node=8", "parallel.tp=1")


def test_mindspeed_needs_a_model_type_to_convert_either_way() -> None:
    npu = (*MIXTRAL, "parallel.sequence_parallel=false")
    assert refusal("megatron_sft.yaml", "npu", (*npu, "megatron.save_hf=false")) == MINDSPEED_MIXTRAL
    assert refusal("megatron_sft.yaml", "npu", (*npu, "megatron.load=/ckpt/m")) == MINDSPEED_MIXTRAL
    both = plan("megatron_sft.yaml", "npu", (*npu, "megatron.load=/ckpt/m", "megatron.save_hf=false"))
    assert [s.name for s in both.steps] == ["preprocess", "train"]
    assert both.engine_config["model_type_hf"] is None
    # Bridge converts Mixtral for Megatron-LM
    assert plan("megatron_sft.yaml", "cuda", MIXTRAL).steps[0].name == "convert"


def test_mindspeed_moe_converts_checks_and_exports_with_grouped_gemm() -> None:
    p = plan("megatron_sft.yaml", "npu", (*QWEN3_MOE_NPU, "parallel.pp=2", "parallel.vpp=2"))
    convert = step(p, "convert")
    assert value_of(convert, "--target-expert-parallel-size") == "4"
    assert value_of(convert, "--num-layers-per-virtual-pipeline-stage") == "12"  # 48 layers / (pp 2 x vpp 2)
    assert "--moe-grouped-gemm" in convert
    assert "--moe-grouped-gemm" in step(p, "roundtrip")
    assert "--moe-grouped-gemm" in step(p, "export")
    assert any(n.startswith("MoE: 128 experts, 8 per token") for n in p.notes)


def test_expert_parallel_two_reaches_the_converter() -> None:
    p = plan("megatron_sft.yaml", "npu", (*QWEN3_MOE, "parallel.sequence_parallel=false", "parallel.ep=2"))
    assert value_of(step(p, "convert"), "--target-expert-parallel-size") == "2"
    dense = plan("megatron_sft.yaml", "npu")
    for name in ("convert", "roundtrip", "export"):
        assert "--moe-grouped-gemm" not in step(dense, name)
    assert "--target-expert-parallel-size" not in step(dense, "convert")


def test_the_argv_builders_default_to_a_dense_model() -> None:
    job = job_of("megatron_sft.yaml", "npu")
    paths = MegatronPaths.of(job)
    assert "--moe-grouped-gemm" not in convert_argv(job, MINDSPEED_LLM, "qwen25", paths, 48)
    assert "--moe-grouped-gemm" not in export_argv(job, MINDSPEED_LLM, "qwen25", paths)
    assert "--moe-grouped-gemm" not in roundtrip_argvs(MINDSPEED_LLM, "qwen25", paths)[0][1]


def test_bridge_import_dtype_follows_the_precision() -> None:
    def dtype(*overrides: str) -> str:
        return value_of(step(plan("megatron_sft.yaml", "cuda", overrides), "convert"), "--torch-dtype")

    assert dtype() == "bfloat16"
    assert dtype("train.precision=fp16") == "float16"
    assert dtype("train.precision=fp32") == "float32"


def test_remote_code_reaches_the_bridge_import() -> None:
    assert step(plan("megatron_sft.yaml", "cuda", ("model.trust_remote_code=true",)), "convert")[-1] == (
        "--trust-remote-code"
    )
    assert "--trust-remote-code" not in step(plan("megatron_sft.yaml", "cuda"), "convert")


def test_npu_pt_pretrains_and_dpo_does_not_pack() -> None:
    assert plan("megatron_pt.yaml", "npu").engine_config["script"] == "pretrain_gpt.py"
    assert plan("megatron_sft.yaml", "npu").engine_config["script"] == "posttrain_gpt.py"
    dpo = step(plan("megatron_dpo.yaml", "npu", ("data.packing=true",)), "preprocess")
    assert "--pack" not in dpo and "--neat-pack" not in dpo


# ------------------------------------------------------------------------------------------------ export


def test_lora_export_takes_the_rank_and_alpha() -> None:
    default = step(plan("megatron_sft.yaml", "npu", ("method.type=lora", "method.lora.rank=8")), "export")
    assert (value_of(default, "--lora-r"), value_of(default, "--lora-alpha")) == ("8", "16")
    given = ("method.type=lora", "method.lora.rank=16", "method.lora.alpha=8")
    export = step(plan("megatron_sft.yaml", "npu", given), "export")
    assert (value_of(export, "--lora-r"), value_of(export, "--lora-alpha")) == ("16", "8")


def test_lora_export_of_an_unresolved_alpha_takes_the_default_of_resolve_defaults() -> None:
    job = job_of("megatron_sft.yaml", "npu", ("method.type=lora", "method.lora.rank=8"))
    assert job.method.lora.alpha == 16
    lora = job.method.lora.model_copy(update={"alpha": None})
    unresolved = job.model_copy(update={"method": job.method.model_copy(update={"lora": lora})})
    export = export_argv(unresolved, MINDSPEED_LLM, "qwen25", MegatronPaths.of(job))
    assert (value_of(export, "--lora-r"), value_of(export, "--lora-alpha")) == ("8", "16")


# ------------------------------------------------------------------------------------------------ train args


def test_lora_train_args_keep_the_stage() -> None:
    args = plan("megatron_sft.yaml", "npu", ("method.type=lora",)).engine_config["train_args"]
    assert args[:5] == ["--stage", "sft", "--is-instruction-dataset", "--prompt-type", "qwen"]


def test_llama32_rope_factor_reaches_the_train_args() -> None:
    args = plan("megatron_pt.yaml", "cuda", ("model.name_or_path=llama-3.2-1b",)).engine_config["train_args"]
    assert value_of(args, "--rope-scaling-factor") == "32" and "--use-rope-scaling" in args


def test_moe_aux_loss_coefficient_reaches_the_train_args() -> None:
    overrides = (*QWEN3_MOE_NPU, "model.moe.aux_loss_coef=0.01")
    args = plan("megatron_sft.yaml", "cuda", overrides).engine_config["train_args"]
    assert value_of(args, "--moe-aux-loss-coeff") == "0.01"


def test_attention_backend_follows_attn_implementation() -> None:
    def backend(*overrides: str) -> str:
        return value_of(plan("megatron_sft.yaml", "cuda", overrides).engine_config["train_args"], "--attention-backend")

    assert backend("model.attn_implementation=flash_attention_2") == "flash"
    assert backend("model.attn_implementation=sdpa") == "auto"


def test_checkpoint_args_per_resume_mode() -> None:
    job = job_of("megatron_sft.yaml", "npu", ("output.resume=never",))
    paths = MegatronPaths.of(job)
    save = ["--save", paths.checkpoints, "--save-interval", str(job.output.save_steps)]
    tail = ["--ckpt-format", "torch", "--exit-on-missing-checkpoint"]
    assert checkpoint_args(job, MINDSPEED_LLM, paths) == [*save, "--load", paths.base, "--finetune", *tail]
    given = unchecked("megatron_sft.yaml", "cuda", ("output.resume=/runs/old/checkpoints",))
    assert checkpoint_args(given, MEGATRON_LM, paths) == [
        *save, "--load", "/runs/old/checkpoints", "--exit-on-missing-checkpoint",
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------------ logging


@pytest.mark.parametrize(
    ("ratio", "iters", "split"),
    [(0.0, "0", "100,0,0"), (0.1, "10", "90,10,0"), (0.75, "10", "25,75,0")],
)
def test_eval_split_from_eval_ratio(ratio: float, iters: str, split: str) -> None:
    job = job_of("megatron_sft.yaml", "cuda", (f"data.eval_ratio={ratio}",))
    args = logging_args(job, MegatronPaths.of(job), MEGATRON_LM)
    assert args == [
        "--log-interval", str(job.logging.steps),
        "--log-throughput",
        "--eval-interval", str(job.output.save_steps),
        "--eval-iters", iters,
        "--split", split,
    ]  # fmt: skip


def test_tensorboard_and_wandb_flags() -> None:
    job = job_of("megatron_sft.yaml", "cuda", ("logging.report_to=[tensorboard, wandb]",))
    paths = MegatronPaths.of(job)
    tail = logging_args(job, paths, MEGATRON_LM)[9:]
    assert tail == [
        "--tensorboard-dir", str(paths.run_dir / "tensorboard"),
        "--wandb-project", "factory", "--wandb-exp-name", paths.run_dir.name,
    ]  # fmt: skip
    named = job_of("megatron_sft.yaml", "npu", ("logging.report_to=[wandb]", "logging.project=mine"))
    args = plan("megatron_sft.yaml", "npu", ("logging.report_to=[wandb]", "logging.project=mine")).engine_config[
        "train_args"
    ]
    assert args[-5:] == [
        "--use-wandb",
        "--wandb-project",
        "mine",
        "--wandb-exp-name",
        MegatronPaths.of(named).run_dir.name,
    ]


# ------------------------------------------------------------------------------------------------ engine rows


def test_several_tool_calls_and_flat_calls_become_one_function_call_turn() -> None:
    calls = [
        {"function": {"name": "météo", "arguments": '{"ville": "Zürich"}'}},
        {"name": "time", "arguments": "{}"},
    ]
    row = megatron_input_row("sft", {"messages": [{"role": "assistant", "tool_calls": calls}]}, MINDSPEED_LLM)
    content = row["messages"][0]["content"]
    assert "météo" in content and "Zürich" in content  # written as is, not \u-escaped
    assert json.loads(content) == [
        {"name": "météo", "arguments": '{"ville": "Zürich"}'},
        {"name": "time", "arguments": "{}"},
    ]
    flat = megatron_input_row(
        "sft", {"messages": [{"role": "assistant", "tool_calls": [{"name": "t", "arguments": "{}"}]}]}, MINDSPEED_LLM
    )
    assert json.loads(flat["messages"][0]["content"]) == {"name": "t", "arguments": "{}"}


def test_empty_contents_become_empty_strings() -> None:
    sft = {
        "messages": [
            {"role": "system", "content": None},
            {"role": "user", "content": None},
            {"role": "assistant", "content": "ok"},
        ]
    }
    assert megatron_input_row("sft", sft, MINDSPEED_LLM) == {
        "messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "ok"}],
        "system": "",
        "tools": "",
    }
    dpo = {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": None}],
        "rejected": [{"role": "assistant", "content": "no"}],
    }
    row = megatron_input_row("dpo", dpo, MINDSPEED_LLM)
    assert row["chosen"] == {"role": "assistant", "content": ""}
