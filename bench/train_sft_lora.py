"""LoRA SFT of the embedded SmolLM2-135M on bench/data/bench_sft.jsonl: `factory train` vs LlamaFactory, side by side.

The same job for every tool: the same converted HF checkpoint, dataset, chat template and system prompt, max length
512, LoRA r16 / alpha 32 / dropout 0 (every tool's default) on every linear layer, lr 2e-4 cosine with 3% warmup, no
weight decay, AdamW, effective batch 8 examples, one epoch, fp32, a log every step, no eval, the adapter saved once at
the end.
Each tool runs with its best documented speed settings for a CPU:

* factory            its SFT defaults for the machine: no packing, eager, its CPU speed-ups (`train.cpu_speedups:
                     auto`: the compact LM head through the dense kernel, the adapters' inputs rebuilt in the
                     backward, and on a CPU with AMX-BF16 or AVX512-BF16 the frozen base layers and LM head in bf16,
                     `method.lora.base_precision: auto`); `train.compile` is a variant (on an AVX-512 CPU its
                     steady state is no faster than eager and its start-up costs ~15 s);
* llamafactory default-fast   no packing, `disable_gradient_checkpointing: true`, `bf16: false`, batch 1 x 8;
* llamafactory neat_packing   packing without cross-attention (its quality equivalent of factory's packing);
* llamafactory bf16   `bf16: true` (bf16 weights and autocast), for CPUs with bf16 units.

"Effective batch in examples" under packing: a packed row holds several examples, so the rows per optimizer step
are chosen to average 8 examples: rows/step = round(8 x packed rows / examples), with each tool's own packing
ratio measured by a preparation pass before the timed runs (micro batch 1, the rest gradient accumulation).

Tools alternate within one invocation (the order rotates each round); every run prepares its data from scratch
(factory's cache dir and LlamaFactory's datasets cache are wiped). Per run: wall time, train runtime, examples/s,
supervised tokens/s (supervised tokens counted once with factory's pipeline, same tokenizer and template, used for
every tool), peak RSS of the process tree, the final logged loss and the mean of the last 5 logged losses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from bench.harness import BENCH_DIR, Result, median, run_measured

NAME = "train_sft_lora"
DATA = BENCH_DIR / "data" / "bench_sft.jsonl"
WORK = BENCH_DIR / ".work" / NAME
MODEL = "smollm2-135m-instruct-gguf"
LF_DATASET = "bench_sft"
LF_VARIANTS = ("default_fast", "neat_packing", "bf16")
# factory with one job field changed each: what each change buys (measured on/off in the same invocation). The keys
# are factory_job's keyword arguments; `cold_compile` gives every run an empty compile cache (the price of the first
# run of an architecture).
FACTORY_VARIANTS: dict[str, dict[str, Any]] = {
    "factory": {},
    "factory_compile": {"compile_blocks": True},
    "factory_cold_compile": {"compile_blocks": True, "cold_compile": True},
    "factory_packing": {"packing": True},
    "factory_fp32_base": {"base_precision": "fp32"},
    "factory_bf16_base": {"base_precision": "bf16"},
    "factory_bf16": {"precision": "bf16"},
    "factory_no_speedups": {"cpu_speedups": "off"},
}
TOOLS = (*FACTORY_VARIANTS, *(f"llamafactory_{v}" for v in LF_VARIANTS))
DEFAULT_TOOLS = ("factory", "llamafactory_default_fast", "llamafactory_neat_packing")


def default_tools() -> tuple[str, ...]:
    """DEFAULT_TOOLS, plus LlamaFactory's bf16 mode where this CPU multiplies bf16 in hardware: there it can be
    LlamaFactory's fastest setting (elsewhere bf16 is emulated, several times slower, and not worth the runs)."""
    from factory_cli.devices import cpu_has_bf16_matmul

    return (*DEFAULT_TOOLS, "llamafactory_bf16") if cpu_has_bf16_matmul() else DEFAULT_TOOLS


# Realistic installs write bytecode caches; a PYTHONDONTWRITEBYTECODE=1 default would recompile every run.
RUN_ENV = {"PYTHONDONTWRITEBYTECODE": "", "HF_HUB_OFFLINE": "1"}
METRIC_KEYS = [
    "wall_seconds",
    "train_seconds",
    "examples_per_second",
    "supervised_tokens_per_second",
    "peak_rss_mb",
    "final_loss",
    "last5_loss",
    "train_loss",
    "steps",
]


