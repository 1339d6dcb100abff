"""Mixture-of-experts on the megatron backend: the MoE argv from the architecture, the conversion arguments, the
checks Megatron itself enforces (before launch, at the YAML line), the notes, and `factory config`'s layout.

The engines' parsers read these argv in tests/unit/test_megatron_argv.py; the flags build a megatron-core MoE that
matches the Hugging Face model in tests/integration/test_megatron_parity.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from factory_cli.backends.megatron.args import (
    DEFAULT_AUX_LOSS_COEF,
    MEGATRON_LM,
    MINDSPEED_LLM,
    architecture_args,
    moe_args,
    moe_layer_pattern,
)
from factory_cli.config.errors import JobError, UsageError
from factory_cli.config.validate import load_and_validate
from tests.unit.test_megatron_plan import arch, job_of, plan_of, unwrap, value_of
from tests.unit.test_render import _render

ON_8 = ("parallel.nproc_per_node=8", "parallel.tp=1", "parallel.sequence_parallel=false")


def qwen3_moe_plan(device: str, *overrides: str) -> list[str]:
    plan = plan_of("megatron_sft.yaml", device, ("model.name_or_path=qwen3-30b-a3b", *ON_8, *overrides))
    return plan.engine_config["train_args"]


def test_qwen3_moe_argv_on_megatron_lm() -> None:
    args = qwen3_moe_plan("cuda", "parallel.ep=8")
    assert value_of(args, "--num-experts") == "128"
    assert value_of(args, "--moe-router-topk") == "8"
    assert value_of(args, "--moe-ffn-hidden-size") == "768"
    assert value_of(args, "--ffn-hidden-size") == "6144"
    assert value_of(args, "--moe-router-load-balancing-type") == "aux_loss"
    assert value_of(args, "--moe-router-dtype") == "fp32"
    assert value_of(args, "--moe-aux-loss-coeff") == "0.001"  # the model's router_aux_loss_coef
    assert value_of(args, "--moe-token-dispatcher-type") == "alltoall"
    assert value_of(args, "--expert-model-parallel-size") == "8"
    assert "--moe-grouped-gemm" in args and "--qk-layernorm" in args
    # Qwen3-MoE renormalizes the top-k weights: Megatron's default router (top-k logits, then softmax).
    assert "--moe-router-pre-softmax" not in args
    assert "--moe-layer-freq" not in args and "--moe-shared-expert-intermediate-size" not in args


def test_the_job_coefficient_wins_and_the_default_fills_in() -> None:
    args = qwen3_moe_plan("cuda", "model.moe.aux_loss_coef=0.02")
    assert value_of(args, "--moe-aux-loss-coeff") == "0.02"
    no_coef = arch("qwen3-30b-a3b").model_copy(update={"router_aux_loss_coef": None})
    assert value_of(moe_args(no_coef, MEGATRON_LM, None), "--moe-aux-loss-coeff") == str(DEFAULT_AUX_LOSS_COEF)
    assert value_of(moe_args(arch("mixtral-8x7b"), MEGATRON_LM, None), "--moe-aux-loss-coeff") == "0.02"
    assert moe_args(arch("qwen3-8b"), MEGATRON_LM, 0.5) == []


def test_qwen3_moe_argv_on_mindspeed_llm_and_its_conversion() -> None:
    plan = plan_of(
        "megatron_sft.yaml", "npu", ("model.name_or_path=qwen3-30b-a3b", *ON_8, "parallel.ep=4", "parallel.pp=2")
    )
    args = plan.engine_config["train_args"]
    assert value_of(args, "--moe-intermediate-size") == "768" and value_of(args, "--moe-ffn-hidden-size") == "768"
    assert "--norm-topk-prob" in args and value_of(args, "--moe-token-dispatcher-type") == "alltoall_seq"
    assert value_of(args, "--spec") == "mindspeed_llm.tasks.models.spec.qwen3_spec"
    steps = {step.name: unwrap(step.argv) for step in plan.steps}
    convert = steps["convert"]
    assert value_of(convert, "--model-type-hf") == "qwen3-moe"
    assert value_of(convert, "--target-expert-parallel-size") == "4" and "--moe-grouped-gemm" in convert
    for name in ("roundtrip", "export"):
        assert value_of(steps[name], "--model-type-hf") == "qwen3-moe" and "--moe-grouped-gemm" in steps[name]


def test_qwen2_moe_shared_expert_gate_and_no_renormalization() -> None:
    megatron_lm = moe_args(arch("qwen2-57b-a14b"), MEGATRON_LM, None)
    assert value_of(megatron_lm, "--moe-shared-expert-intermediate-size") == "20480"
    assert "--moe-shared-expert-gate" in megatron_lm
    # MindSpeed-LLM counts the shared expert in expert widths: 20480 = 8 x 2560.
    mindspeed = moe_args(arch("qwen2-57b-a14b"), MINDSPEED_LLM, None)
    assert value_of(mindspeed, "--n-shared-experts") == "8" and "--shared-expert-gate" in mindspeed
    assert value_of(moe_args(arch("qwen1.5-moe-a2.7b"), MINDSPEED_LLM, None), "--n-shared-experts") == "4"
    for args in (megatron_lm, mindspeed):
        assert "--moe-router-pre-softmax" in args and "--norm-topk-prob" not in args
        assert value_of(args, "--num-experts") == "64" and value_of(args, "--moe-ffn-hidden-size") == "2560"
    assert "--add-qkv-bias" in architecture_args(arch("qwen2-57b-a14b"), 4096)


def test_mixtral_expert_width_and_no_mindspeed_converter() -> None:
    args = moe_args(arch("mixtral-8x7b-instruct"), MEGATRON_LM, None)
    assert value_of(args, "--moe-ffn-hidden-size") == "14336" and value_of(args, "--moe-router-topk") == "2"
    assert "--moe-router-pre-softmax" not in args  # Mixtral renormalizes its top-2
    cuda = plan_of("megatron_sft.yaml", "cuda", ("model.name_or_path=mixtral-8x7b-instruct", *ON_8))
    assert value_of(cuda.engine_config["train_args"], "--num-experts") == "8"
    with pytest.raises(UsageError, match="no --model-type-hf for `mixtral`"):
        plan_of("megatron_sft.yaml", "npu", ("model.name_or_path=mixtral-8x7b-instruct", *ON_8))


def test_dense_first_layers_become_a_layer_pattern() -> None:
    deepseek_like = arch("qwen3-30b-a3b").model_copy(update={"first_k_dense_replace": 3})
    assert moe_layer_pattern(deepseek_like) == "([0]*3+[1]*45)"
    sparse = arch("qwen3-30b-a3b").model_copy(update={"decoder_sparse_step": 2, "mlp_only_layers": (5,)})
    pattern = moe_layer_pattern(sparse)
    assert pattern is not None and eval(pattern) == [int(x) for x in sparse.moe_layers]
    assert value_of(moe_args(deepseek_like, MEGATRON_LM, None), "--moe-layer-freq") == "([0]*3+[1]*45)"
    assert moe_layer_pattern(arch("qwen3-30b-a3b")) is None


def test_qwen2_moe_on_cuda_needs_a_megatron_checkpoint() -> None:
    with pytest.raises(UsageError, match=r"Megatron Bridge.*no converter for `qwen2_moe`"):
        plan_of("megatron_sft.yaml", "cuda", ("model.name_or_path=qwen2-57b-a14b-instruct", *ON_8))
    given = ("megatron.load=/checkpoints/qwen2-57b", "megatron.save_hf=false")
    plan = plan_of("megatron_sft.yaml", "cuda", ("model.name_or_path=qwen2-57b-a14b-instruct", *ON_8, *given))
    assert [step.name for step in plan.steps] == ["train"]


def test_deepseek_v3_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="multi-head latent attention"):
        architecture_args(arch("deepseek-v3"), 4096)
    # ... by factory check already, at the model's line.
    issues = _issues(("model.name_or_path=deepseek-v3", *ON_8))
    assert [(path, "multi-head latent attention" in message) for path, message, _ in issues] == [
        ("model.name_or_path", True)
    ]


def test_moe_notes_carry_the_ep_memory_arithmetic() -> None:
    plan = plan_of("megatron_sft.yaml", "cuda", ("model.name_or_path=qwen3-30b-a3b", *ON_8, "parallel.ep=8"))
    notes = "\n".join(plan.notes)
    assert "128 / 8 = 16 experts per rank" in notes
    assert "29B / (EP 8 x TP 1 x PP 1) = 3.62B per rank (7.25 GB in bf16)" in notes
    assert "coefficient 0.001 (the model's router_aux_loss_coef)" in notes


def _issues(overrides: tuple[str, ...]) -> list[tuple[str, str, str | None]]:
    """What factory check answers for the SFT example on Qwen3-30B-A3B (or the model the overrides name)."""
    from tests.unit.plan_helpers import EXAMPLES

    try:
        load_and_validate(EXAMPLES / "megatron_sft.yaml", ["model.name_or_path=qwen3-30b-a3b", *overrides])
    except JobError as err:
        return [(i.path, i.message, i.hint) for i in err.issues]
    return []


def test_checks_megatron_enforces_before_launch() -> None:
    assert _issues((*ON_8, "parallel.ep=8")) == []
    # experts % EP: 128 experts do not split over 3 ranks (12 ranks: DP 12).
    twelve = ("parallel.nproc_per_node=12", "parallel.tp=1", "parallel.sequence_parallel=false")
    (issue,) = _issues((*twelve, "train.global_batch_size=48", "parallel.ep=3"))
    assert issue[0] == "parallel.ep" and "does not divide the model's 128 experts" in issue[1]
    assert issue[2] is not None and "[1, 2, 4]" in issue[2]
    # EP inside DP x CP: 8 ranks at tp 4 leave DP 2; ep 4 does not fit, ep 4 with cp 2 does not either (DP 1 x 2).
    (issue,) = _issues(("parallel.nproc_per_node=8", "parallel.tp=4", "parallel.ep=4"))
    assert issue[0] == "parallel.ep" and "data-parallel x context-parallel size 2 x 1 = 2" in issue[1]
    assert _issues(("parallel.nproc_per_node=8", "parallel.tp=2", "parallel.cp=2", "parallel.ep=4")) == []
    # Sequence parallel with TP > 1 on a MoE.
    (issue,) = _issues(("parallel.nproc_per_node=8", "parallel.tp=2", "parallel.sequence_parallel=false"))
    assert issue[0] == "parallel.sequence_parallel" and issue[2] == "set parallel.sequence_parallel: true"
    # A dense model still refuses EP.
    with pytest.raises(JobError, match="expert parallelism needs a mixture-of-experts model"):
        job_of("megatron_sft.yaml", "cuda", (*ON_8, "parallel.ep=2"))


@pytest.mark.parametrize(
    ("model", "layout"),
    [
        ("qwen3-30b-a3b", {"nnodes": "2", "tp": "1", "pp": "1", "ep": "8", "sequence_parallel": "false"}),
        ("qwen3-235b-a22b", {"nnodes": "16", "tp": "1", "pp": "2", "ep": "64", "sequence_parallel": "false"}),
        ("mixtral-8x7b-instruct", {"nnodes": "2", "tp": "1", "pp": "2", "ep": "8", "sequence_parallel": "false"}),
        ("qwen1.5-moe-a2.7b-chat", {"nnodes": "1", "tp": "1", "pp": "1", "ep": "4", "sequence_parallel": "false"}),
    ],
)
def test_factory_config_lays_out_ep_tp_pp(model: str, layout: dict[str, str], tmp_path: Path) -> None:
    text = _render("megatron", "sft", "full", model=model)
    section = text.split("\nparallel:\n", 1)[1].split("\n\n", 1)[0]
    values = {line.split(":")[0].strip(): line.split(":")[1].split("#")[0].strip() for line in section.splitlines()}
    assert {key: values[key] for key in layout} == layout
    assert "expert weights" in text and "per rank" in text
    # The layout passes the checks Megatron enforces.
    job_file = tmp_path / "job.yaml"
    job_file.write_text(text.replace('"***"', '"demo-sft-alpaca"'), encoding="utf-8")
    load_and_validate(job_file, [])
