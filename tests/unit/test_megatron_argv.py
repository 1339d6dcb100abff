"""Every planned Megatron-LM / MindSpeed-LLM argv parses with the engine's own flags, arities and choices.

The megatron-core wheel does not ship megatron/training/arguments.py, so the parser is rebuilt from a record of it
(tests/unit/megatron_flags/*.json, made by tests/unit/megatron_flags/record.py from the named engine version and
commit). A renamed or removed flag, a switch given a value or a value outside the engine's choices fails here.
MindSpeed-LLM's parser is assembled at run time from three code bases and needs torch_npu, so its record is read
from their sources (every add_argument call); there every flag of every NPU step (convert, preprocess, train,
export) must be one of them with an arity and values it accepts.
Plans: every megatron example and every rendered megatron template, on CUDA and NPU, each with its rows counted (so
--train-iters and the WSD flags appear) and under option variants that add flags. The factory-side steps (the
pretraining preprocess, the Bridge export) parse with their own parsers.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from factory_cli.backends.base import Plan
from factory_cli.backends.megatron import bridge_export, indexed, roundtrip
from factory_cli.config.defaults import DeviceFacts, resolve_device_defaults
from factory_cli.config.errors import JobError, UsageError
from factory_cli.config.schema import MegatronJob
from factory_cli.config.validate import load_and_validate
from tests.unit.plan_helpers import EXAMPLES
from tests.unit.test_render import _fill_placeholders, _render

FLAGS_DIR = Path(__file__).resolve().parent / "megatron_flags"
MEGATRON_LM_RECORD = FLAGS_DIR / "megatron_lm_core_v0.17.0.json"
MINDSPEED_LLM_RECORD = FLAGS_DIR / "mindspeed_llm_26.1.0.json"
BRIDGE_RECORD = FLAGS_DIR / "megatron_bridge_v0.6.0.json"

# Option variants that add train flags beyond the examples' own.
VARIANTS: list[tuple[str, ...]] = [
    (),
    ("train.scheduler=warmup_stable_decay",),
    ("train.scheduler=linear", "output.resume=never", "megatron.recompute=full"),
    ("logging.report_to=[tensorboard, wandb]", "model.attn_implementation=flash_attention_2", "data.eval_ratio=0.1"),
    ("parallel.nproc_per_node=8", "parallel.tp=2", "parallel.pp=2", "parallel.vpp=2", "parallel.cp=2"),
]

# Mixtures of experts: every router and expert layout the planner writes (renormalized top-k, Qwen2-MoE's gated
# shared expert without renormalization, Mixtral's expert width, EP with TP and sequence parallel, a layer pattern
# of dense and MoE layers from a local config.json), on an 8-device node.
MOE_ON_8 = ("parallel.nproc_per_node=8", "parallel.tp=1", "parallel.sequence_parallel=false")
FROM_MEGATRON = ("megatron.load=/checkpoints/qwen2-moe", "megatron.save_hf=false")
MOE_VARIANTS: list[tuple[str, ...]] = [
    ("model.name_or_path=qwen3-30b-a3b", *MOE_ON_8, "parallel.ep=8"),
    ("model.name_or_path=qwen3-30b-a3b", "parallel.nproc_per_node=8", "parallel.tp=2",
     "parallel.sequence_parallel=true", "parallel.ep=4", "model.moe.aux_loss_coef=0.01"),
    # Megatron Bridge has no Qwen2-MoE converter: on CUDA these start from a Megatron checkpoint.
    ("model.name_or_path=qwen1.5-moe-a2.7b-chat", *MOE_ON_8, "parallel.ep=4", *FROM_MEGATRON),
    ("model.name_or_path=qwen2-57b-a14b-instruct", *MOE_ON_8, "parallel.ep=8", "parallel.pp=2", *FROM_MEGATRON),
    ("model.name_or_path=mixtral-8x7b-instruct", *MOE_ON_8, "parallel.ep=2", "parallel.pp=2"),
]  # fmt: skip


def sparse_moe_variant(tmp_path: Path) -> tuple[str, ...]:
    """A local Qwen3-MoE config.json with dense layers among the MoE ones (--moe-layer-freq)."""
    config = {
        "model_type": "qwen3_moe", "num_hidden_layers": 8, "hidden_size": 256, "intermediate_size": 512,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 32, "vocab_size": 1024,
        "max_position_embeddings": 4096, "rope_theta": 1e6, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
        "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 64, "decoder_sparse_step": 2,
        "mlp_only_layers": [3], "norm_topk_prob": True, "router_aux_loss_coef": 0.001,
    }  # fmt: skip
    model = tmp_path / "sparse-qwen3-moe"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return (f"model.name_or_path={model}", *MOE_ON_8, "parallel.ep=8")


MOE_FLAGS = (
    "--num-experts", "--moe-router-topk", "--moe-ffn-hidden-size", "--moe-shared-expert-intermediate-size",
    "--moe-router-pre-softmax", "--moe-router-dtype", "--moe-router-load-balancing-type", "--moe-aux-loss-coeff",
    "--moe-token-dispatcher-type", "--moe-grouped-gemm", "--expert-model-parallel-size", "--moe-layer-freq",
)  # fmt: skip


def record_parser(record: dict[str, Any]) -> argparse.ArgumentParser:
    """An argparse parser with the recorded flags' arities and choices."""
    parser = argparse.ArgumentParser(allow_abbrev=False, exit_on_error=False, add_help=False)
    for flag, spec in record["flags"].items():
        nargs = spec["nargs"]
        if nargs == 0:
            parser.add_argument(flag, action="store_true")
        elif nargs == 1:
            parser.add_argument(flag, choices=spec.get("choices"))
        else:
            parser.add_argument(flag, nargs=nargs, choices=spec.get("choices"))
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    args, unknown = parser.parse_known_args(argv)
    assert not unknown, f"not flags of the engine: {unknown}"
    return args