@dataclass(frozen=True)
class SftSettings:
    """The job every tool trains; `examples` None means the whole file."""

    examples: int | None = None
    max_length: int = 512
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0  # factory's, PEFT's and LlamaFactory's default
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    scheduler: str = "cosine"
    optimizer: str = "adamw_torch"
    batch_examples: int = 8
    epochs: int = 1
    seed: int = 42
    factory_packing: bool = False
    factory_compile: bool = False


FULL = SftSettings()
QUICK = SftSettings(examples=24, max_length=256)


@dataclass(frozen=True)
class Batch:
    """Micro batch x gradient accumulation of one tool (rows; a row is one example or one packed sequence)."""

    micro: int
    accumulation: int

    @property
    def rows_per_step(self) -> int:
        return self.micro * self.accumulation


def rows_per_step(batch_examples: int, examples: int, rows: int) -> int:
    """Rows per optimizer step that average `batch_examples` examples when `examples` fill `rows` rows."""
    return max(1, round(batch_examples * rows / max(1, examples)))


# ----------------------------------------------------------------------------------------------- configs (pure)


def factory_job(
    settings: SftSettings,
    data_file: Path,
    batch: Batch,
    out_dir: Path,
    cache_dir: Path,
    packing: bool | None = None,
    compile_blocks: bool | None = None,
    base_precision: str = "auto",
    precision: str = "fp32",
    cpu_speedups: str = "auto",
) -> dict[str, Any]:
    """The factory job file (as a dict) for the benchmark; `packing` and `compile_blocks` override the settings,
    `base_precision` is method.lora.base_precision (auto: factory's default for the machine), `precision` is
    train.precision and `cpu_speedups` train.cpu_speedups."""
    return {
        "backend": "deepspeed",
        "stage": "sft",
        "device": "auto",
        "model": {"name_or_path": MODEL},
        "method": {
            "type": "lora",
            "lora": {
                "rank": settings.lora_rank,
                "alpha": settings.lora_alpha,
                "dropout": settings.lora_dropout,
                "target": ["all"],
                "base_precision": base_precision,
            },
        },
        "data": {
            "train": [{"path": str(data_file), "format": "alpaca"}],
            "max_length": settings.max_length,
            "packing": settings.factory_packing if packing is None else packing,
            "num_workers": 1,
            "cache_dir": str(cache_dir),
        },
        "train": {
            "epochs": settings.epochs,
            "learning_rate": settings.learning_rate,
            "scheduler": settings.scheduler,
            "warmup_ratio": settings.warmup_ratio,
            "weight_decay": settings.weight_decay,
            "max_grad_norm": settings.max_grad_norm,
            "optimizer": settings.optimizer,
            "micro_batch_size": batch.micro,
            "gradient_accumulation_steps": batch.accumulation,
            "precision": precision,
            "seed": settings.seed,
            "compile": settings.factory_compile if compile_blocks is None else compile_blocks,
            "cpu_speedups": cpu_speedups,
        },
        "output": {"dir": str(out_dir), "save_steps": 1_000_000, "save_total_limit": 1, "resume": "never"},
        "logging": {"steps": 1, "sample_after_training": False},
    }


def llamafactory_dataset_info(data_file: Path) -> dict[str, Any]:
    """dataset_info.json naming the benchmark file in alpaca format."""
    return {
        LF_DATASET: {
            "file_name": str(data_file),
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        }
    }


def llamafactory_config(
    settings: SftSettings,
    variant: str,
    model_dir: str,
    dataset_dir: Path,
    out_dir: Path,
    batch: Batch,
    system: str | None,
) -> dict[str, Any]:
    """The LlamaFactory training YAML (as a dict) for one variant: default_fast, neat_packing or bf16."""
    if variant not in LF_VARIANTS:
        raise ValueError(f"unknown LlamaFactory variant {variant}; known: {', '.join(LF_VARIANTS)}")
    config: dict[str, Any] = {
        "model_name_or_path": model_dir,
        "trust_remote_code": False,
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": settings.lora_rank,
        "lora_alpha": settings.lora_alpha,
        "lora_dropout": settings.lora_dropout,
        "lora_target": "all",
        "dataset": LF_DATASET,
        "dataset_dir": str(dataset_dir),
        # smollm2 is the ChatML template of this model family; default_system makes its system prompt the
        # tokenizer template's exactly (LlamaFactory's own default ends with an extra full stop).
        "template": "smollm2",
        "cutoff_len": settings.max_length,
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
        "output_dir": str(out_dir),
        "overwrite_output_dir": True,
        "logging_steps": 1,
        "save_strategy": "no",
        "plot_loss": False,
        "report_to": "none",
        "per_device_train_batch_size": batch.micro,
        "gradient_accumulation_steps": batch.accumulation,
        "learning_rate": settings.learning_rate,
        "num_train_epochs": float(settings.epochs),
        "lr_scheduler_type": settings.scheduler,
        "warmup_steps": settings.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        "weight_decay": settings.weight_decay,
        "max_grad_norm": settings.max_grad_norm,
        "optim": settings.optimizer,
        "seed": settings.seed,
        "bf16": False,
        "fp16": False,
        "disable_gradient_checkpointing": True,
        "val_size": 0.0,
    }
    if system is not None:
        config["default_system"] = system
    if variant == "neat_packing":
        config.update({"packing": True, "neat_packing": True})
    if variant == "bf16":
        # LlamaFactory's documented mixed precision: bf16 weights and autocast (fast where the CPU has AMX-BF16).
        config.update({"bf16": True, "use_cpu": True})  # transformers refuses bf16 on a CPU without use_cpu
    return config


