"""factory against the real verl, run by verl's own interpreter (tests/engines/test_verl_contract.py starts it).

    .venv-verl/bin/python tests/engines/verl_probe.py REPORT.json WORK_DIR

One process does every check (verl's import alone takes seconds) and writes a JSON report; the pytest side asserts on
it. Checked:
* every hydra override of every plan (examples/verl_*.yaml with variants, some on a mixture-of-experts model; every
  rendered verl template; on cuda and npu) composes against verl's packaged `ppo_trainer` / `sft_trainer_engine`
  config; GRPO configs pass verl's `validate_config`, SFT configs become verl's engine / optimizer / checkpoint
  dataclasses;
* factory's SFT parquet through verl's SFT dataset factory (`data.custom_cls`) and its RL parquet through
  RLHFDataset: the chat template gets each row's messages and tools exactly;
* the generated compute_score through verl's reward managers `naive` and `dapo` (overlong buffer on): each reward
  gets exactly the canonical row, and the overlong penalty is added;
* every metric name backend.METRIC_ALIASES reads is produced by verl.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEVICES = ("cuda", "npu")
MOE = "model.name_or_path={work}/moe-model"
# Variants of the shipped examples and of one rendered template: every branch of the planner that the jobs alone do
# not take. {work} is the probe's work folder.
VARIANTS: dict[str, list[tuple[str, ...]]] = {
    "example verl_grpo.yaml": [
        ("grpo.loss=grpo", "grpo.overlong.buffer_length=0", "grpo.dynamic_sampling=false"),
        ("grpo.loss=dr_grpo",),
        ("grpo.loss=gspo",),
        ("method.type=lora", "rollout.engine=sglang"),
        ("parallel.strategy=megatron", "train.scheduler=linear"),
        ("parallel.param_offload=true", "parallel.optimizer_offload=true", "train.gradient_checkpointing=true"),
        ("data.eval_ratio=0.1", "output.save_total_limit=2", "logging.report_to=[tensorboard]"),
        ("output.resume=never", "train.epochs=null", "train.max_steps=16", "train.scheduler=constant"),
        ("parallel.nnodes=2", "rollout.prompts_per_step=64"),
        # A mixture of experts ({work}/moe-model, moe_model below): FSDP, and verl's megatron engine with EP.
        (MOE, "grpo.loss=gspo", "rollout.expert_parallel=true", "model.moe.aux_loss_coef=0.001"),
        (MOE, "parallel.strategy=megatron", "parallel.tp=2", "parallel.ep=4", "model.moe.aux_loss_coef=0.01"),
        (MOE, "parallel.strategy=megatron", "parallel.pp=2", "parallel.ep=2", "rollout.routing_replay=R2"),
        (
            MOE,
            "parallel.strategy=megatron",
            "parallel.ep=8",
            "rollout.routing_replay=R3",
            "rollout.expert_parallel=true",
        ),
    ],
    "example verl_sft.yaml": [
        ("data.packing=true", "parallel.sequence_parallel=2", "train.scheduler=constant"),
        ("data.eval_ratio=0.3", "output.save_total_limit=2", "train.epochs=null", "train.max_steps=5"),
        ("parallel.strategy=fsdp", "output.resume={work}/checkpoint"),
        ("parallel.param_offload=true", "parallel.optimizer_offload=true", "train.gradient_checkpointing=true"),
    ],
    "template sft full qwen2.5-0.5b-instruct": [
        ("parallel.strategy=megatron",),
        ("parallel.nproc_per_node=2", "train.scheduler=constant"),
        (
            MOE,
            "parallel.strategy=megatron",
            "parallel.nproc_per_node=2",
            "parallel.ep=2",
            "model.moe.aux_loss_coef=0.001",
        ),
    ],
}
TEMPLATE_MODELS = ("qwen2.5-0.5b-instruct", "llama-3.2-1b-instruct", "qwen3-0.6b")
TEMPLATE_DATASETS = {"sft": "demo-sft-messages", "grpo": "demo-grpo-math"}
# A byte-level chat template that writes each message and the tools as JSON: what it renders is what it got.
CHAT_TEMPLATE = (
    "{%- if tools %}<tools>{{ tools | tojson }}</tools>{%- endif %}"
    "{%- for m in messages %}<|{{ m.role }}|>{{ m | tojson }}<|end|>{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{%- endif %}"
)


class Report:
    """Checks done, failures (each with what failed), and what was skipped and why."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {"failures": [], "skipped": [], "composed": {}, "counts": {}}

    def fail(self, section: str, label: str, detail: str) -> None:
        self.data["failures"].append({"section": section, "label": label, "detail": detail[-3000:]})

    def guard(self, section: str, label: str, check: Callable[..., Any], *args: Any) -> Any:
        """check(*args), or None with the failure reported."""
        try:
            return check(*args)
        except Exception:  # every failure is reported, the probe goes on
            self.fail(section, label, traceback.format_exc())
            return None

    def count(self, key: str, by: int = 1) -> None:
        self.data["counts"][key] = self.data["counts"].get(key, 0) + by


