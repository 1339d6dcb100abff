"""Each backend's own checks at their edges: the exact issues (path, message, hint, severity) on both sides of every
boundary — offload and ZeRO, world size against TP x PP x CP, EP against DP, layers against PP x VPP, verl's rollout
batches against groups and devices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from factory_cli.backends.deepspeed.checks import check_deepspeed
from factory_cli.backends.megatron.checks import check_megatron
from factory_cli.backends.verl.checks import check_verl
from factory_cli.config.checks import CheckContext
from factory_cli.config.defaults import resolve_defaults
from factory_cli.config.errors import Issue
from factory_cli.config.schema import JOB_MODELS, JobBase

STAGE_DATA = {"sft": "demo-sft-alpaca", "grpo": "demo-grpo-math"}


def job(backend: str, stage: str = "sft", model: str = "smollm2-135m-instruct", **sections: Any) -> JobBase:
    raw: dict[str, Any] = {
        "backend": backend,
        "stage": stage,
        "device": "cpu" if backend == "deepspeed" else "cuda",
        "model": {"name_or_path": model},
        "data": {"train": [STAGE_DATA[stage]]},
    }
    if stage == "grpo":
        raw["grpo"] = {"rewards": ["math_answer"]}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return resolve_defaults(JOB_MODELS[backend].model_validate(raw))


def triples(issues: Any) -> list[tuple[str, str, str | None, str]]:
    return [(i.path, i.message, i.hint, i.severity) for i in issues]


# ------------------------------------------------------------------------------------------------ deepspeed


def ds(**parallel: Any) -> list[tuple[str, str, str | None, str]]:
    return triples(check_deepspeed(job("deepspeed", parallel=parallel), CheckContext()))


def test_deepspeed_nvme_offload_without_path_and_zero() -> None:
    assert ds(offload="nvme") == [
        ("parallel.nvme_path", "offload: nvme needs a directory", "set parallel.nvme_path: /local_nvme", "error"),
        ("parallel.offload", "offload needs ZeRO (zero_stage 1-3)", "set parallel.zero_stage: 2 or 3", "error"),
        (
            "parallel.offload",
            "nvme offload of parameters needs zero_stage 3; only optimizer is offloaded",
            None,
            "warning",
        ),
    ]


def test_deepspeed_nvme_offload_at_each_zero_stage() -> None:
    nvme_warning = (
        "parallel.offload",
        "nvme offload of parameters needs zero_stage 3; only optimizer is offloaded",
        None,
        "warning",
    )
    assert ds(offload="nvme", nvme_path="/nvme", zero_stage=2) == [nvme_warning]
    assert ds(offload="nvme", nvme_path="/nvme", zero_stage=3) == []
    assert ds(offload="cpu", zero_stage=1) == []
    assert ds(offload="cpu", zero_stage=3) == []
    assert ds(offload="none", zero_stage=0) == []


def test_deepspeed_launcher_without_zero_is_ddp() -> None:
    ddp = (
        "parallel.launcher",
        "the deepspeed launcher without ZeRO is plain DDP",
        "launcher: auto is fine",
        "warning",
    )
    assert ds(launcher="deepspeed", zero_stage=0) == [ddp]
    assert ds(launcher="deepspeed", zero_stage=1) == []
    assert ds(launcher="torchrun", zero_stage=0) == []


def test_deepspeed_checks_ignore_other_backends() -> None:
    assert list(check_deepspeed(job("verl"), CheckContext())) == []


# ------------------------------------------------------------------------------------------------ megatron


@pytest.fixture
def no_engine_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_stack looks at this machine's engine checkouts only when they are configured: none here."""
    from factory_cli.backends.megatron.stack import BRIDGE_HOME, MEGATRON_LM_HOME, MINDSPEED_LLM_HOME

    for var in (BRIDGE_HOME, MEGATRON_LM_HOME, MINDSPEED_LLM_HOME):
        monkeypatch.delenv(var, raising=False)