def default_system(chat_template: str) -> str | None:
    """The system prompt a chat template adds when a conversation has none (SmolLM2's own template does)."""
    from factory_cli.data.chat_render import render_chat

    text = render_chat(chat_template, [{"role": "user", "content": "x"}])
    found = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", text, re.DOTALL)
    return found.group(1) if found else None


# ----------------------------------------------------------------------------------------------- preparation


@dataclass
class Prepared:
    """What the runs share: data file, model dir, counts and each tool's batch shape."""

    data_file: Path
    model_dir: str
    chat_template: str
    system: str | None
    examples: int
    supervised_tokens: int
    factory_rows: int
    factory_batch: Batch
    factory_packed_batch: Batch
    lf_batches: dict[str, Batch]
    lf_packed_rows: int
    lf_supervised_tokens: int


def data_file_for(settings: SftSettings) -> Path:
    """The benchmark data, or its first `examples` rows written to bench/.work for quick runs."""
    if settings.examples is None:
        return DATA
    subset = WORK / f"bench_sft_first{settings.examples}.jsonl"
    subset.parent.mkdir(parents=True, exist_ok=True)
    lines = DATA.read_text(encoding="utf-8").splitlines(keepends=True)[: settings.examples]
    subset.write_text("".join(lines), encoding="utf-8")
    return subset


def model_dir() -> str:
    """The embedded GGUF converted once to an HF checkpoint; both tools train this directory."""
    from factory_cli.config.schema import ModelSection
    from factory_cli.modeling.gguf import ensure_hf_checkpoint
    from factory_cli.modeling.sources import resolve_model_source

    return ensure_hf_checkpoint(resolve_model_source(ModelSection(name_or_path=MODEL)))


def factory_probe(settings: SftSettings, data_file: Path) -> tuple[int, int, int, str]:
    """(examples, packed rows, supervised tokens, chat template) from factory's own packing pipeline."""
    from factory_cli.config.validate import load_and_validate
    from factory_cli.data.masking import resolve_chat_template
    from factory_cli.data.pipeline import prepare_data
    from factory_cli.modeling.load import load_tokenizer
    from factory_cli.registry.models import find_model

    probe_dir = WORK / "probe"
    shutil.rmtree(probe_dir, ignore_errors=True)
    probe_dir.mkdir(parents=True)
    job_file = probe_dir / "job.yaml"
    job = factory_job(settings, data_file, Batch(1, 1), probe_dir / "run", probe_dir / "cache", packing=True)
    job_file.write_text(yaml.safe_dump(job, sort_keys=False))
    validated = load_and_validate(job_file, [])
    path = model_dir()
    tokenizer = load_tokenizer(path)
    spec = find_model(MODEL)
    template = resolve_chat_template(validated.job.model.template, tokenizer, spec.template if spec else None)
    assert template is not None
    prepared = prepare_data(validated.job, tokenizer, template, [probe_dir], cache_root=probe_dir / "cache")
    report = prepared.report
    examples = report.train_rows
    rows = report.packed_sequences or examples
    supervised = sum(d.supervised_tokens for d in report.datasets)
    shutil.rmtree(probe_dir, ignore_errors=True)
    return examples, rows, supervised, template


