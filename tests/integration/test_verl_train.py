"""verl's own SFT trainer, for real, from `factory train` on the CPU (backends/verl/cpu_platform.py): losses logged,
one and two processes agree, a LoRA run resumes from verl's checkpoint, and final/ (verl's model merger) loads and
generates in factory's environment. Runs in verl's environment (.venv-verl, `make setup-verl`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.integration.train_helpers import REPO, losses, metrics, train_cli, write_job

pytestmark = [pytest.mark.integration, pytest.mark.verl]

VERL_PYTHON = REPO / ".venv-verl" / "bin" / "python"


@pytest.fixture(autouse=True)
def _verl_environment() -> None:
    assert VERL_PYTHON.is_file(), "verl's environment is missing: run make setup-verl"


def verl_job(folder: Path, model: Path, method: str, extra: dict[str, Any] | None = None) -> Path:
    """A short verl SFT job: 16 demo rows, global batch 8 (2 steps per epoch), checkpoints every 2 steps."""
    base = {
        "backend": "verl",
        "data": {"train": [{"path": "demo-sft-alpaca", "max_samples": 16}]},
        "train": {
            "max_steps": 2,
            "micro_batch_size": 4,
            "gradient_accumulation_steps": None,
            "global_batch_size": 8,
            "learning_rate": 1e-3,
        },
    }
    job = write_job(folder, model, "sft", method, base)
    if extra:
        import yaml

        from tests.integration.train_helpers import deep_update

        data = deep_update(yaml.safe_load(job.read_text()), extra)
        job.write_text(yaml.safe_dump(data, sort_keys=False))
    return job


def weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def generates(folder: Path) -> list[str]:
    """final/ through factory's one inference path (what `factory chat` and eval use): greedy tokens come out."""
    from factory_cli.inference.generate import generate
    from factory_cli.inference.load import load_for_inference
    from factory_cli.inference.render import encode_prompt, prompt_template

    loaded = load_for_inference(str(folder), device="cpu", dtype="fp32")
    assert loaded.info.kind == "full"
    tokenizer = loaded.tokenizer
    prompt = encode_prompt(tokenizer, [{"role": "user", "content": "Hi"}], prompt_template(tokenizer))
    return generate(loaded.model, tokenizer, [prompt], max_new_tokens=4)


def test_full_sft_trains_the_same_on_one_and_two_processes(tmp_path: Path, tiny_llama_dir: Path) -> None:
    runs = {}
    for nproc in (1, 2):
        job = verl_job(tmp_path / f"p{nproc}", tiny_llama_dir, "full", {"parallel": {"nproc_per_node": nproc}})
        done = train_cli(job)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs[nproc] = tmp_path / f"p{nproc}" / "run"
    one, two = losses(runs[1]), losses(runs[2])
    assert sorted(one) == [1, 2] and sorted(two) == [1, 2]
    assert one[2] < one[1], one  # lr 1e-3 on a random model: the loss falls at once
    for step in (1, 2):  # the same global batch, split over two ranks: the same mean loss
        assert math.isclose(one[step], two[step], rel_tol=1e-3), (one, two)
    record = metrics(runs[1])[0]
    assert {"loss", "learning_rate", "grad_norm"} <= set(record)
    assert (runs[1] / "plots").is_dir()
    final = runs[1] / "final"
    assert json.loads((final / "factory_complete.json").read_text())["step"] == 2
    before, after = weights(tiny_llama_dir), weights(final)
    assert set(after) <= set(before) and any(not before[k].equal(after[k]) for k in after)
    summary = json.loads((runs[1] / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["final_loss"] == one[2]
    generates(final)


def test_lora_sft_resumes_from_verls_checkpoint_and_merges_the_adapter(tmp_path: Path, tiny_llama_dir: Path) -> None:
    job = verl_job(tmp_path, tiny_llama_dir, "lora")
    run = tmp_path / "run"
    first = train_cli(job)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (run / "checkpoints" / "global_step_2").is_dir() and (run / "final" / "lora_adapter").is_dir()

    again = train_cli(job)  # a finished run is not trained again
    assert again.returncode == 0 and "already finished" in again.stdout, again.stdout[-2000:]
    assert sorted(losses(run)) == [1, 2]

    longer = train_cli(job, "train.max_steps=3")
    assert longer.returncode == 0, longer.stdout[-3000:] + longer.stderr[-3000:]
    assert "resume: verl continues from" in longer.stdout and "global_step_2" in longer.stdout
    assert sorted(losses(run)) == [1, 2, 3]  # step 3 only was trained again: each step once
    assert json.loads((run / "final" / "factory_complete.json").read_text())["step"] == 3
    # the adapter is folded into the weights: attention projections moved, embeddings (not adapted) did not; verl's
    # model merger writes bf16, so the base weights are compared at that precision
    before, after = weights(tiny_llama_dir), weights(run / "final")
    q_proj, embed = "model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight"
    assert after[q_proj].dtype == after[embed].dtype == torch.bfloat16
    assert not before[q_proj].bfloat16().equal(after[q_proj].bfloat16())
    assert before[embed].bfloat16().equal(after[embed].bfloat16())
    generates(run / "final")
