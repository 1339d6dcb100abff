"""Data preprocessing throughput: factory's pipeline vs LlamaFactory's, on the bench data replicated to 20,000 rows.

Measured: rows/s of read + template + tokenize + assistant mask (+ pack), each run in a fresh process with the
tokenizer already loaded (its load is not timed) and nothing cached:

* factory   `factory_cli.data.pipeline.prepare_data` (packing on, as the SFT benchmark trains; and packing off),
            with a cache dir wiped before the run; plus the cached re-run (same inputs, cache kept);
* llamafactory  `llamafactory.data.get_dataset(stage="sft")` inside its venv (bench/lf_preprocess.py), no packing
            and neat_packing, `overwrite_cache: true` and a fresh `datasets` cache per run.

Both with 1 worker (`data.num_workers` / `preprocessing_num_workers`) and with 2.

    python -m bench.preprocess --factory-worker <spec.json>   (internal: one timed factory preparation)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from bench.harness import BENCH_DIR, Result, median
from bench.train_sft_lora import (
    FULL,
    RUN_ENV,
    Batch,
    default_system,
    factory_job,
    llamafactory_config,
    llamafactory_dataset_info,
    model_dir,
)

NAME = "preprocess"
WORK = BENCH_DIR / ".work" / NAME
SOURCE = BENCH_DIR / "data" / "bench_sft.jsonl"
ROWS, QUICK_ROWS = 20_000, 2_000


def replicated_data(rows: int) -> Path:
    """The bench data repeated to `rows` rows (whole copies, then a cut)."""
    lines = SOURCE.read_text(encoding="utf-8").splitlines(keepends=True)
    copies = -(-rows // len(lines))
    target = WORK / f"bench_sft_{rows}.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join((lines * copies)[:rows]), encoding="utf-8")
    return target


# ----------------------------------------------------------------------------------------------- factory


def factory_worker(spec_file: Path) -> dict[str, Any]:
    """Inside a fresh process: load and validate the job, load the tokenizer, then time prepare_data once."""
    from factory_cli.config.validate import load_and_validate
    from factory_cli.data.masking import resolve_chat_template
    from factory_cli.data.pipeline import prepare_data
    from factory_cli.modeling.load import load_tokenizer
    from factory_cli.registry.models import find_model

    spec = json.loads(spec_file.read_text())
    job = load_and_validate(Path(spec["job"]), []).job
    tokenizer = load_tokenizer(spec["model_dir"])
    model_spec = find_model(job.model.name_or_path)
    template = resolve_chat_template(job.model.template, tokenizer, model_spec.template if model_spec else None)
    started = time.perf_counter()
    prepared = prepare_data(job, tokenizer, template, [spec_file.parent], cache_root=Path(spec["cache"]))
    seconds = time.perf_counter() - started
    report = prepared.report
    return {
        "seconds": seconds,
        "sequences": report.packed_sequences or report.train_rows,
        "supervised_tokens": sum(d.supervised_tokens for d in report.datasets),
        "from_cache": prepared.from_cache,
    }


def _last_json(text: str) -> dict[str, Any]:
    return dict(json.loads([line for line in text.splitlines() if line.startswith("{")][-1]))


def factory_measure(data: Path, model: str, workers: int, packing: bool, cache: Path, wipe: bool) -> dict[str, Any]:
    """One factory preparation in a fresh process (cache wiped first unless `wipe` is False)."""
    if wipe:
        shutil.rmtree(cache, ignore_errors=True)
    folder = WORK / "factory"
    folder.mkdir(parents=True, exist_ok=True)
    settings = replace(FULL, factory_packing=packing)
    job = factory_job(settings, data, Batch(1, 1), folder / "run", cache)
    job["data"]["num_workers"] = workers
    (folder / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"job": str(folder / "job.yaml"), "model_dir": model, "cache": str(cache)}))
    out = subprocess.run(
        [sys.executable, "-m", "bench.preprocess", "--factory-worker", str(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, **RUN_ENV},
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"factory preprocessing failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return _last_json(out.stdout)


# ----------------------------------------------------------------------------------------------- llamafactory


def llamafactory_measure(data: Path, model: str, system: str | None, workers: int, variant: str) -> dict[str, Any]:
    """One LlamaFactory preparation in its venv, with a fresh datasets cache."""
    from bench import llamafactory_env

    folder = WORK / f"llamafactory-{variant}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text(json.dumps(llamafactory_dataset_info(data), indent=1))
    config = llamafactory_config(FULL, variant, model, folder, folder / "out", Batch(1, 1), system)
    config["preprocessing_num_workers"] = workers
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    out = subprocess.run(
        [str(llamafactory_env.python()), str(BENCH_DIR / "lf_preprocess.py"), str(folder / "config.json")],
        capture_output=True,
        text=True,
        env={**os.environ, **RUN_ENV, "HF_DATASETS_CACHE": str(folder / "hf-cache")},
        check=False,
    )
    shutil.rmtree(folder / "hf-cache", ignore_errors=True)
    if out.returncode != 0:
        raise RuntimeError(f"LlamaFactory preprocessing failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return _last_json(out.stdout)


# ----------------------------------------------------------------------------------------------- benchmark


def run(runs: int = 3, quick: bool = False) -> Result:
    """Alternate factory and LlamaFactory preparations; medians of rows/s per tool, variant and worker count."""
    from bench import llamafactory_env
    from factory_cli.modeling.load import load_tokenizer

    llamafactory_env.ensure()
    rows = QUICK_ROWS if quick else ROWS
    data = replicated_data(rows)
    model = model_dir()
    system = default_system(load_tokenizer(model).chat_template)
    cache = WORK / "factory-cache"
    samples: dict[str, list[dict[str, Any]]] = {}

    def record(label: str, measured: dict[str, Any]) -> None:
        measured["rows_per_second"] = rows / measured["seconds"]
        samples.setdefault(label, []).append(measured)
        print(f"{NAME} {label}: {json.dumps(measured)}", flush=True)

    for _ in range(runs):
        for workers in (1, 2):
            record(f"factory_packed_w{workers}", factory_measure(data, model, workers, True, cache, wipe=True))
            if workers == 1:
                record("factory_packed_cached", factory_measure(data, model, 1, True, cache, wipe=False))
            record(f"factory_unpacked_w{workers}", factory_measure(data, model, workers, False, cache, wipe=True))
            for variant in ("default_fast", "neat_packing"):
                label = "llamafactory_" + ("unpacked" if variant == "default_fast" else "neat_packing")
                record(f"{label}_w{workers}", llamafactory_measure(data, model, system, workers, variant))
    shutil.rmtree(cache, ignore_errors=True)
    keys = ["rows_per_second", "seconds", "sequences", "supervised_tokens"]
    medians = {label: {k: median([float(s[k]) for s in runs_]) for k in keys} for label, runs_ in samples.items()}
    ratio: dict[str, float] = {}
    for workers in (1, 2):
        ours_packed = medians[f"factory_packed_w{workers}"]["rows_per_second"]
        ours_plain = medians[f"factory_unpacked_w{workers}"]["rows_per_second"]
        ratio[f"packed_speedup_vs_neat_packing_w{workers}"] = (
            ours_packed / medians[f"llamafactory_neat_packing_w{workers}"]["rows_per_second"]
        )
        ratio[f"unpacked_speedup_vs_unpacked_w{workers}"] = (
            ours_plain / medians[f"llamafactory_unpacked_w{workers}"]["rows_per_second"]
        )
    return Result(
        name=NAME + ("_quick" if quick else ""),
        description=(
            f"SFT preprocessing (read, chat template, tokenize, mask, pack) of {rows:,} rows (bench_sft.jsonl "
            "replicated), seq 512, tokenizer load excluded, nothing cached: factory prepare_data vs LlamaFactory "
            "get_dataset; 1 and 2 workers; medians"
        ),
        metrics=medians,
        runs=samples,
        ratio=ratio,
        notes=[
            "factory_packed_cached: the same preparation again with factory's content-hash cache kept (a re-run)",
            "each measurement runs in a fresh process; the timed part excludes interpreter start and tokenizer load",
            f"llamafactory venv: {json.dumps(llamafactory_env.versions())}",
        ],
    )


def main() -> int:
    """`--factory-worker <spec.json>`: one timed factory preparation, printed as a JSON line."""
    if len(sys.argv) == 3 and sys.argv[1] == "--factory-worker":
        print(json.dumps(factory_worker(Path(sys.argv[2]))))
        return 0
    print(json.dumps(run(runs=1, quick="--quick" in sys.argv).metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