def model_dir(tmp_path: Path, heads: int = 8, kv: int = 4, layers: int = 12, vocab: int = 1024, **extra: Any) -> str:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_hidden_layers": layers,
        "hidden_size": 64 * heads,
        "intermediate_size": 128,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": vocab,
        "max_position_embeddings": 4096,
        **extra,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def mg(model: str, max_length: int = 1024, **parallel: Any) -> list[tuple[str, str, str | None, str]]:
    the_job = job("megatron", model=model, parallel=parallel, data={"max_length": max_length})
    return triples(check_megatron(the_job, CheckContext()))


def test_megatron_world_counts_context_parallel(tmp_path: Path, no_engine_checkout: None) -> None:
    model = model_dir(tmp_path)
    assert mg(model, nproc_per_node=8, tp=2, pp=2, cp=2) == []
    assert mg(model, nproc_per_node=4, tp=2, cp=4) == [
        (
            "parallel",
            "world size 4 (nnodes 1 x nproc_per_node 4) is not divisible by tp 2 x pp 1 x cp 4 = 8",
            "world = DP x TP x PP x CP: change nproc_per_node or the parallel sizes",
            "error",
        )
    ]
    # pp alone and tp alone enter the product too
    assert mg(model, nproc_per_node=2, pp=4)[0][1].endswith("tp 1 x pp 4 x cp 1 = 4")
    assert mg(model, nnodes=2, nproc_per_node=3, tp=4)[0][1] == (
        "world size 6 (nnodes 2 x nproc_per_node 3) is not divisible by tp 4 x pp 1 x cp 1 = 4"
    )
    assert mg(model, nnodes=2, nproc_per_node=3, tp=2) == []


def test_megatron_expert_parallel_against_data_parallel(tmp_path: Path, no_engine_checkout: None) -> None:
    moe = model_dir(tmp_path, model_type="mixtral", num_local_experts=8, num_experts_per_tok=2)
    sp = {"sequence_parallel": True}
    # world 8 / tp 2 = DP 4: ep 4 folds inside it, ep 8 does not
    assert mg(moe, nproc_per_node=8, tp=2, ep=4, **sp) == []
    assert mg(moe, nproc_per_node=8, tp=2, ep=8, **sp) == [
        (
            "parallel.ep",
            "ep 8 does not divide data-parallel x context-parallel size 4 x 1 = 4 (Megatron places the "
            "expert-parallel group inside it)",
            "use an ep among [1, 2, 4], or more ranks",
            "error",
        )
    ]
    # DP 3: 3 divides DP but not the 8 experts, so it is not offered
    assert mg(moe, nproc_per_node=6, tp=2, ep=2, **sp) == [
        (
            "parallel.ep",
            "ep 2 does not divide data-parallel x context-parallel size 3 x 1 = 3 (Megatron places the "
            "expert-parallel group inside it)",
            "use an ep among [1], or more ranks",
            "error",
        )
    ]


def test_megatron_expert_parallel_needs_experts(tmp_path: Path, no_engine_checkout: None) -> None:
    dense = model_dir(tmp_path)
    assert mg(dense, nproc_per_node=2, ep=2) == [
        ("parallel.ep", "expert parallelism needs a mixture-of-experts model", "set parallel.ep: 1", "error")
    ]
    assert mg(dense, nproc_per_node=2, ep=1) == []


def test_megatron_sequence_parallel_and_vpp_need_model_parallel(tmp_path: Path, no_engine_checkout: None) -> None:
    model = model_dir(tmp_path)
    assert mg(model, sequence_parallel=True) == [
        (
            "parallel.sequence_parallel",
            "sequence parallel needs tp > 1",
            "set parallel.tp >= 2 or turn off",
            "error",
        )
    ]
    assert mg(model, vpp=2) == [
        (
            "parallel.vpp",
            "virtual pipeline stages need pp > 1",
            "remove parallel.vpp or set parallel.pp",
            "error",
        )
    ]
    assert mg(model, nproc_per_node=2, tp=2, sequence_parallel=True) == []
    assert mg(model, nproc_per_node=2, pp=2, vpp=2) == []


