"""Pre-training data preparation at corpus scale: factory's pipeline vs LlamaFactory's, on generated corpora.

A corpus of plain-text documents (`{"text": ...}` JSONL, ~10 KB each, generated deterministically under bench/.work,
never committed) is prepared for pre-training with max_length 512, each run in a fresh process with nothing cached:

* factory       `factory_cli.data.pipeline.prepare_data` (read, tokenize, append EOS, pack with no token lost,
                write to the content-hash cache), `data.num_workers` 1 and 2;
* llamafactory  `llamafactory.data.get_dataset(stage="pt")` inside its venv (bench/lf_preprocess_scale.py):
                `datasets` JSON loading into Arrow, tokenize, concatenate and cut into cutoff_len blocks,
                `preprocessing_num_workers` 1 and 2, a fresh `datasets` cache per run.

Measured per run: seconds of the preparation (tokenizer load excluded), rows/s, tokens/s (each tool's own count of
the tokens it wrote) and the peak memory of the whole process tree (interpreter, tokenizer and workers included), as
the sum of RSS (pages a forked worker shares with its parent counted in both), of PSS (shared pages split among the
processes that share them) and of anonymous PSS (PSS without file-backed pages: both tools read memory-mapped Arrow
files, whose pages count in RSS while they are read but belong to the page cache, which the kernel reclaims).

    python -m bench preprocess_scale --runs 3              # the 300 MB corpus
    python -m bench.preprocess_scale --sizes 30,3000 --runs 1   # other corpus sizes (MB): preprocess_scale_30mb_3000mb
    python -m bench.preprocess_scale --sizes 3000 --tools factory --workers 1   # one tool, one worker count
    BENCH_MAX_RSS_MB=8000 python -m bench ...              # kill a run whose process tree passes 8000 MB RSS
    BENCH_MEMORY_TRACE=trace.jsonl python -m bench ...     # the memory sums every 10 s, for a long run
    python -m bench.preprocess_scale --factory-worker <spec.json>   (internal: one timed factory preparation)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.harness import BENCH_DIR, Result, median
from bench.train_sft_lora import RUN_ENV, model_dir

NAME = "preprocess_scale"
WORK = BENCH_DIR / ".work" / NAME
MAX_LENGTH = 512
SIZES_MB = (300,)
QUICK_SIZE_MB = 5
DOCUMENT_BYTES = 10_000  # mean document size (lognormal spread)
VOCABULARY = 20_000
GENERATE_BLOCK = 1000  # documents drawn at once
TRACE_SECONDS = 10.0


def corpus(size_mb: int, seed: int = 0) -> Path:
    """A JSONL corpus of about `size_mb` MB of pseudo-text documents, generated once (same bytes for the same size):
    Zipf-like word frequencies, lognormal document sizes, drawn with numpy a block of documents at a time (a 3 GB
    corpus in minutes)."""
    import numpy as np

    target = WORK / f"corpus_{size_mb}mb.jsonl"
    if target.is_file():
        return target
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = np.array(["".join(rng.choice(letters, size=int(rng.integers(2, 10)))) for _ in range(VOCABULARY)])
    frequencies = 1.0 / np.arange(1, VOCABULARY + 1)
    probabilities = frequencies / frequencies.sum()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    written, budget = 0, size_mb * 1_000_000
    with partial.open("w", encoding="utf-8") as out:
        while written < budget:
            sizes = np.clip(rng.lognormal(0, 0.8, size=GENERATE_BLOCK) * DOCUMENT_BYTES * 0.73, 200, 60_000)
            counts = (sizes // 6).astype(np.int64)
            drawn = words[rng.choice(VOCABULARY, size=int(counts.sum()), p=probabilities)]
            start = 0
            for count in counts:
                line = json.dumps({"text": " ".join(drawn[start : start + count])}) + "\n"
                start += count
                out.write(line)
                written += len(line)
                if written >= budget:
                    break
    partial.rename(target)
    return target


@dataclass
class TreeRun:
    """One command run: its output, exit code, and the peak memory of its process tree."""

    returncode: int
    output: str
    peak_rss_mb: float  # sum of RSS: pages a forked worker shares with its parent counted in each
    peak_pss_mb: float  # sum of PSS: shared pages split among the processes that share them
    peak_anon_mb: float  # PSS of anonymous memory only: without the memory-mapped Arrow files the kernel can drop


def _proportional(process: psutil.Process) -> tuple[int, int]:
    """(PSS, anonymous PSS) in bytes, from /proc/<pid>/smaps_rollup (RSS twice where it is missing)."""
    try:
        text = Path(f"/proc/{process.pid}/smaps_rollup").read_text()
    except OSError:
        rss = int(process.memory_info().rss)
        return rss, rss
    fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in text.splitlines()[1:] if ":" in line}
    return fields.get("Pss", 0), fields.get("Pss_Anon", fields.get("Pss", 0))


def run_tree(argv: list[str], env: dict[str, str]) -> TreeRun:
    """Run argv; sample the memory sums over the process and its children every 100 ms."""
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, text=True)
        root = psutil.Process(process.pid)
        peak = [0, 0, 0]
        limit = float(os.environ.get("BENCH_MAX_RSS_MB", "inf")) * 2**20
        trace = os.environ.get("BENCH_MEMORY_TRACE")  # a JSONL file: the sums every TRACE_SECONDS (long runs)
        started = traced = time.monotonic()
        while process.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                shares = [_proportional(p) for p in tree]
                sums = [sum(p.memory_info().rss for p in tree), sum(s[0] for s in shares), sum(s[1] for s in shares)]
                peak = [max(a, b) for a, b in zip(peak, sums, strict=True)]
                if trace and time.monotonic() - traced >= TRACE_SECONDS:
                    traced = time.monotonic()
                    mb = [round(v / 2**20) for v in (*sums, *peak)]
                    record = dict(zip(("rss", "pss", "anon", "peak_rss", "peak_pss", "peak_anon"), mb, strict=True))
                    with open(trace, "a", encoding="utf-8") as out:
                        out.write(json.dumps({"seconds": round(traced - started), "argv": argv[-1], **record}) + "\n")
                if sums[0] > limit:  # a shared machine: stop a run before it takes the memory of others
                    for member in reversed(tree):
                        member.kill()
            except psutil.Error:
                pass
            time.sleep(0.1)
        log.seek(0)
        output = log.read()
    rss, pss, anon = (value / 2**20 for value in peak)
    return TreeRun(process.returncode, output[-5000:], rss, pss, anon)


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


# ----------------------------------------------------------------------------------------------- factory


def factory_worker(spec_file: Path) -> dict[str, Any]:
    """Inside a fresh process: load and validate the job, load the tokenizer, then time prepare_data once."""
    from factory_cli.config.validate import load_and_validate
    from factory_cli.data.pipeline import prepare_data
    from factory_cli.modeling.load import load_tokenizer

    spec = json.loads(spec_file.read_text())
    job = load_and_validate(Path(spec["job"]), []).job
    tokenizer = load_tokenizer(spec["model_dir"])
    started = time.perf_counter()
    prepared = prepare_data(job, tokenizer, None, [spec_file.parent], cache_root=Path(spec["cache"]))
    seconds = time.perf_counter() - started
    report = prepared.report
    return {
        "seconds": seconds,
        "rows": report.train_rows,
        "sequences": report.packed_sequences or report.train_rows,
        "tokens": sum(d.tokens for d in report.datasets),
        "from_cache": prepared.from_cache,
    }


def _last_json(text: str) -> dict[str, Any]:
    return dict(json.loads([line for line in text.splitlines() if line.startswith("{")][-1]))


def factory_measure(data: Path, model: str, workers: int) -> dict[str, Any]:
    """One factory preparation in a fresh process with an empty cache; its peak RSS measured from outside."""
    folder = WORK / "factory"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    job = {
        "backend": "deepspeed",
        "stage": "pt",
        "model": {"name_or_path": model},
        "data": {
            "train": [{"path": str(data), "format": "text"}],
            "max_length": MAX_LENGTH,
            "num_workers": workers,
            "cache_dir": str(folder / "cache"),
        },
        "train": {"max_steps": 1},
        "output": {"dir": str(folder / "run")},
    }
    (folder / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"job": str(folder / "job.yaml"), "model_dir": model, "cache": str(folder / "cache")}))
    measured = run_tree([sys.executable, "-m", "bench.preprocess_scale", "--factory-worker", str(spec)], RUN_ENV)
    shutil.rmtree(folder, ignore_errors=True)
    return _result("factory", measured)


def _result(tool: str, measured: TreeRun) -> dict[str, Any]:
    if measured.returncode != 0:
        raise RuntimeError(f"{tool} preparation failed:\n{measured.output}")
    peaks = {"peak_rss_mb": measured.peak_rss_mb, "peak_pss_mb": measured.peak_pss_mb}
    return {**_last_json(measured.output), **peaks, "peak_anon_mb": measured.peak_anon_mb}


# ----------------------------------------------------------------------------------------------- llamafactory


def llamafactory_measure(data: Path, model: str, workers: int) -> dict[str, Any]:
    """One LlamaFactory preparation in its venv with a fresh datasets cache; its peak RSS measured from outside."""
    from bench import llamafactory_env

    folder = WORK / "llamafactory"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    info = {"corpus": {"file_name": str(data), "columns": {"prompt": "text"}}}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=1))
    config = {
        "model_name_or_path": model,
        "stage": "pt",
        "do_train": True,
        "finetuning_type": "full",
        "dataset": "corpus",
        "dataset_dir": str(folder),
        "template": "default",
        "cutoff_len": MAX_LENGTH,
        "overwrite_cache": True,
        "preprocessing_num_workers": workers,
        "output_dir": str(folder / "out"),
        "report_to": "none",
        "per_device_train_batch_size": 1,
        "max_steps": 1,
        "bf16": False,
        "fp16": False,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    measured = run_tree(
        [str(llamafactory_env.python()), str(BENCH_DIR / "lf_preprocess_scale.py"), str(folder / "config.json")],
        {**RUN_ENV, "HF_DATASETS_CACHE": str(folder / "hf-cache")},
    )
    shutil.rmtree(folder, ignore_errors=True)
    return _result("LlamaFactory", measured)


# ----------------------------------------------------------------------------------------------- benchmark

KEYS = ["seconds", "rows_per_second", "tokens_per_second", "peak_rss_mb", "peak_pss_mb", "peak_anon_mb", "tokens"]


def run(
    runs: int = 3,
    quick: bool = False,
    sizes: tuple[int, ...] = SIZES_MB,
    tools: list[str] | None = None,
    workers_list: tuple[int, ...] = (1, 2),
) -> Result:
    """Alternate factory and LlamaFactory preparations per corpus size and worker count; medians and ratios."""
    from bench import llamafactory_env

    chosen = tools or ["factory", "llamafactory"]
    if "llamafactory" in chosen:
        llamafactory_env.ensure()
    model = model_dir()
    samples: dict[str, list[dict[str, Any]]] = {}
    for size in (QUICK_SIZE_MB,) if quick else sizes:
        data = corpus(size)
        rows = count_lines(data)
        for _ in range(runs):
            for workers in workers_list:
                for tool in chosen:
                    measure = factory_measure if tool == "factory" else llamafactory_measure
                    measured = measure(data, model, workers)
                    measured["rows_per_second"] = rows / measured["seconds"]
                    measured["tokens_per_second"] = measured["tokens"] / measured["seconds"]
                    label = f"{size}mb_{tool}_w{workers}"
                    samples.setdefault(label, []).append(measured)
                    print(f"{NAME} {label}: {json.dumps(measured)}", flush=True)
    medians = {label: {k: median([float(s[k]) for s in runs_]) for k in KEYS} for label, runs_ in samples.items()}
    ratio: dict[str, float] = {}
    for label, values in medians.items():
        peer = medians.get(label.replace("_factory_", "_llamafactory_"))
        if "_factory_" in label and peer:
            stem = label.replace("_factory", "")
            ratio[f"{stem}_tokens_per_second_vs_llamafactory"] = values["tokens_per_second"] / peer["tokens_per_second"]
            ratio[f"{stem}_peak_rss_vs_llamafactory"] = values["peak_rss_mb"] / peer["peak_rss_mb"]
            ratio[f"{stem}_peak_pss_vs_llamafactory"] = values["peak_pss_mb"] / peer["peak_pss_mb"]
            ratio[f"{stem}_peak_anon_vs_llamafactory"] = values["peak_anon_mb"] / peer["peak_anon_mb"]
    suffix = "_quick" if quick else ("" if sizes == SIZES_MB else "_" + "_".join(f"{s}mb" for s in sizes))
    suffix += "" if workers_list == (1, 2) else "_w" + "_".join(map(str, workers_list))
    return Result(
        name=NAME + suffix,
        description=(
            f"pt preparation (read, tokenize, pack to {MAX_LENGTH}) of generated JSONL corpora "
            f"({', '.join(f'{s} MB' for s in ((QUICK_SIZE_MB,) if quick else sizes))}), tokenizer load excluded, "
            "nothing cached: factory prepare_data vs LlamaFactory get_dataset(stage=pt); "
            f"{' and '.join(map(str, workers_list))} worker(s); medians; "
            "peak RSS of the process tree"
        ),
        metrics=medians,
        runs=samples,
        ratio=ratio,
        notes=[
            "tokens: each tool's own count of what it wrote (factory: every document + EOS, no token lost; "
            "LlamaFactory: the concatenation cut into cutoff_len blocks, each map batch's remainder dropped)",
            "each measurement runs in a fresh process; the timed part excludes interpreter start and tokenizer load",
        ],
    )


def main() -> int:
    """`--factory-worker <spec.json>`: one timed preparation; `--sizes 300,3000 [--runs N] [--tools ...]`: a run."""
    arguments = sys.argv[1:]
    if len(arguments) == 2 and arguments[0] == "--factory-worker":
        print(json.dumps(factory_worker(Path(arguments[1]))))
        return 0
    options = dict(zip(arguments[::2], arguments[1::2], strict=False))
    sizes = tuple(int(s) for s in options.get("--sizes", ",".join(map(str, SIZES_MB))).split(","))
    tools = options["--tools"].split(",") if "--tools" in options else None
    workers = tuple(int(w) for w in options.get("--workers", "1,2").split(","))
    result = run(runs=int(options.get("--runs", "1")), sizes=sizes, tools=tools, workers_list=workers)
    print(json.dumps(result.metrics, indent=1))
    print(f"-> {result.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