# ------------------------------------------------------------------------------------------------ plans


def resolved(job_file: Path, overrides: tuple[str, ...], device: str) -> Any:
    from factory_cli.config.defaults import DeviceFacts, resolve_device_defaults
    from factory_cli.config.validate import load_and_validate

    job = load_and_validate(job_file, list(overrides)).job
    return resolve_device_defaults(job, DeviceFacts(device, bf16=True))  # type: ignore[arg-type]


def plan_of(job_file: Path, overrides: tuple[str, ...], device: str) -> Any:
    from factory_cli.backends import get_backend

    return get_backend("verl").plan(resolved(job_file, overrides, device), device)


def rendered_templates(work: Path) -> Iterator[tuple[str, Path]]:
    """Every verl template, rendered for each model and method and filled in as a user would."""
    from factory_cli.config.render import BACKEND_METHODS, TemplateChoice, render_job, resolve_choice
    from factory_cli.config.schema import SUPPORTED_STAGES

    for stage in SUPPORTED_STAGES["verl"]:
        for method in BACKEND_METHODS["verl"]:
            for model in TEMPLATE_MODELS:
                choice = TemplateChoice("verl", stage, model, method, "auto", TEMPLATE_DATASETS[stage])
                text = render_job(resolve_choice(choice))
                run = work / "runs" / f"{stage}-{method}-{model}"
                filled = re.sub(r'^(\s*dir:\s+)"\*\*\*"', rf"\g<1>{run.as_posix()}", text, flags=re.M)
                filled = re.sub(r'^(\s*-\s+)"\*\*\*"', r"\g<1>math_answer", filled, flags=re.M)
                path = work / "templates" / f"verl-{stage}-{method}-{model}.yaml"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(filled, encoding="utf-8")
                yield f"template {stage} {method} {model}", path


def all_plans(report: Report, work: Path) -> list[tuple[str, Any]]:
    """(label, plan) for every example and rendered template, and their variants, on each device."""
    from factory_cli.config.validate import load_and_validate

    examples = sorted((REPO / "examples").glob("verl_*.yaml"))
    templates = list(rendered_templates(work))
    report.data["counts"]["examples"] = len(examples)
    report.data["counts"]["templates"] = len(templates)
    bases = [(f"example {example.name}", example) for example in examples] + templates
    # Examples and templates plan for each device their job allows; the variants plan for cuda.
    jobs = [(label, path, (), DEVICES) for label, path in bases]
    (work / "checkpoint").mkdir(exist_ok=True)
    moe_model(work / "moe-model")
    for base, variants in VARIANTS.items():
        path = dict(bases)[base]
        for variant in variants:
            overrides = tuple(o.format(work=work) for o in variant)
            jobs.append((f"{base} + {' '.join(variant)}", path, overrides, ("cuda",)))
    plans = []
    for label, path, overrides, devices in jobs:
        job = report.guard("plan", label, lambda p, o: load_and_validate(p, list(o)).job, path, overrides)
        if job is None:
            continue
        for device in (job.device,) if job.device in ("cpu", "cuda", "npu") else devices:
            plan = report.guard("plan", f"{label} [{device}]", plan_of, path, overrides, device)
            if plan is not None:
                plans.append((f"{label} [{device}]", plan))
    return plans


