"""Megatron-LM pretraining data, proven on the CPU with megatron-core: the planned preprocess step writes the
indexed corpus, and megatron-core's own GPTDataset reads it back from the planned --data-path with the tokenizer
the train step is given (--tokenizer-model), as pretrain_gpt.py does.

What is asserted: the documents come back token for token; every sample is seq_length tokens of whole documents
laid end to end; the end-of-document token is a target with loss 1 although the tokenizer's pad is its EOS
(SmolLM2): megatron-core's GPTDataset drops a pad id that collides with EOS/EOD (Megatron-LM's SFT dataset does
not, hence tokenizer_copy.py for SFT).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from factory_cli.backends.common.run import child_env, write_jsonl
from factory_cli.backends.megatron.plan import megatron_input_row
from factory_cli.data.pipeline import read_canonical_rows
from factory_cli.launching import run_child
from tests.unit.plan_helpers import EXAMPLES
from tests.unit.test_megatron_plan import job_of, value_of

pytest.importorskip("megatron.core")

REPO = Path(__file__).resolve().parents[2]
SEQ = 64
SINGLE_RANK = (
    "parallel.nnodes=1",
    "parallel.nproc_per_node=1",
    "parallel.tp=1",
    "parallel.pp=1",
    "parallel.sequence_parallel=false",
    f"data.max_length={SEQ}",
    "train.global_batch_size=1",
    "train.max_steps=10",
    "train.epochs=null",
)


def gpt_dataset(data_path: str, tokenizer_dir: str, samples: int) -> object:
    """megatron-core's GPTDataset over `data_path`, built the way pretrain_gpt.py builds it (one rank)."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.tokenizers import MegatronTokenizer

    tokenizer = MegatronTokenizer.from_pretrained(tokenizer_dir, metadata_path={"library": "huggingface"})
    config = GPTDatasetConfig(
        random_seed=1234,
        sequence_length=SEQ,
        blend=([data_path], None),
        split="100,0,0",
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
        path_to_cache=str(Path(data_path).parent / "cache"),
    )
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [samples, 0, 0], lambda: True, config).build()
    return train


def from_documents(window: list[int], bodies: list[list[int]], eod: int) -> bool:
    """A sample is documents laid end to end (in the dataset's shuffled order): the part before its first EOD ends
    a document, each part between two EODs is a whole document, the part after the last EOD starts one."""
    parts: list[list[int]] = [[]]
    for token in window:
        if token == eod:
            parts.append([])
        else:
            parts[-1].append(token)

    def inside(part: list[int], where: str) -> bool:
        n = len(part)
        if where == "end":
            return any(n <= len(b) and b[len(b) - n :] == part for b in bodies)
        if where == "start":
            return any(b[:n] == part for b in bodies)
        return part in bodies

    if len(parts) == 1:
        return any(any(b[k : k + len(window)] == window for k in range(len(b))) for b in bodies)
    middle = all(inside(part, "whole") for part in parts[1:-1])
    return inside(parts[0], "end") and middle and inside(parts[-1], "start")