def lf_probe(settings: SftSettings, prepared_model: str, data_file: Path, system: str | None) -> dict[str, Any]:
    """LlamaFactory's neat_packing preparation of the same data: its packed rows and supervised tokens."""
    from bench import llamafactory_env

    probe_dir = WORK / "lf-probe"
    shutil.rmtree(probe_dir, ignore_errors=True)
    probe_dir.mkdir(parents=True)
    (probe_dir / "dataset_info.json").write_text(json.dumps(llamafactory_dataset_info(data_file), indent=1))
    config = llamafactory_config(
        settings, "neat_packing", prepared_model, probe_dir, probe_dir / "out", Batch(1, 1), system
    )
    config_file = probe_dir / "config.json"
    config_file.write_text(json.dumps(config, indent=1))
    out = subprocess.run(
        [str(llamafactory_env.python()), str(BENCH_DIR / "lf_preprocess.py"), str(config_file)],
        capture_output=True,
        text=True,
        env={**os.environ, **RUN_ENV, "HF_DATASETS_CACHE": str(probe_dir / "hf-cache")},
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"LlamaFactory preprocessing failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    result = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    shutil.rmtree(probe_dir, ignore_errors=True)
    return dict(result)


def prepare(settings: SftSettings) -> Prepared:
    """Everything measured once before the timed runs: counts, packing ratios and batch shapes."""
    from bench import llamafactory_env

    llamafactory_env.ensure()
    data_file = data_file_for(settings)
    path = model_dir()
    examples, factory_rows, supervised, template = factory_probe(settings, data_file)
    system = default_system(template)
    lf = lf_probe(settings, path, data_file, system)
    lf_rows = int(lf["sequences"])
    factory_batch = Batch(1, settings.batch_examples)
    factory_packed_batch = Batch(1, rows_per_step(settings.batch_examples, examples, factory_rows))
    lf_batches = {
        # LlamaFactory's own example configs train with batch 1 and accumulation; no padding is wasted either.
        "default_fast": Batch(1, settings.batch_examples),
        "neat_packing": Batch(1, rows_per_step(settings.batch_examples, examples, lf_rows)),
        "bf16": Batch(1, settings.batch_examples),
    }
    return Prepared(
        data_file=data_file,
        model_dir=path,
        chat_template=template,
        system=system,
        examples=examples,
        supervised_tokens=supervised,
        factory_rows=factory_rows,
        factory_batch=factory_batch,
        factory_packed_batch=factory_packed_batch,
        lf_batches=lf_batches,
        lf_packed_rows=lf_rows,
        lf_supervised_tokens=int(lf["supervised_tokens"]),
    )


# ----------------------------------------------------------------------------------------------- runs


def _loss_metrics(losses: list[float], epoch_mean: float | None = None) -> dict[str, float]:
    """Last logged loss, mean of the last 5, and the Trainer's mean over the whole epoch (`train_loss`).

    The tools shuffle differently, so the last steps see different examples; the epoch mean covers every example
    once and is the comparable number.
    """
    tail = losses[-5:]
    return {
        "final_loss": losses[-1] if losses else float("nan"),
        "last5_loss": sum(tail) / len(tail) if tail else float("nan"),
        "train_loss": float("nan") if epoch_mean is None else float(epoch_mean),
    }


def _rates(prepared: Prepared, train_seconds: float) -> dict[str, float]:
    return {
        "examples_per_second": prepared.examples / train_seconds,
        "supervised_tokens_per_second": prepared.supervised_tokens / train_seconds,
    }


def factory_run(settings: SftSettings, prepared: Prepared, index: int, variant: str = "factory") -> dict[str, float]:
    """One `factory train` from scratch (its data cache wiped); metrics from summary.json and metrics.jsonl."""
    change = FACTORY_VARIANTS[variant]
    run_dir = WORK / f"{variant}-{index}"
    cache_dir = WORK / "factory-cache"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(cache_dir, ignore_errors=True)
    job_file = WORK / f"{variant}-job.yaml"
    fields = {key: value for key, value in change.items() if key != "cold_compile"}
    packing = bool(fields.pop("packing", settings.factory_packing))
    batch = prepared.factory_packed_batch if packing else prepared.factory_batch
    job = factory_job(settings, prepared.data_file, batch, run_dir, cache_dir, packing=packing, **fields)
    job_file.write_text(yaml.safe_dump(job, sort_keys=False))
    env = dict(RUN_ENV)
    if change.get("cold_compile"):
        compile_cache = WORK / "cold-compile-cache"
        shutil.rmtree(compile_cache, ignore_errors=True)
        env["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache)
    measured = run_measured([sys.executable, "-m", "factory_cli", "train", str(job_file)], env=env, timeout=4 * 3600)
    if measured.returncode != 0:
        raise RuntimeError(f"factory train failed:\n{measured.stdout_tail}")
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [float(r["loss"]) for r in records if "loss" in r]
    epoch_mean = next((float(r["train_loss"]) for r in reversed(records) if "train_loss" in r), None)
    train_seconds = float(summary["train_runtime"])
    return {
        "wall_seconds": measured.wall_seconds,
        "train_seconds": train_seconds,
        **_rates(prepared, train_seconds),
        "peak_rss_mb": measured.peak_rss_mb,
        **_loss_metrics(losses, epoch_mean),
        "steps": float(summary["global_step"]),
    }


def llamafactory_run(settings: SftSettings, prepared: Prepared, variant: str, index: int) -> dict[str, float]:
    """One `llamafactory-cli train` from scratch (fresh datasets cache, overwrite_cache); metrics from its logs."""
    from bench import llamafactory_env

    run_dir = WORK / f"llamafactory-{variant}-{index}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "dataset_info.json").write_text(json.dumps(llamafactory_dataset_info(prepared.data_file), indent=1))
    config = llamafactory_config(
        settings,
        variant,
        prepared.model_dir,
        run_dir,
        run_dir / "out",
        prepared.lf_batches[variant],
        prepared.system,
    )
    config_file = run_dir / "train.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**RUN_ENV, "HF_DATASETS_CACHE": str(run_dir / "hf-cache")}
    measured = run_measured([str(llamafactory_env.cli()), "train", str(config_file)], env=env, timeout=4 * 3600)
    if measured.returncode != 0:
        raise RuntimeError(f"llamafactory-cli train ({variant}) failed:\n{measured.stdout_tail}")
    out = run_dir / "out"
    results = json.loads((out / "train_results.json").read_text())
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines() if line.strip()]
    losses = [float(r["loss"]) for r in log if "loss" in r]
    state = json.loads((out / "trainer_state.json").read_text())
    train_seconds = float(results["train_runtime"])
    shutil.rmtree(run_dir / "hf-cache", ignore_errors=True)
    return {
        "wall_seconds": measured.wall_seconds,
        "train_seconds": train_seconds,
        **_rates(prepared, train_seconds),
        "peak_rss_mb": measured.peak_rss_mb,
        **_loss_metrics(losses, results.get("train_loss")),
        "steps": float(state["global_step"]),
    }


def llamafactory_smoke(max_steps: int = 2) -> dict[str, float]:
    """A short LlamaFactory LoRA SFT (default_fast, quick settings):
    `python -m bench.train_sft_lora --llamafactory-smoke`."""
    from bench import llamafactory_env
    from factory_cli.modeling.load import load_tokenizer

    settings = QUICK
    data_file = data_file_for(settings)
    path = model_dir()
    system = default_system(load_tokenizer(path).chat_template)
    folder = WORK / "lf-smoke"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text(json.dumps(llamafactory_dataset_info(data_file), indent=1))
    batch = Batch(1, settings.batch_examples)
    config = llamafactory_config(settings, "default_fast", path, folder, folder / "out", batch, system)
    config["max_steps"] = max_steps
    config_file = folder / "train.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**RUN_ENV, "HF_DATASETS_CACHE": str(folder / "hf-cache")}
    measured = run_measured([str(llamafactory_env.cli()), "train", str(config_file)], env=env)
    if measured.returncode != 0:
        raise RuntimeError(f"llamafactory-cli train failed:\n{measured.stdout_tail}")
    log = [json.loads(line) for line in (folder / "out" / "trainer_log.jsonl").read_text().splitlines() if line]
    losses = [float(r["loss"]) for r in log if "loss" in r]
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "wall_seconds": measured.wall_seconds,
        "peak_rss_mb": measured.peak_rss_mb,
        "steps": float(len(losses)),
        **_loss_metrics(losses),
    }