def moe_model(folder: Path) -> None:
    """A Qwen3-MoE config.json (8 experts, 2 per token; no weights): what factory's checks read for the MoE variants."""
    from transformers import Qwen3MoeConfig

    shape = {"hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32, "num_hidden_layers": 4}
    heads = {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}
    config = Qwen3MoeConfig(vocab_size=256, num_experts=8, num_experts_per_tok=2, **shape, **heads)
    config.architectures = ["Qwen3MoeForCausalLM"]
    config.save_pretrained(folder)


# ------------------------------------------------------------------------------------------------ configs


def vllm_lora_check_stub(report: Report) -> None:
    """validate_config asks vLLM for its largest LoRA rank; without vLLM that one check is skipped (reported)."""
    import importlib.util
    import types

    if importlib.util.find_spec("vllm") is not None:
        return
    # verl's vllm_rollout package cannot be imported without vLLM: stand-ins for the package and its utils module.
    package = types.ModuleType("verl.workers.rollout.vllm_rollout")
    package.__path__ = []
    utils = types.ModuleType("verl.workers.rollout.vllm_rollout.utils")
    utils.get_vllm_max_lora_rank = lambda rank: rank  # type: ignore[attr-defined]
    sys.modules[package.__name__], sys.modules[utils.__name__] = package, utils
    report.data["skipped"].append("validate_config's vLLM LoRA-rank check (get_vllm_max_lora_rank): vllm not installed")


def validated(cfg: Any) -> bool:
    """verl's validate_config, called as main_ppo calls it."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Disabled critic as algorithm.adv_estimator != gae"
        validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    return True


def check_configs(report: Report, plans: list[tuple[str, Any]], config_dir: str, model_dir: Path) -> None:
    """Compose every plan's overrides against verl's packaged config; validate what verl validates."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from verl.utils.config import omega_conf_to_dataclass

    vllm_lora_check_stub(report)
    keys: set[str] = set()
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        for label, plan in plans:
            overrides = plan.engine_config["overrides"]
            name = "ppo_trainer" if plan.stage == "grpo" else "sft_trainer_engine"
            cfg = report.guard("compose", label, lambda n, o: compose(n, overrides=o), name, overrides)
            if cfg is None:
                continue
            report.count("plans composed")
            report.count("overrides composed", len(overrides))
            keys.update(o.split("=", 1)[0].lstrip("+") for o in overrides)
            report.data["composed"].setdefault(name, []).append(label)
            if plan.stage == "grpo":
                if report.guard("validate_config", label, validated, cfg):
                    report.count("validate_config passed")
                sections = ("actor_rollout_ref.model", "actor_rollout_ref.rollout")
            else:
                sections = ("model", "engine", "optim", "checkpoint")
            # Each section as the dataclass verl's workers build from it (the model read from a stand-in folder).
            model = sections[0]
            OmegaConf.update(cfg, f"{model}.path", str(model_dir), merge=False)
            built = [
                report.guard(f"{s} dataclass", label, omega_conf_to_dataclass, OmegaConf.select(cfg, s))
                for s in sections
            ]
            if all(c is not None for c in built):
                report.count("section dataclasses built", len(sections))
        # The control: a key verl does not declare fails to compose, so a renamed key fails this probe.
        try:
            compose("ppo_trainer", overrides=["actor_rollout_ref.actor.ppo_mini_batch_size_renamed=4"])
            report.data["control"] = "an undeclared key composed"
        except Exception as exc:
            report.data["control"] = f"refused: {type(exc).__name__}"
    report.data["counts"]["distinct override keys"] = len(keys)


# ------------------------------------------------------------------------------------------------ data


def byte_tokenizer(folder: Path) -> Any:
    """A byte-level tokenizer (no merges: a concatenation tokenizes as the concatenated parts) with CHAT_TEMPLATE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: index for index, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return tokenizer


def stand_in_model(folder: Path) -> Path:
    """A model folder verl's HFModelConfig reads (config and tokenizer, no weights): a one-layer Llama."""
    from transformers import LlamaConfig

    tokenizer = byte_tokenizer(folder)
    shape = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = LlamaConfig(vocab_size=len(tokenizer), num_key_value_heads=1, architectures=["LlamaForCausalLM"], **shape)
    config.save_pretrained(folder)
    return folder


class Spy:
    """Records what the chat template is asked to render (messages and tools) in a file, so that calls made in a
    forked process (RLHFDataset's prompt filter runs in one) are recorded too; then renders it."""

    def __init__(self, tokenizer: Any, log: Path) -> None:
        self.log = log
        log.unlink(missing_ok=True)
        original = tokenizer.apply_chat_template

        def apply(conversation: Any, *args: Any, **kwargs: Any) -> Any:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps([conversation, kwargs.get("tools")]) + "\n")
            return original(conversation, *args, **kwargs)

        tokenizer.apply_chat_template = apply

    @property
    def calls(self) -> list[tuple[Any, Any]]:
        lines = self.log.read_text(encoding="utf-8").splitlines() if self.log.is_file() else []
        return [tuple(json.loads(line)) for line in lines]  # type: ignore[misc]

    def clear(self) -> None:
        self.log.unlink(missing_ok=True)