def test_megatron_sequence_split_by_tp_and_cp(tmp_path: Path, no_engine_checkout: None) -> None:
    model = model_dir(tmp_path)
    assert mg(model, max_length=1001, nproc_per_node=4, tp=4, sequence_parallel=True) == [
        (
            "data.max_length",
            "1001 is not divisible by tp 4 (sequence parallel splits the sequence over TP)",
            "use 1000",
            "error",
        )
    ]
    # without sequence parallel, TP does not split the sequence
    assert mg(model, max_length=1001, nproc_per_node=4, tp=4) == []
    assert mg(model, max_length=1000, nproc_per_node=2, cp=2) == []
    assert mg(model, max_length=1002, nproc_per_node=2, cp=2) == [
        (
            "data.max_length",
            "1002 is not divisible by 2 x cp = 4 (context-parallel load balancing)",
            "use 1000",
            "error",
        )
    ]
    assert mg(model, max_length=1001, nproc_per_node=1, cp=1) == []


def test_megatron_tp_against_heads_and_vocabulary(tmp_path: Path, no_engine_checkout: None) -> None:
    model = model_dir(tmp_path, heads=12, kv=4, vocab=1000)
    assert mg(model, nproc_per_node=3, tp=3) == [
        ("parallel.tp", "tp 3 does not divide kv heads 4", "valid sizes: [1, 2, 4]", "error"),
        (
            "parallel.tp",
            "tp 3 does not divide the model's vocabulary of 1000 tokens",
            "tp sizes that divide both the vocabulary and the 12 heads: [1, 2, 4]",
            "error",
        ),
    ]
    assert mg(model, nproc_per_node=4, tp=4) == []
    odd_heads = model_dir(tmp_path, heads=6, kv=6, vocab=1024)
    assert mg(odd_heads, nproc_per_node=4, tp=4) == [
        ("parallel.tp", "tp 4 does not divide attention heads 6", "valid sizes: [1, 2, 3, 6]", "error"),
        ("parallel.tp", "tp 4 does not divide kv heads 6", "valid sizes: [1, 2, 3, 6]", "error"),
    ]


def test_megatron_layers_against_pp_times_vpp(tmp_path: Path, no_engine_checkout: None) -> None:
    model = model_dir(tmp_path, layers=12)
    assert mg(model, nproc_per_node=4, pp=4) == []
    assert mg(model, nproc_per_node=4, pp=4, vpp=3) == []  # 12 layers = 4 x 3
    assert mg(model, nproc_per_node=4, pp=4, vpp=2) == [
        (
            "parallel.pp",
            "pp 4 x vpp 2 does not divide the model's 12 layers",
            "pipeline sizes that divide 12: [1, 2, 3, 4, 6, 12]",
            "error",
        )
    ]
    assert mg(model, nproc_per_node=5, pp=5) == [
        (
            "parallel.pp",
            "pp 5 does not divide the model's 12 layers",
            "pipeline sizes that divide 12: [1, 2, 3, 4, 6, 12]",
            "error",
        )
    ]


def test_megatron_size_two_is_checked_too(tmp_path: Path, no_engine_checkout: None) -> None:
    odd = model_dir(tmp_path, heads=8, kv=8, layers=9, vocab=1001)
    assert mg(odd, max_length=1001, nproc_per_node=2, tp=2, sequence_parallel=True) == [
        (
            "data.max_length",
            "1001 is not divisible by tp 2 (sequence parallel splits the sequence over TP)",
            "use 1000",
            "error",
        ),
        (
            "parallel.tp",
            "tp 2 does not divide the model's vocabulary of 1001 tokens",
            "tp sizes that divide both the vocabulary and the 8 heads: [1]",
            "error",
        ),
    ]
    assert mg(odd, nproc_per_node=2, pp=2) == [
        ("parallel.pp", "pp 2 does not divide the model's 9 layers", "pipeline sizes that divide 9: [1, 3, 9]", "error")
    ]


def test_megatron_tp_options_stop_at_64(tmp_path: Path, no_engine_checkout: None) -> None:
    model = model_dir(tmp_path, heads=130, kv=130, vocab=1300)
    issues = mg(model, nproc_per_node=3, tp=3)
    assert issues[-1] == (
        "parallel.tp",
        "tp 3 does not divide the model's vocabulary of 1300 tokens",
        "tp sizes that divide both the vocabulary and the 130 heads: [1, 2, 5, 10, 13, 26]",
        "error",
    )