def run(runs: int = 3, quick: bool = False, tools: Sequence[str] | None = None, examples: int | None = None) -> Result:
    """Alternate the tools `runs` times; medians, speedups, memory and loss ratios against factory.

    `tools` picks among TOOLS (factory's variants switch one speed change off each; default: `default_tools()`);
    `examples` trains on the first N rows of the data instead of all of them.
    """
    from bench import llamafactory_env

    tools = default_tools() if tools is None else tools
    unknown = [t for t in tools if t not in TOOLS]
    if unknown or "factory" not in tools:
        raise ValueError(f"tools must include factory and come from {', '.join(TOOLS)}; got {', '.join(tools)}")
    settings = QUICK if quick else FULL
    if examples is not None:
        settings = replace(settings, examples=examples)
    WORK.mkdir(parents=True, exist_ok=True)
    prepared = prepare(settings)
    tools = list(tools)
    per_tool: dict[str, list[dict[str, float]]] = {tool: [] for tool in tools}
    for index in range(runs):
        order = tools[index % len(tools) :] + tools[: index % len(tools)]
        for tool in order:
            if tool in FACTORY_VARIANTS:
                metrics = factory_run(settings, prepared, index, tool)
            else:
                metrics = llamafactory_run(settings, prepared, tool.removeprefix("llamafactory_"), index)
            per_tool[tool].append(metrics)
            print(f"{NAME} run {index + 1}/{runs} {tool}: {json.dumps(metrics)}", flush=True)
    medians = {tool: {k: median([r[k] for r in rows]) for k in METRIC_KEYS} for tool, rows in per_tool.items()}
    ratio: dict[str, float] = {}
    ours = medians["factory"]
    for tool in tools:
        if tool == "factory":
            continue
        variant = tool.removeprefix("llamafactory_")
        theirs = medians[tool]
        ratio[f"wall_speedup_vs_{variant}"] = theirs["wall_seconds"] / ours["wall_seconds"]
        ratio[f"train_speedup_vs_{variant}"] = theirs["train_seconds"] / ours["train_seconds"]
        ratio[f"peak_rss_ratio_vs_{variant}"] = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
        ratio[f"last5_loss_delta_vs_{variant}"] = ours["last5_loss"] - theirs["last5_loss"]
        ratio[f"train_loss_delta_vs_{variant}"] = ours["train_loss"] - theirs["train_loss"]
    peers = [tool for tool in tools if tool.startswith("llamafactory_")]
    fastest = min(peers, key=lambda tool: medians[tool]["train_seconds"]) if peers else None
    if fastest is not None:  # the peer at its best setting on this machine, whichever that is
        ratio["train_speedup_vs_fastest_llamafactory"] = medians[fastest]["train_seconds"] / ours["train_seconds"]
        ratio["wall_speedup_vs_fastest_llamafactory"] = medians[fastest]["wall_seconds"] / ours["wall_seconds"]
    shape = {
        "factory": asdict(prepared.factory_batch),
        "factory_packing": asdict(prepared.factory_packed_batch) | {"packed_rows": prepared.factory_rows},
        **{f"llamafactory_{v}": asdict(b) for v, b in prepared.lf_batches.items()},
    }
    return Result(
        name=NAME
        + ("_quick" if quick else "")
        + (f"_first{examples}" if examples is not None else "")
        + ("_ablation" if any(t in FACTORY_VARIANTS and t != "factory" for t in tools) else ""),
        description=(
            f"LoRA SFT of {MODEL} on {prepared.examples} examples of bench/data/bench_sft.jsonl, seq "
            f"{settings.max_length}, r{settings.lora_rank}/a{settings.lora_alpha}, lr {settings.learning_rate:g}, "
            f"{settings.batch_examples} examples/step, {settings.epochs} epoch, fp32 job on the CPU: "
            f"{', '.join(tools)}; medians of alternating runs"
        ),
        metrics=medians,
        runs=per_tool,
        ratio=ratio,
        notes=[
            f"batch shapes (micro x accumulation, rows per step): {json.dumps(shape)}",
            f"supervised tokens (factory pipeline, used for every tool): {prepared.supervised_tokens}; "
            f"LlamaFactory's own count: {prepared.lf_supervised_tokens} (it also supervises the newline after "
            "<|im_end|>, one near-zero-loss token per example, which slightly lowers its mean loss)",
            f"LlamaFactory neat_packing packed {prepared.examples} examples into {prepared.lf_packed_rows} rows; "
            f"factory into {prepared.factory_rows}",
            "wall time includes interpreter start, imports, model load, data preparation from scratch and saving",
            *([f"fastest LlamaFactory setting on this machine (train time): {fastest}"] if fastest else []),
            f"llamafactory venv: {json.dumps(llamafactory_env.versions())}",
        ],
    )


if __name__ == "__main__":
    if "--llamafactory-smoke" in sys.argv:  # after `python -m bench.llamafactory_env --verify`: does it train?
        print(f"2-step LoRA SFT: {json.dumps(llamafactory_smoke(max_steps=2))}")
    else:
        print(json.dumps(run(runs=1, quick="--quick" in sys.argv).metrics, indent=1))