def rendering(messages: list[dict[str, Any]], tools: Any) -> str:
    """What CHAT_TEMPLATE renders for exactly these messages and tools."""
    head = f"<tools>{json.dumps(tools, ensure_ascii=False)}</tools>" if tools else ""
    return head + "".join(f"<|{m['role']}|>{json.dumps(m, ensure_ascii=False)}<|end|>" for m in messages)


def check_sft_data(report: Report, config_dir: str, work: Path, tokenizer: Any) -> None:
    """Factory's SFT parquet through verl's SFT dataset factory: the template sees each row exactly."""
    import pyarrow.parquet as pq
    from hydra import compose, initialize_config_dir
    from verl.trainer.sft_trainer import create_sft_dataset

    from factory_cli.backends.verl.data import SFT_DATASET_PAIRS, verl_sft_row, verl_table
    from tests.unit.test_verl_data import SFT_ROWS

    plan = plan_of(REPO / "examples" / "verl_sft.yaml", (), "cuda")
    path = work / "sft.parquet"
    pq.write_table(verl_table([verl_sft_row(r) for r in SFT_ROWS]), path)
    overrides = list(plan.engine_config["overrides"])
    overrides += [f"{k}={v}" for k, v in SFT_DATASET_PAIRS if not any(o.startswith(f"{k}=") for o in overrides)]
    overrides += ["data.max_length=4096", "data.truncation=error"]
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose("sft_trainer_engine", overrides=overrides)
    spy = Spy(tokenizer, work / "sft_template_calls.jsonl")
    dataset = create_sft_dataset([str(path)], cfg.data, tokenizer, None)
    assert len(dataset) == len(SFT_ROWS), len(dataset)
    for index, row in enumerate(SFT_ROWS):
        expected = verl_sft_row(row)
        spy.clear()
        item = dataset[index]
        whole = [call for call in spy.calls if len(call[0]) == len(expected["messages"])]
        assert whole, f"row {index}: the whole conversation was never rendered"
        for messages, tools in whole:
            assert messages == expected["messages"], f"row {index}: the template got {messages}"
            assert tools == expected["tools"], f"row {index}: the template got tools {tools}"
        text = tokenizer.decode(item["input_ids"].tolist())  # pad_mode no_padding: the tokens of the row only
        assert text == rendering(expected["messages"], expected["tools"]), f"row {index} tokenized as {text!r}"
        report.count("sft rows read exactly")


def reward_module(work: Path) -> tuple[Path, Path]:
    """The generated compute_score over math_answer and a reward that records what it is given."""
    from factory_cli.backends.verl.reward_adapter import reward_module_source
    from tests.unit.test_verl_data import _recording_reward

    specs, seen = _recording_reward(work)
    specs.append({"name": "math_answer", "function": None, "weight": 1.0, "kwargs": {}, "label": "math_answer"})
    path = work / "verl_reward.py"
    path.write_text(reward_module_source(specs, [str(work)]), encoding="utf-8")
    return path, seen


