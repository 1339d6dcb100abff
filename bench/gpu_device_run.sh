#!/usr/bin/env bash
# The gpu_sft benchmark on a CUDA machine without network access, from the repository root:
#
#   bash bench/gpu_device_run.sh [more `python -m bench gpu_sft` options, e.g. --tools factory,factory_no_checkpointing]
#
# It needs python3 with torch (CUDA), numpy, pyarrow, pyyaml, jinja2 and psutil, and, beside the checkout, what
# `python -m bench.gpu_sft --prepare` made here: .whl/ (the wheels of bench/gpu_wheels.txt) and
# bench/.work/gpu_sft/tokenizer. The wheels go into a private folder ahead of the machine's own packages.
# RUNS (default 1) sets --runs. If OUT is set, the result JSON and an archive of the runs' logs and records are
# copied there.
set -uo pipefail
cd "$(dirname "$0")/.."
SITE="${GPU_SFT_SITE:-/tmp/gpu_sft_site}"
WHEELS="${GPU_SFT_WHEELS:-.whl}"

wheels=$(python3 -m bench.gpu_sft --wheels "$WHEELS") || exit 1
rm -rf "$SITE"
# shellcheck disable=SC2086  # one wheel path per word
if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" $wheels || exit 1
else  # no pip: a wheel is a zip file of what it installs
    for wheel in $wheels; do python3 -m zipfile -e "$wheel" "$SITE" || exit 1; done
fi
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python3 - <<'EOF' || exit 1
import importlib.metadata as md
import torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}): {gpu}")
for name in ("transformers", "trl", "peft", "accelerate", "datasets", "pydantic", "liger-kernel", "triton"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} absent")
import factory_cli.cli, trl, datasets  # what `factory train` imports first
EOF

python3 -m bench gpu_sft --runs "${RUNS:-1}" "$@"
status=$?

if [ -n "${OUT:-}" ]; then  # the result JSON, and one archive of the logs, jobs and run records
    mkdir -p "$OUT"
    cp bench/results/gpu_sft*.json "$OUT/" 2>/dev/null
    (cd bench/.work/gpu_sft && tar czf "$OUT/gpu_sft_runs.tgz" --ignore-failed-read *.log *-job.yaml \
        */metrics.jsonl */summary.json */env.json */job.yaml */plan.json 2>/dev/null)
fi
exit $status