def test_megatron_without_architecture_checks_sizes_only(no_engine_checkout: None) -> None:
    assert mg("nowhere/unknown-model", nproc_per_node=3, tp=3) == []


def test_megatron_checks_ignore_other_backends() -> None:
    assert list(check_megatron(job("deepspeed"), CheckContext())) == []


# ------------------------------------------------------------------------------------------------ verl


def vl(stage: str = "grpo", model: str = "nowhere/unknown-model", **sections: Any) -> list[Issue]:
    return list(check_verl(job("verl", stage=stage, model=model, **sections), CheckContext()))


def test_verl_rollout_tp_against_devices_and_heads(tmp_path: Path) -> None:
    issues = vl(parallel={"nproc_per_node": 4}, rollout={"tp": 3, "prompts_per_step": 12})
    assert triples(issues) == [
        ("rollout.tp", "rollout tp 3 does not divide the 4 devices", "use a divisor of it", "error")
    ]
    heads6 = model_dir(tmp_path, heads=6, kv=6)
    assert triples(vl(model=heads6, parallel={"nproc_per_node": 4}, rollout={"tp": 4, "prompts_per_step": 8})) == [
        ("rollout.tp", "rollout tp 4 does not divide attention heads 6", "valid sizes: [1, 2, 3, 6]", "error")
    ]
    assert vl(model=heads6, parallel={"nproc_per_node": 4}, rollout={"tp": 2, "prompts_per_step": 8}) == []


def test_verl_update_batch_in_whole_groups() -> None:
    # 4 prompts x 8 generations = 32 samples per step
    base: dict[str, Any] = {"grpo": {"num_generations": 8}, "parallel": {"nproc_per_node": 2}}
    assert vl(rollout={"prompts_per_step": 4, "update_batch_size": 16}, **base) == []
    assert triples(vl(rollout={"prompts_per_step": 4, "update_batch_size": 12}, **base)) == [
        (
            "rollout.update_batch_size",
            "12 samples per update is not a whole number of groups of 8",
            "use a multiple of grpo.num_generations (8)",
            "error",
        )
    ]
    assert triples(vl(rollout={"prompts_per_step": 4, "update_batch_size": 24}, **base)) == [
        (
            "rollout.update_batch_size",
            "32 samples per rollout step (4 prompts x 8) do not split into updates of 24",
            "use a divisor of 32",
            "error",
        )
    ]


def test_verl_samples_spread_over_devices() -> None:
    issues = vl(grpo={"num_generations": 3}, parallel={"nproc_per_node": 4}, rollout={"prompts_per_step": 5})
    assert triples(issues) == [
        (
            "rollout.prompts_per_step",
            "15 samples per step do not spread evenly over 4 devices",
            "make prompts_per_step x num_generations a multiple of the device count",
            "error",
        )
    ]
    assert vl(grpo={"num_generations": 4}, parallel={"nproc_per_node": 4}, rollout={"prompts_per_step": 5}) == []


def test_verl_sft_skips_the_rollout_arithmetic() -> None:
    assert vl(stage="sft", parallel={"nproc_per_node": 4}, rollout={"prompts_per_step": 5}) == []


def test_verl_checks_ignore_other_backends() -> None:
    assert list(check_verl(job("deepspeed"), CheckContext())) == []