def check_rl_data_and_rewards(report: Report, config_dir: str, work: Path, tokenizer: Any) -> None:
    """Factory's RL parquet through RLHFDataset, and the generated reward through verl's naive and dapo managers."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from hydra import compose, initialize_config_dir
    from verl import DataProto
    from verl.trainer.ppo.reward import load_reward_manager
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils.dataset.rl_dataset import collate_fn

    from factory_cli.backends.verl.data import verl_rl_row, verl_table
    from tests.unit.test_verl_data import RL_ROWS

    path = work / "rl.parquet"
    pq.write_table(verl_table([verl_rl_row(r, i) for i, r in enumerate(RL_ROWS)]), path)
    reward_file, seen = reward_module(work)
    example = REPO / "examples" / "verl_grpo.yaml"
    managers = {
        "naive": ("grpo.overlong.buffer_length=0",),
        "dapo": ("grpo.max_completion_length=8", "grpo.overlong.buffer_length=4", "grpo.overlong.penalty_factor=1.0"),
    }
    for manager, variant in managers.items():
        overrides = list(plan_of(example, variant, "cuda").engine_config["overrides"])
        overrides += [f"reward.custom_reward_function.path={reward_file}", "data.filter_overlong_prompts=True"]
        with initialize_config_dir(config_dir=config_dir, version_base=None):
            cfg = compose("ppo_trainer", overrides=overrides)
        assert cfg.reward.reward_manager.name == manager, cfg.reward.reward_manager.name
        spy = Spy(tokenizer, work / f"rl_template_calls_{manager}.jsonl")
        dataset = create_rl_dataset([str(path)], cfg.data, tokenizer, None)
        assert len(dataset) == len(RL_ROWS), len(dataset)
        rendered = [messages for messages, _ in spy.calls]
        for row in RL_ROWS:  # filter_overlong_prompts renders every prompt
            assert row["prompt"] in rendered, f"the template never got {row['prompt']} (got {rendered})"
        items = [dataset[i] for i in range(len(dataset))]
        for index, (row, item) in enumerate(zip(RL_ROWS, items, strict=True)):
            assert item["raw_prompt"] == row["prompt"], f"row {index}: raw_prompt {item['raw_prompt']}"
            report.count(f"rl rows read exactly ({manager})")
        batch = DataProto.from_single_dict(collate_fn(items))
        response = torch.tensor([tokenizer.encode("The answer is \\boxed{2} !")[:8]] * len(items))
        prompt_ids = torch.ones((len(items), 4), dtype=torch.long)
        batch.batch["prompts"] = prompt_ids
        batch.batch["responses"] = response
        batch.batch["attention_mask"] = torch.ones((len(items), 4 + response.shape[1]), dtype=torch.long)
        batch.non_tensor_batch = {k: np.asarray(v, dtype=object) for k, v in batch.non_tensor_batch.items()}
        reward_manager = load_reward_manager(cfg, tokenizer)
        assert type(reward_manager).__name__.lower().startswith(manager), type(reward_manager).__name__
        seen.unlink(missing_ok=True)
        results = [
            reward_manager.loop.run_until_complete(reward_manager.run_single(batch[i : i + 1]))
            for i in range(len(items))
        ]
        calls = [json.loads(line) for line in seen.read_text(encoding="utf-8").splitlines()]
        for index, (row, call) in enumerate(zip(RL_ROWS, calls, strict=True)):
            assert call["prompts"] == [row["prompt"]], f"row {index}: the reward got prompts {call['prompts']}"
            columns = {key: [value] for key, value in row.items() if key != "prompt"}
            assert call["columns"] == columns, f"row {index}: the reward got columns {call['columns']}"
        for result in results:
            info = result["reward_extra_info"]
            assert set(info) >= {"score", "seen", "math_answer"}, info
            if manager == "dapo":  # 8 response tokens, 4 expected: the whole buffer over, penalty -1
                assert abs(result["reward_score"] - (info["score"] - 1.0)) < 1e-6, result
            else:
                assert result["reward_score"] == info["score"], result
        report.count(f"reward manager {manager} calls checked", len(results))


# ------------------------------------------------------------------------------------------------ metrics


def check_metrics(report: Report) -> None:
    """Every alias source in backend.METRIC_ALIASES is a name verl logs: produced by verl's own functions where they
    can run here, else found where verl's trainer assembles it."""
    import inspect

    import torch
    import verl.trainer.ppo.v1.trainer_base as trainer_base
    import verl.trainer.sft_trainer as sft_trainer
    import verl.workers.engine_workers as engine_workers
    import verl.workers.utils.losses as losses
    from verl import DataProto
    from verl.trainer.ppo.metric_utils import compute_data_metrics
    from verl.utils.py_functional import rename_dict

    from factory_cli.backends.verl.backend import METRIC_ALIASES

    logged: set[str] = set()
    n, length = 2, 3
    batch = DataProto.from_single_dict(
        {
            "token_level_scores": torch.ones(n, length),
            "token_level_rewards": torch.ones(n, length),
            "advantages": torch.zeros(n, length),
            "returns": torch.zeros(n, length),
            "prompts": torch.ones(n, 2, dtype=torch.long),
            "responses": torch.ones(n, length, dtype=torch.long),
            "response_mask": torch.ones(n, length),
            "attention_mask": torch.ones(n, 2 + length, dtype=torch.long),
        }
    )
    logged.update(compute_data_metrics(batch, use_critic=False))
    sources = {name: inspect.getsource(module) for name, module in [
        ("losses", losses), ("engine_workers", engine_workers), ("trainer_base", trainer_base), ("sft", sft_trainer),
    ]}  # fmt: skip
    # The actor's metrics: the loss function's names and the engine worker's loss / grad_norm / lr, prefixed by the
    # trainer (trainer_base: rename_dict(output["metrics"], "actor/")).
    assert 'rename_dict(output["metrics"], "actor/")' in sources["trainer_base"]
    actor = [m for m in ("actor/pg_loss", "kl_loss") if f'metrics["{m}"]' in sources["losses"]]
    actor += [m for m in ("loss", "grad_norm", "lr") if f'final_metrics["{m}"]' in sources["engine_workers"]]
    logged.update(rename_dict(dict.fromkeys(actor, 0.0), "actor/"))
    logged.update(re.findall(r'"(actor/entropy)":', sources["trainer_base"]))
    # SFT: the engine worker's loss / grad_norm / lr, renamed train/<name> by sft_trainer.py.
    if 'for k in ["loss", "grad_norm", "lr", "mfu"]' in sources["sft"] and 'metrics[f"train/{k}"]' in sources["sft"]:
        logged.update(
            f"train/{m}" for m in ("loss", "grad_norm", "lr") if f'final_metrics["{m}"]' in sources["engine_workers"]
        )
    for alias, names in METRIC_ALIASES.items():
        for name in names:
            if name in logged:
                report.count("metric names found")
            else:
                report.fail("metrics", f"{alias} <- {name}", f"verl does not log {name}; it logs: {sorted(logged)}")


