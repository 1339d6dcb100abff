#!/usr/bin/env bash
# verl GRPO with vLLM rollouts on one CUDA GPU, launched by `factory train` (bench/verl_grpo_device.py), from the
# repository root of a machine without network access:
#
#   VERL_PYTHON=/path/to/python bash bench/verl_device_run.sh
#
# VERL_PYTHON (default python3) must hold verl 0.9.1 with vLLM and TransferQueue (`pip install 'verl[vllm]==0.9.1'
# TransferQueue`), Ray, and factory's base dependencies (pydantic, typer, pyyaml, rich, jinja2); run
# `python -m bench.verl_grpo_device --prepare` beforehand where the checkout was made (it builds
# bench/.work/gpu_sft/tokenizer). The result JSON (and the train log) go to $OUT if set, else bench/.work/verl_grpo.
# It exits 1 and says what is missing when that Python lacks a package.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${VERL_PYTHON:-python3}"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"$PY" -m bench.verl_grpo_device --out "${OUT:-bench/.work/verl_grpo}"