class StackSpy:
    """Stands in for stack.stack_problems: records which engine and which needs check_stack asks about."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, engine: str, environ: Any, *, sft: bool, bridge: bool, local_impl: bool) -> list[Any]:
        from factory_cli.backends.megatron.stack import StackProblem

        self.calls.append({"engine": engine, "sft": sft, "bridge": bridge, "local_impl": local_impl})
        return [StackProblem(f"{engine} is missing", "install it")]


@pytest.fixture
def stack_spy(monkeypatch: pytest.MonkeyPatch) -> StackSpy:
    from factory_cli.backends.megatron import stack

    spy = StackSpy()
    monkeypatch.setattr(stack, "stack_problems", spy)
    return spy


def stack_job(device: str = "cuda", stage: str = "sft", **megatron: Any) -> Any:
    raw: dict[str, Any] = {
        "backend": "megatron",
        "stage": stage,
        "device": device,
        "model": {"name_or_path": "qwen2.5-7b-instruct"},
        "data": {"train": [STAGE_DATA.get(stage, "demo-pt")]},
        "megatron": megatron,
    }
    return resolve_defaults(JOB_MODELS["megatron"].model_validate(raw))


def test_stack_is_checked_only_where_the_engine_is_configured(stack_spy: StackSpy) -> None:
    from factory_cli.backends.megatron.checks import check_stack

    assert list(check_stack(stack_job(), {})) == []
    assert list(check_stack(stack_job(), {"MINDSPEED_LLM_HOME": "/ms"})) == []  # CUDA runs Megatron-LM
    assert list(check_stack(stack_job(device="cpu"), {"MEGATRON_LM_HOME": "/m"})) == []
    assert stack_spy.calls == []
    issues = list(check_stack(stack_job(), {"MEGATRON_LM_HOME": "/m"}))
    assert triples(issues) == [("megatron", "megatron-lm is missing", "install it", "error")]
    # the Bridge checkout alone counts for Megatron-LM, not for MindSpeed-LLM
    assert len(list(check_stack(stack_job(), {"MEGATRON_BRIDGE_HOME": "/b"}))) == 1
    assert list(check_stack(stack_job(device="npu"), {"MEGATRON_BRIDGE_HOME": "/b"})) == []
    assert [c["engine"] for c in stack_spy.calls] == ["megatron-lm", "megatron-lm"]


def test_stack_engine_follows_the_device_and_use_mindspeed(stack_spy: StackSpy) -> None:
    from factory_cli.backends.megatron.checks import check_stack

    env = {"MEGATRON_LM_HOME": "/m", "MINDSPEED_LLM_HOME": "/ms"}
    list(check_stack(stack_job(device="npu"), env))
    list(check_stack(stack_job(device="cuda", use_mindspeed=True), env))
    list(check_stack(stack_job(device="cuda", use_mindspeed=False), env))
    list(check_stack(stack_job(device="cuda"), env))
    assert [c["engine"] for c in stack_spy.calls] == ["mindspeed-llm", "mindspeed-llm", "megatron-lm", "megatron-lm"]


def test_stack_needs_follow_the_job(stack_spy: StackSpy) -> None:
    from factory_cli.backends.megatron.checks import check_stack

    env = {"MEGATRON_LM_HOME": "/m"}
    list(check_stack(stack_job(), env))
    list(check_stack(stack_job(stage="pt", load="/ckpt", save_hf=False), env))
    list(check_stack(stack_job(stage="pt", load="/ckpt", save_hf=True), env))
    list(check_stack(stack_job(extra_args=["--transformer-impl", "local"]), env))
    list(check_stack(stack_job(extra_args=["--foo", "--transformer-impl", "local", "--bar"]), env))
    list(check_stack(stack_job(extra_args=["--transformer-impl", "transformer_engine"]), env))
    list(check_stack(stack_job(extra_args=["local", "--transformer-impl"]), env))
    assert [(c["sft"], c["bridge"], c["local_impl"]) for c in stack_spy.calls] == [
        (True, True, False),
        (False, False, False),
        (False, True, False),
        (True, True, True),
        (True, True, True),
        (True, True, False),
        (True, True, False),
    ]


# ------------------------------------------------------------------------------------------------ verl: steps


def example_issues(example: str, path: str, *overrides: str) -> list[tuple[str, str, str | None, str]]:
    """The issues `factory check` finds at `path` in a shipped example with `overrides`."""
    from factory_cli.config.errors import JobError
    from factory_cli.config.validate import load_and_validate
    from tests.unit.plan_helpers import EXAMPLES

    try:
        issues = list(load_and_validate(EXAMPLES / example, list(overrides)).warnings)
    except JobError as exc:
        issues = list(exc.issues)
    return [t for t in triples(issues) if t[0] == path]


ZERO_STEPS = "verl drops the last partial batch, so the job would run 0 optimizer steps"


def test_verl_prompts_filling_exactly_one_step_train() -> None:
    # the shipped GRPO data holds 300 prompts
    assert example_issues("verl_grpo.yaml", "rollout.prompts_per_step", "rollout.prompts_per_step=300") == []
    assert example_issues("verl_grpo.yaml", "rollout.prompts_per_step", "rollout.prompts_per_step=304") == [
        (
            "rollout.prompts_per_step",
            f"300 training prompts fill no rollout step of 304 prompts: {ZERO_STEPS}",
            "set rollout.prompts_per_step: 300 or less, or add prompts",
            "error",
        )
    ]


def test_verl_prompts_fix_keeps_updates_whole() -> None:
    # updates of 88 samples = 11 prompts of 8: the largest step the data fills is 297 prompts
    overrides = ("rollout.prompts_per_step=308", "rollout.update_batch_size=88")
    assert example_issues("verl_grpo.yaml", "rollout.prompts_per_step", *overrides) == [
        (
            "rollout.prompts_per_step",
            f"300 training prompts fill no rollout step of 308 prompts: {ZERO_STEPS}",
            "set rollout.prompts_per_step: 297 or less, or add prompts",
            "error",
        )
    ]
    # the default update (the whole step) shrinks with the step
    overrides = ("rollout.prompts_per_step=301", "rollout.update_batch_size=null")
    assert example_issues("verl_grpo.yaml", "rollout.prompts_per_step", *overrides)[0][2] == (
        "set rollout.prompts_per_step: 300 or less, or add prompts"
    )


def test_verl_prompts_with_no_smaller_step_that_fits() -> None:
    # 4096 devices x 8 generations: a step needs a multiple of 512 prompts, and there are 300
    overrides = ("parallel.nproc_per_node=4096", "rollout.prompts_per_step=512")
    assert example_issues("verl_grpo.yaml", "rollout.prompts_per_step", *overrides) == [
        (
            "rollout.prompts_per_step",
            f"300 training prompts fill no rollout step of 512 prompts: {ZERO_STEPS}",
            "add prompts",
            "error",
        )
    ]


def test_verl_sft_when_the_eval_ratio_leaves_no_training_rows() -> None:
    assert example_issues("verl_sft.yaml", "train.global_batch_size", "data.eval_ratio=0.999") == [
        (
            "train.global_batch_size",
            f"0 training rows (60 held out by data.eval_ratio) fill no global batch of 16: {ZERO_STEPS}",
            "lower train.micro_batch_size to 1 and the global batch to 0 or less, or add rows",
            "error",
        )
    ]


def test_verl_eval_data_under_one_global_batch() -> None:
    overrides = ("data.eval=[demo-sft-messages]", "train.global_batch_size=64", "train.micro_batch_size=4")
    assert example_issues("verl_sft.yaml", "data.eval", *overrides) == [
        (
            "data.eval",
            "60 eval rows fill no global batch of 64: verl validates whole batches only, so val/loss would be NaN",
            "hold out at least 64 rows",
            "warning",
        )
    ]
    assert example_issues("verl_sft.yaml", "data.eval", "data.eval=[demo-sft-messages]") == []
    assert example_issues("verl_sft.yaml", "data.eval_ratio", "data.eval_ratio=0.2") == [
        (
            "data.eval_ratio",
            "12 eval rows fill no global batch of 16: verl validates whole batches only, so val/loss would be NaN",
            "hold out at least 16 rows",
            "warning",
        )
    ]


def test_verl_one_prompt_is_the_smallest_step(tmp_path: Path) -> None:
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"prompt": "What is 2 + 2?", "answer": "4"}) + "\n")
    overrides = (f"data.train=[{data}]", "rollout.prompts_per_step=2", "rollout.update_batch_size=null")
    assert example_issues("verl_grpo.yaml", "rollout.prompts_per_step", *overrides) == [
        (
            "rollout.prompts_per_step",
            f"1 training prompts fill no rollout step of 2 prompts: {ZERO_STEPS}",
            "set rollout.prompts_per_step: 1 or less, or add prompts",
            "error",
        )
    ]