def check_static(flags: dict[str, dict[str, Any]], argv: list[str]) -> None:
    """argv against a source-read record: known flags, a value count some definition accepts, recorded choices."""
    i = 0
    while i < len(argv):
        flag = argv[i]
        assert flag.startswith("--") and flag in flags, f"not a flag of the engine: {flag} in {argv}"
        j = i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            j += 1
        values = argv[i + 1 : j]
        arities = flags[flag]["nargs"]
        n = len(values)
        fits = {0: n == 0, 1: n == 1, "?": n <= 1, "+": n >= 1, "*": True, "any": True}
        assert any(fits.get(a, n == a) for a in arities), f"{flag} takes {arities} values, got {values}"
        choices = flags[flag]["choices"]
        if choices is not None:
            assert all(v in choices for v in values), f"{flag} {values} not among {choices}"
        i = j


def step_flags(argv: list[str]) -> list[str]:
    """The flags of a step argv: after the script (unwrapped from the Ascend prelude; the guard skipped)."""
    if argv[:2] == ["bash", "-c"]:
        argv = shlex.split(argv[2].split("; exec ", 1)[1])
    script = next(i for i, a in enumerate(argv) if a.endswith(".py"))
    return argv[script + 1 :]


def plans_of(job_file: Path, variants: list[tuple[str, ...]], device: str = "cuda") -> list[Plan]:
    """The plans of a job on `device` under each variant that the engine accepts, with 1000 rows counted."""
    from factory_cli.backends.megatron.backend import model_facts
    from factory_cli.backends.megatron.plan import plan_megatron

    plans = []
    for overrides in variants:
        try:
            job = load_and_validate(job_file, list(overrides)).job
        except JobError:
            continue  # a variant the model's shape does not allow (checked by factory check, tested elsewhere)
        resolved = resolve_device_defaults(job, DeviceFacts(device, bf16=True))
        assert isinstance(resolved, MegatronJob)
        try:
            plans.append(plan_megatron(resolved, device, model_facts(resolved), train_samples=1000))
        except UsageError:
            continue  # what Megatron-LM does not run (dpo, lora) is refused by the planner, tested elsewhere
    return plans


def job_files(tmp_path: Path) -> list[Path]:
    files = sorted(EXAMPLES.glob("megatron_*.yaml"))
    for stage in ("pt", "sft", "dpo"):
        rendered = tmp_path / f"template_{stage}.yaml"
        text = _fill_placeholders(_render("megatron", stage, "full"), stage, tmp_path / f"run-{stage}")
        rendered.write_text(text, encoding="utf-8")
        files.append(rendered)
    return files


def test_the_record_names_its_engine_version() -> None:
    record = json.loads(MEGATRON_LM_RECORD.read_text(encoding="utf-8"))
    assert record["engine"] == "megatron-lm" and record["version"] == "core_v0.17.0"
    assert len(record["commit"]) == 40 and len(record["flags"]) > 500
    parser = record_parser(record)
    with pytest.raises(AssertionError, match="not flags of the engine"):
        parse(parser, ["--sft-prompt-format", "default"])  # a renamed flag fails
    with pytest.raises(argparse.ArgumentError):
        parse(parser, ["--lr-decay-style", "cosine_with_min_lr"])  # a value outside the choices fails