@pytest.mark.integration
def test_planned_pt_preprocess_is_read_back_by_gpt_dataset(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from factory_cli.backends import get_backend

    run_dir = tmp_path / "run"
    job = job_of(
        "megatron_pt.yaml", "cuda", (f"model.name_or_path={tiny_llama_dir}", f"output.dir={run_dir}", *SINGLE_RANK)
    )
    plan = get_backend("megatron").plan(job, "cuda")
    config = plan.engine_config
    (preprocess,) = [s for s in plan.steps if s.name == "preprocess"]
    train_args = config["train_args"]

    # What the run step does before the steps: the HF model link, the rows, data/megatron/, the tokenizer copy.
    run_dir.mkdir()
    Path(config["hf_model"]).symlink_to(tiny_llama_dir)
    rows = read_canonical_rows(job, job.data.train, [EXAMPLES])
    write_jsonl(Path(config["train_file"]), (megatron_input_row("pt", r, config["engine"]) for r in rows))
    Path(config["data_dir"]).mkdir(parents=True)
    assert config["engine_tokenizer"] is None  # pt reads the model's own tokenizer

    env = child_env({**preprocess.env, "PYTHONPATH": str(REPO)}, preprocess.files)
    assert run_child(preprocess.argv, env, cwd=str(REPO)) == 0

    data_path = value_of(train_args, "--data-path")
    tokenizer_dir = value_of(train_args, "--tokenizer-model")
    assert data_path == config["data_path"] and tokenizer_dir == config["hf_model"]
    hf = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    eod = hf.eos_token_id
    texts = [json.loads(line)["text"] for line in Path(config["train_file"]).read_text().splitlines()]
    documents = [[*hf(text, add_special_tokens=False).input_ids, eod] for text in texts]
    bodies = [doc[:-1] for doc in documents]
    samples = min(8, (sum(map(len, documents)) - 1) // SEQ)
    assert samples >= 2, "demo-pt holds at least two sequences' worth of tokens"

    from megatron.core.datasets.indexed_dataset import IndexedDataset

    indexed = IndexedDataset(data_path)
    assert len(indexed) == len(documents)
    assert [list(indexed[i]) for i in range(len(documents))] == documents

    dataset = gpt_dataset(data_path, tokenizer_dir, samples)
    seen_eod_target = False
    for i in range(samples):
        sample = dataset[i]  # type: ignore[index]
        tokens, labels, loss_mask = sample["tokens"], sample["labels"], sample["loss_mask"]
        assert tokens.shape == labels.shape == loss_mask.shape == (SEQ,)
        assert (labels[:-1] == tokens[1:]).all()
        assert from_documents([int(t) for t in tokens] + [int(labels[-1])], bodies, eod)
        eod_targets = labels == eod
        seen_eod_target |= bool(eod_targets.any())
        assert bool((loss_mask[eod_targets] == 1).all()) and bool((loss_mask == 1).all())
    assert seen_eod_target and hf.pad_token_id == eod


@pytest.mark.integration
@pytest.mark.parametrize("packing", [False, True])
def test_factory_prepared_pt_set_is_written_as_indexed_data(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, packing: bool
) -> None:
    """One preparation, two formats: the Arrow set factory prepares (cached, bounded memory) is written through
    megatron-core's builder and megatron-core's IndexedDataset reads back the same tokens, row for row."""
    import yaml
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from factory_cli.backends.megatron.indexed import document_prefix, main, write_prepared
    from factory_cli.data.pipeline import load_prepared, prepare_data
    from factory_cli.modeling.load import load_tokenizer
    from tests.unit.test_pipeline_scale import pt_job, write_corpus

    write_corpus(tmp_path, 200)
    tokenizer = load_tokenizer(str(tiny_llama_dir))
    prepared = prepare_data(pt_job(max_length=48, packing=packing), tokenizer, None, [tmp_path], tmp_path / "cache")
    arrow, _ = load_prepared({"train": str(prepared.train_path)})
    assert write_prepared(prepared.train_path, str(tmp_path / "out"), len(tokenizer)) == len(arrow)
    indexed = IndexedDataset(document_prefix(str(tmp_path / "out")))
    rows = arrow["input_ids"]
    expected = rows
    if packing:  # a packed row is one document of its sequences (seq_lengths)
        expected = [
            row[start : start + n]
            for row, lengths in zip(rows, arrow["seq_lengths"], strict=True)
            for start, n in zip(itertools.accumulate([0, *lengths[:-1]]), lengths, strict=True)
        ]
        assert len(expected) > len(rows)
    assert [list(map(int, indexed[i])) for i in range(len(indexed))] == expected
    assert len(indexed.document_indices) == len(rows) + 1

    # The step's --run-dir form prepares the run's job itself (packing off: GPTDataset lays documents end to end).
    run = tmp_path / "run"
    run.mkdir()
    job = {"backend": "megatron", "stage": "pt", "device": "cuda", "model": {"name_or_path": str(tiny_llama_dir)}}
    job["data"] = {"train": ["text.jsonl"], "max_length": 48, "cache_dir": str(tmp_path / "cache")}
    job["train"] = {"max_steps": 2}
    (run / "job.yaml").write_text(yaml.safe_dump(job), encoding="utf-8")
    (run / "plan.json").write_text(json.dumps({"base_dirs": [str(tmp_path)]}), encoding="utf-8")
    assert (
        main(["--run-dir", str(run), "--output-prefix", str(tmp_path / "step"), "--tokenizer", str(tiny_llama_dir)])
        == 0
    )
    unpacked = prepare_data(pt_job(max_length=48, packing=False), tokenizer, None, [tmp_path], tmp_path / "cache")
    step = IndexedDataset(document_prefix(str(tmp_path / "step")))
    assert [list(map(int, step[i])) for i in range(len(step))] == load_prepared({"train": str(unpacked.train_path)})[0][
        "input_ids"
    ]
