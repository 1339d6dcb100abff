"""`factory sample` on the tiny random Llama: the rows it writes train with `factory train` (sft and dpo), a seed
gives the same rows, a run killed mid-way continues without a duplicate, and the vLLM engine is driven as vLLM's
offline API expects (a stand-in module records the calls: vLLM itself needs CUDA)."""

from __future__ import annotations

import importlib.machinery
import json
import os
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from factory_cli.config.schema import DatasetSpec, RewardSpec
from factory_cli.sampling import SampleRequest, SampleSummary, run_sample
from tests.integration.train_helpers import REPO, train_in_process, write_job

# Random text from the tiny model: a reward on its length spreads the scores, so some answers pass and some do not.
WORDS_REWARD = """\
import time

def words(completion, **row):
    return min(1.0, len(completion.split()) / 6)

def slow_words(completions, **columns):
    time.sleep(0.25)
    return [min(1.0, len(c.split()) / 6) for c in completions]
"""


@pytest.fixture(scope="module")
def reward_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rewards") / "word_rewards.py"
    path.write_text(WORDS_REWARD)
    return path


def _request(model: Path, output: Path, reward: str, **changes: Any) -> SampleRequest:
    base: dict[str, Any] = {
        "model": str(model),
        "datasets": (DatasetSpec(path="demo-grpo-math"),),
        "rewards": (RewardSpec(function=reward),),
        "output": output,
        "n": 4,
        "max_new_tokens": 12,
        "keep": "all",
        "min_score": 0.5,
        "limit": 6,
        "batch_size": 2,
        "device": "cpu",
    }
    return SampleRequest(**{**base, **changes})


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sampled(tiny_llama_dir: Path, reward_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """SFT rows and DPO pairs of the same request (the same answers: same seed)."""
    folder = tmp_path_factory.mktemp("sampled")
    reward = f"{reward_file}:words"
    run_sample(_request(tiny_llama_dir, folder / "rft.jsonl", reward), show_progress=False)
    run_sample(_request(tiny_llama_dir, folder / "pairs.jsonl", reward, pairs=True), show_progress=False)
    yield folder


def _summary(output: Path) -> dict[str, Any]:
    return dict(json.loads((output.parent / f".{output.name}.sample" / "summary.json").read_text()))


def test_accepted_answers_are_sft_rows_with_id_score_and_model(sampled: Path, tiny_llama_dir: Path) -> None:
    rows, summary = _rows(sampled / "rft.jsonl"), _summary(sampled / "rft.jsonl")
    assert summary["prompts"] == 6 and summary["samples"] == 24
    assert summary["groups_accepted"] + summary["groups_without"] == 6
    assert 0 < len(rows) == summary["rows"] <= summary["accepted_samples"]
    for row in rows:
        assert row["score"] >= 0.5 and row["model"] == str(tiny_llama_dir)
        assert row["prompt_id"].startswith("demo-grpo-math:")
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"] and row["messages"][1]["content"]
    # groups without an accepted answer are named, not silently missing
    kept_ids = {row["prompt_id"] for row in rows}
    assert len(kept_ids) == summary["groups_accepted"]
    assert summary["samples_per_second"] > 0


def test_pairs_put_the_better_answer_first(sampled: Path) -> None:
    rows, summary = _rows(sampled / "pairs.jsonl"), _summary(sampled / "pairs.jsonl")
    assert 0 < len(rows) == summary["rows"] == 6 - summary["groups_without_pair"]
    for row in rows:
        assert row["score"] >= 0.5 and row["score"] > row["rejected_score"]
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]


@pytest.mark.parametrize(("stage", "rows"), [("sft", "rft.jsonl"), ("dpo", "pairs.jsonl")])
def test_factory_train_reads_the_rows(
    sampled: Path, tiny_llama_dir: Path, tmp_path: Path, stage: str, rows: str
) -> None:
    extra = {"data": {"train": [str(sampled / rows)]}, "train": {"max_steps": 1, "micro_batch_size": 1}}
    job = write_job(tmp_path, tiny_llama_dir, stage, "lora", extra)
    assert train_in_process(job) == 0
    manifest = json.loads((tmp_path / "run" / "data" / "manifest.json").read_text())
    assert manifest["report"]["datasets"][0]["invalid"] == 0, manifest["report"]


def test_a_seed_gives_the_same_rows(sampled: Path, tiny_llama_dir: Path, reward_file: Path, tmp_path: Path) -> None:
    reward = f"{reward_file}:words"
    again = run_sample(_request(tiny_llama_dir, tmp_path / "again.jsonl", reward), show_progress=False)
    assert (tmp_path / "again.jsonl").read_bytes() == (sampled / "rft.jsonl").read_bytes()
    other = run_sample(_request(tiny_llama_dir, tmp_path / "other.jsonl", reward, seed=7), show_progress=False)
    assert (tmp_path / "other.jsonl").read_bytes() != (sampled / "rft.jsonl").read_bytes()
    assert again.samples == other.samples == 24


