#!/usr/bin/env bash
# The megatron backend's GPU proof (issue 17), one GPU, no network, about 5 minutes, from the repository root:
#
#   bash bench/megatron_device_run.sh
#
# Prepared beforehand (see bench/megatron_gpu.py): `python -m bench.gpu_sft --prepare` (.whl/, the tokenizer) and
# `python -m bench.megatron_gpu prepare --megatron-lm <checkout>` (bench/.work/megatron_gpu/: the Megatron-LM
# core_v0.17.0 source, the tiny model, einops and pybind11 wheels). It needs python3 with torch (CUDA), g++ and make
# (Megatron-LM compiles megatron/core/datasets/helpers.cpp on first use).
# Phases, each logged to bench/.work/megatron_gpu/<phase>.log and recorded in <phase>.json: base (the starting
# checkpoint from the HF weights), train1 (factory's run of the planned steps: preprocess, torchrun pretrain_gpt.py),
# hf (the HF loss of the same first batch), train2 (more steps: must resume from checkpoints/), then the report:
# megatron_gpu.json, with ok true only when iteration 1's loss matches the HF loss and the second run resumed at the
# first run's last iteration. If OUT is set, the report, the logs and the run's records are copied there.
set -uo pipefail
cd "$(dirname "$0")/.."
WORK=bench/.work/megatron_gpu
SITE="${MEGATRON_GPU_SITE:-/tmp/megatron_gpu_site}"
WHEELS="${GPU_SFT_WHEELS:-.whl}"

test -f "$WORK/Megatron-LM-core_v0.17.0.tar" || { echo "not prepared: run python -m bench.megatron_gpu prepare" >&2; exit 2; }
rm -rf "$SITE" /tmp/megatron_gpu_src "$WORK/run" "$WORK"/*.json "$WORK"/*.log "$WORK/hf_dataset_cache"
mkdir -p /tmp/megatron_gpu_src && tar -xf "$WORK/Megatron-LM-core_v0.17.0.tar" -C /tmp/megatron_gpu_src || exit 2
export MEGATRON_LM_HOME=/tmp/megatron_gpu_src/Megatron-LM

wheels="$(python3 -m bench.gpu_sft --wheels "$WHEELS") $(ls "$WHEELS"/einops-*.whl "$WHEELS"/pybind11-*.whl)" || exit 2
# shellcheck disable=SC2086  # one wheel path per word
if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" $wheels || exit 2
else  # no pip: a wheel is a zip file of what it installs
    for wheel in $wheels; do python3 -m zipfile -e "$wheel" "$SITE" || exit 2; done
fi
# The checkout's megatron/ (core 0.17 included) comes before any installed megatron-core.
export PYTHONPATH="$MEGATRON_LM_HOME:$SITE:$PWD" PATH="$SITE/bin:$PATH" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false CUDA_DEVICE_MAX_CONNECTIONS=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$WORK/device.log"
for phase in base train1 hf train2; do
    echo "== $phase"
    timeout 180 python3 -m bench.megatron_gpu "$phase" >"$WORK/$phase.log" 2>&1
    echo "   exit $? (log: $WORK/$phase.log)"
    tail -n 3 "$WORK/$phase.log"
done
python3 -m bench.megatron_gpu report --out "$WORK"
status=$?

if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp "$WORK"/megatron_gpu.json "$OUT/" 2>/dev/null
    tar czf "$OUT/megatron_gpu_logs.tgz" --ignore-failed-read -C "$WORK" \
        device.log base.log train1.log hf.log train2.log base.json train1.json hf.json train2.json job.yaml \
        run/plan.json run/job.yaml 2>/dev/null
fi
exit $status