# ------------------------------------------------------------------------------------------------ main


def main(out: Path, work: Path) -> int:
    import datasets
    import verl

    datasets.disable_caching()  # RLHFDataset's prompt filter must render the prompts, not read a cached result
    # As tests/conftest.py does for every test: a hub counts as able to serve a download, whatever this machine reaches
    # (the plans name registry models that live on the Hub; nothing here downloads them).
    from factory_cli.modeling.hubs import Hub

    Hub.unavailable = lambda self: None  # type: ignore[method-assign]

    report = Report()
    report.data["verl_version"] = verl.__version__
    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    plans = all_plans(report, work)
    tokenizer = byte_tokenizer(work / "tokenizer")
    check_configs(report, plans, config_dir, stand_in_model(work / "model"))
    report.guard("sft data", "SFT parquet -> verl SFT dataset", check_sft_data, report, config_dir, work, tokenizer)
    rl_tokenizer = byte_tokenizer(work / "tokenizer_rl")
    label = "RL parquet -> RLHFDataset -> reward managers"
    report.guard("rl data and rewards", label, check_rl_data_and_rewards, report, config_dir, work, rl_tokenizer)
    report.guard("metrics", "METRIC_ALIASES", check_metrics, report)
    out.write_text(json.dumps(report.data, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