def test_one_generation_writes_the_sft_rows_and_the_pairs(
    sampled: Path, tiny_llama_dir: Path, reward_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--pairs-output: the rows of the SFT run and of the --pairs run, byte for byte, from one generation."""
    from typer.testing import CliRunner

    from factory_cli.cli import app

    monkeypatch.chdir(tmp_path)
    args = ["sample", "-m", str(tiny_llama_dir), "--data", "demo-grpo-math", "--rewards", f"{reward_file}:words"]
    args += ["-o", "rft.jsonl", "--pairs-output", "pairs.jsonl", "--n", "4", "--max-new-tokens", "12"]
    args += ["--keep", "all", "--min-score", "0.5", "--limit", "6", "--batch-size", "2", "--device", "cpu"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rft.jsonl").read_bytes() == (sampled / "rft.jsonl").read_bytes()
    assert (tmp_path / "pairs.jsonl").read_bytes() == (sampled / "pairs.jsonl").read_bytes()
    summary = _summary(tmp_path / "rft.jsonl")
    assert summary["generated_now"] == 24  # 6 prompts x 4 answers, once
    assert summary["pair_rows"] == len(_rows(sampled / "pairs.jsonl")) > 0
    assert summary["groups_without_pair"] == _summary(sampled / "pairs.jsonl")["groups_without_pair"]
    assert f"{summary['pair_rows']} to pairs.jsonl (DPO pairs)" in result.output


def _progress_batches(output: Path) -> int:
    path = output.parent / f".{output.name}.sample" / "progress.jsonl"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def test_a_killed_run_continues_without_duplicating_rows(
    tiny_llama_dir: Path, reward_file: Path, tmp_path: Path
) -> None:
    reward = f"{reward_file}:slow_words"
    changes = {"limit": 12, "batch_size": 1}
    reference = tmp_path / "reference.jsonl"
    run_sample(_request(tiny_llama_dir, reference, reward, **changes), show_progress=False)

    output = tmp_path / "killed.jsonl"
    args = ["sample", "-m", str(tiny_llama_dir), "--data", "demo-grpo-math", "--rewards", reward, "-o", str(output)]
    args += ["--n", "4", "--max-new-tokens", "12", "--keep", "all", "--min-score", "0.5", "--limit", "12"]
    args += ["--batch-size", "1", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-m", "factory_cli", *args], cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 120
        while _progress_batches(output) < 3 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    done_before = _progress_batches(output)
    assert 3 <= done_before < 12, f"the kill came after {done_before} of 12 batches"

    summary: SampleSummary = run_sample(_request(tiny_llama_dir, output, reward, **changes), show_progress=False)
    assert summary.resumed_batches >= done_before
    assert output.read_bytes() == reference.read_bytes()
    assert summary.prompts == 12 and summary.samples == 48
    assert summary.generated_now == 4 * (12 - summary.resumed_batches)


def test_transformers_generates_a_batch_of_prompts_times_n_in_one_left_padded_call(
    tiny_llama_dir: Path, reward_file: Path, tmp_path: Path
) -> None:
    from factory_cli.sampling.engines import Sampling, TransformersEngine
    from factory_cli.sampling.prompts import read_prompts

    request = _request(tiny_llama_dir, tmp_path / "rows.jsonl", f"{reward_file}:words")
    prompts = read_prompts(request.datasets, 3).prompts
    engine = TransformersEngine(request)
    calls: list[dict[str, Any]] = []
    original = engine.loaded.model.generate

    def recording(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(**kwargs)

    engine.loaded.model.generate = recording
    widths: list[int] = []  # tokens each forward pass reads
    hook = engine.loaded.model.register_forward_pre_hook(
        lambda _module, _args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        answers = engine.generate(prompts, Sampling(n=4, temperature=1.0, max_new_tokens=6, seed=1), batch=0)
    finally:
        hook.remove()
    assert [len(group) for group in answers] == [4, 4, 4]
    (call,) = calls  # the 3 prompts x 4 answers in one generate call
    mask = call["attention_mask"]
    assert call["input_ids"].shape[0] == 12
    assert widths[0] == mask.shape[1] and set(widths[1:]) == {1}  # the KV cache: each new token reads only itself
    lengths = mask.sum(dim=1).tolist()
    assert len(set(lengths)) > 1 and lengths[0:4] == [lengths[0]] * 4  # each prompt's copies side by side
    for row, length in zip(mask.tolist(), lengths, strict=True):  # padded on the left: the prompts end together
        assert row == [0] * (len(row) - length) + [1] * length


def test_transformers_samples_the_whole_vocabulary_as_vllm_does(
    tiny_llama_dir: Path, reward_file: Path, tmp_path: Path
) -> None:
    """A model whose generation_config.json narrows sampling to its 5 likeliest tokens: `factory sample` samples at
    the temperature it is given from every token, as the vLLM engine does (transformers' own top_k 50 is off too)."""
    import shutil

    import torch

    from factory_cli.inference.render import encode_prompt
    from factory_cli.sampling.engines import Sampling, TransformersEngine
    from factory_cli.sampling.prompts import read_prompts

    model_dir = tmp_path / "narrow"
    shutil.copytree(tiny_llama_dir, model_dir)
    config = json.loads((model_dir / "generation_config.json").read_text())
    (model_dir / "generation_config.json").write_text(json.dumps({**config, "top_k": 5, "repetition_penalty": 1.5}))
    engine = TransformersEngine(_request(model_dir, tmp_path / "rows.jsonl", f"{reward_file}:words"))
    (prompt,) = read_prompts((DatasetSpec(path="demo-grpo-math"),), 1).prompts
    ids = encode_prompt(engine.loaded.tokenizer, prompt.messages, engine.template)
    with torch.no_grad():
        likeliest = set(engine.loaded.model(torch.tensor([ids])).logits[0, -1].topk(5).indices.tolist())
    outputs: list[Any] = []
    original = engine.loaded.model.generate
    engine.loaded.model.generate = lambda **kwargs: outputs.append(original(**kwargs)) or outputs[-1]
    engine.generate([prompt], Sampling(n=12, temperature=1.0, max_new_tokens=1, seed=3), batch=0)
    first_tokens = outputs[0][:, len(ids)].tolist()
    # the tiny random model's next token is close to uniform over ~49k ids: hardly any draw lands in its top 5
    assert sum(token not in likeliest for token in first_tokens) > 6, first_tokens


# ------------------------------------------------------------------------------------------------ vLLM


class _FakeLLM:
    calls: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, model: str, **kwargs: Any) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        _FakeLLM.calls.append({"init": {"model": model, **kwargs}})

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def generate(
        self, inputs: list[dict[str, Any]], params: Any, lora_request: Any = None, use_tqdm: bool = True
    ) -> Any:
        _FakeLLM.calls.append({"inputs": inputs, "params": params, "lora": lora_request})
        texts = [f"answer {i} " + "word " * i for i in range(params.n)]
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=t) for t in texts]) for _ in inputs]


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> type[_FakeLLM]:
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM = _FakeLLM  # type: ignore[attr-defined]
    module.SamplingParams = lambda **kwargs: types.SimpleNamespace(**kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    _FakeLLM.calls = []
    return _FakeLLM


def test_vllm_is_chosen_on_cuda_and_given_token_ids_n_and_a_seed(
    fake_vllm: type[_FakeLLM], tiny_llama_dir: Path, reward_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from factory_cli import devices
    from factory_cli.inference.render import encode_prompt
    from factory_cli.sampling.engines import choose_engine
    from factory_cli.sampling.prompts import read_prompts

    request = _request(tiny_llama_dir, tmp_path / "v.jsonl", f"{reward_file}:words", limit=3, device="auto")
    assert choose_engine(request) == "transformers"  # this machine has no CUDA GPU
    cuda = devices.DeviceInfo("cuda", 1, "stand-in GPU", True)
    monkeypatch.setattr(devices, "detect_device", lambda requested="auto": cuda)
    assert choose_engine(request) == "vllm"

    summary = run_sample(request, show_progress=False)
    assert summary.engine == "vllm" and summary.samples == 12
    init, first = fake_vllm.calls[0]["init"], fake_vllm.calls[1]
    assert init["model"] == str(tiny_llama_dir) and init["seed"] == 42 and init["enable_lora"] is False
    params = first["params"]
    assert (params.n, params.temperature, params.max_tokens) == (4, 1.0, 12)
    tokenizer = fake_vllm(str(tiny_llama_dir)).tokenizer
    prompts = read_prompts(request.datasets, 2).prompts
    template = tokenizer.chat_template
    assert [i["prompt_token_ids"] for i in first["inputs"]] == [
        encode_prompt(tokenizer, p.messages, template) for p in prompts
    ]
    seeds = [c["params"].seed for c in fake_vllm.calls if "params" in c]
    assert len(seeds) == 2 and seeds[0] != seeds[1]  # one seed per batch
    rows = _rows(tmp_path / "v.jsonl")
    assert rows and all(r["score"] >= 0.5 for r in rows)