def test_every_planned_train_argv_parses_with_megatron_lm(tmp_path: Path) -> None:
    parser = record_parser(json.loads(MEGATRON_LM_RECORD.read_text(encoding="utf-8")))
    seen: set[str] = set()
    count = 0
    moe = [*MOE_VARIANTS, sparse_moe_variant(tmp_path)]
    moe_plans = 0
    for job_file in job_files(tmp_path):
        variants = VARIANTS if "dpo" in job_file.name else [*VARIANTS, *moe]
        for plan in plans_of(job_file, variants):
            args = plan.engine_config["train_args"]
            parsed = parse(parser, args)
            seen |= {a for a in args if a.startswith("--")}
            count += 1
            if parsed.num_experts is not None:
                moe_plans += 1
                assert parsed.moe_router_load_balancing_type == ["aux_loss"]
    # Both stages Megatron-LM trains, every variant's flags.
    for flag in ("--sft", "--lr-wsd-decay-iters", "--num-layers-per-virtual-pipeline-stage", "--context-parallel-size"):
        assert flag in seen
    assert set(MOE_FLAGS) <= seen and "--moe-shared-expert-gate" in seen
    print(f"megatron-lm argv parsed: {count} plans ({moe_plans} MoE), {len(seen)} distinct flags")
    assert count >= 16 and moe_plans >= 12


def test_cuda_convert_parses_with_megatron_bridge(tmp_path: Path) -> None:
    """The HF -> Megatron step runs Bridge's scripts/conversion/run_conversion.py import (v0.6.0's parser)."""
    record = json.loads(BRIDGE_RECORD.read_text(encoding="utf-8"))
    parser = record_parser({"flags": record["commands"]["import"]})
    count = 0
    for job_file in job_files(tmp_path):
        for plan in plans_of(job_file, [(), ("train.precision=fp32",)]):
            (convert,) = [s.argv for s in plan.steps if s.name == "convert"]
            script = next(i for i, a in enumerate(convert) if a.endswith("run_conversion.py"))
            assert convert[script + 1] == "import"
            args = parse(parser, convert[script + 2 :])
            assert args.device == "cpu" and args.torch_dtype in ("bfloat16", "float32")
            count += 1
    assert count >= 4


def test_factory_steps_parse_with_their_own_parsers(tmp_path: Path) -> None:
    for job_file in job_files(tmp_path):
        for plan in plans_of(job_file, [()]):
            for step in plan.steps:
                argv = step.argv
                if argv[1:3] == ["-m", "factory_cli.backends.megatron.indexed"]:
                    args = indexed.build_parser().parse_args(argv[3:])
                    assert args.run_dir == Path(plan.run_dir) and args.engine_home == "$MEGATRON_LM_HOME"
                elif argv[1:3] == ["-m", "factory_cli.backends.megatron.bridge_export"]:
                    assert bridge_export.build_parser().parse_args(argv[3:]).hf_path.endswith("final")


NPU_VARIANTS: list[tuple[str, ...]] = [
    *VARIANTS,
    ("method.type=lora",),
    ("data.packing=false", "dpo.loss=robust", "dpo.label_smoothing=0.1"),
]


def test_every_planned_npu_step_parses_with_mindspeed_llm(tmp_path: Path) -> None:
    record = json.loads(MINDSPEED_LLM_RECORD.read_text(encoding="utf-8"))
    assert [s["name"] for s in record["sources"]] == ["Megatron-LM", "MindSpeed", "MindSpeed-LLM"]
    flags = record["flags"]
    with pytest.raises(AssertionError, match="not a flag of the engine"):
        check_static(flags, ["--pack-data"])
    with pytest.raises(AssertionError, match="not among"):
        check_static(flags, ["--prompt-type", "qwen2.5"])
    seen: dict[str, int] = {}
    moe_flags: set[str] = set()
    moe = [*MOE_VARIANTS, sparse_moe_variant(tmp_path)]
    for job_file in job_files(tmp_path):
        variants = [*NPU_VARIANTS, *moe] if "dpo" not in job_file.name else [(), ("dpo.loss=robust",), moe[0]]
        for plan in plans_of(job_file, variants, device="npu"):
            for step in plan.steps:
                if step.name in ("verify", "check-export"):
                    argv = shlex.split(step.argv[2].split("; exec ", 1)[1])
                    assert argv[1:3] == ["-m", "factory_cli.backends.megatron.roundtrip"]
                    roundtrip.build_parser().parse_args(argv[3:])
                elif step.name == "preprocess" and plan.stage == "pt":  # factory's own data step (indexed.py)
                    argv = shlex.split(step.argv[2].split("; exec ", 1)[1])
                    assert argv[1:3] == ["-m", "factory_cli.backends.megatron.indexed"]
                    assert indexed.build_parser().parse_args(argv[3:]).engine_home == "$MINDSPEED_LLM_HOME"
                else:
                    check_static(flags, step_flags(step.argv))
                    moe_flags |= {a for a in step_flags(step.argv) if a.startswith(("--moe", "--num-experts"))}
                seen[step.name] = seen.get(step.name, 0) + 1
    print(f"mindspeed-llm argv parsed: {seen}")
    steps = {"convert", "roundtrip", "verify", "preprocess", "train", "export", "check-export"}
    assert set(seen) == steps and seen["train"] >= 20
    assert {"--num-experts", "--moe-intermediate-size", "--moe-grouped-gemm", "--moe-layer-freq"} <= moe_flags
