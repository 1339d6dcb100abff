"""Megatron pretraining data, proven on the CPU with megatron-core: the planned preprocess step prepares the run's
corpus with factory's pipeline and writes it as indexed data (one preparation, two formats), and megatron-core's own
GPTDataset reads it back from the planned --data-path with the tokenizer the train step is given (--tokenizer-model),
as pretrain_gpt.py does.

What is asserted: the documents come back token for token, equal to the shared preparation's; its report is printed;
a second run writes nothing; every sample is seq_length tokens of whole documents
laid end to end; the end-of-document token is a target with loss 1 although the tokenizer's pad is its EOS
(SmolLM2): megatron-core's GPTDataset drops a pad id that collides with EOS/EOD (Megatron-LM's SFT dataset does
not, hence tokenizer_copy.py for SFT).
"""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import pytest

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


def corpus_with_a_bad_row(folder: Path, rows: int = 60) -> Path:
    """The first `rows` documents of demo-pt and, as row 10, one with no text (counted invalid, never written; factory
    check refuses a bad row among a file's first five, config/checks.py ROWS_CHECKED)."""
    lines = (REPO / "datasets_registry" / "data" / "demo_pt.jsonl").read_text(encoding="utf-8").splitlines()[:rows]
    lines.insert(9, json.dumps({"title": "a row without its text"}))
    corpus = folder / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return corpus


def run_dir_for(job: object, plan: object, run_dir: Path, model: Path) -> None:
    """What train.py and the run step leave before the steps: job.yaml, plan.json, the HF model link, data/megatron/."""
    from factory_cli.config.dump import job_to_yaml

    config = plan.engine_config  # type: ignore[attr-defined]
    run_dir.mkdir()
    (run_dir / "job.yaml").write_text(job_to_yaml(job), encoding="utf-8")  # type: ignore[arg-type]
    (run_dir / "plan.json").write_text(json.dumps({"base_dirs": [str(EXAMPLES)]}), encoding="utf-8")
    Path(config["hf_model"]).symlink_to(model)
    Path(config["data_dir"]).mkdir(parents=True)


@pytest.mark.integration
def test_planned_pt_preprocess_is_read_back_by_gpt_dataset(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run with only the engine faked: its preprocess step, run for real, prepares the run's corpus with factory's
    pipeline (the report printed as the deepspeed backend prints it), writes it through megatron-core and caches it;
    the train step is planned from the tokens written, and GPTDataset reads the data back."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from transformers import AutoTokenizer

    from factory_cli import launching
    from factory_cli.backends import get_backend
    from factory_cli.backends.megatron import backend as megatron_backend
    from factory_cli.backends.megatron.indexed import indexing_job, main
    from factory_cli.config.dump import job_to_yaml
    from factory_cli.data.pipeline import load_prepared, prepare_data
    from tests.unit.plan_helpers import Recorder

    corpus = corpus_with_a_bad_row(tmp_path)
    run_dir = tmp_path / "run"
    given = (f"model.name_or_path={tiny_llama_dir}", f"data.cache_dir={tmp_path / 'cache'}")
    given += (f"data.train=[{{path: {corpus}, format: text}}]", *SINGLE_RANK)
    epochs = ("train.max_steps=null", "train.epochs=1")
    job = job_of("megatron_pt.yaml", "cuda", (*given, f"output.dir={run_dir}", *epochs))
    plan = get_backend("megatron").plan(job, "cuda")
    plan.base_dirs = [str(EXAMPLES)]
    assert plan.engine_config["train_file"] is None and plan.engine_config["engine_tokenizer"] is None
    run_dir.mkdir()
    (run_dir / "job.yaml").write_text(job_to_yaml(job), encoding="utf-8")
    (run_dir / "megatron_base" / "iter_0000001").mkdir(parents=True)  # converted already: no Bridge needed
    for var in ("MEGATRON_LM_HOME", "MEGATRON_BRIDGE_HOME"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    output = tmp_path / "step.log"
    launched: list[list[str]] = []

    def data_step_for_real(argv: list[str], env: dict[str, str], cwd: str | None = None) -> int:
        launched.append(list(argv))
        if argv[1:3] != ["-m", "factory_cli.backends.megatron.indexed"]:
            return 0  # the engine's steps
        with output.open("w", encoding="utf-8") as log:
            done = subprocess.run(argv, env={**env, "PYTHONPATH": str(REPO)}, cwd=cwd, stdout=log, stderr=log)
        return done.returncode

    monkeypatch.setattr(megatron_backend, "stack_problems", lambda *args, **kwargs: [])
    monkeypatch.setattr(launching, "run_child", data_step_for_real)
    result = get_backend("megatron").run(plan, Recorder())
    said = output.read_text(encoding="utf-8")
    assert result.ok, said
    assert not (run_dir / "data" / "train.jsonl").exists()
    config = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))["engine_config"]
    train_args = config["train_args"]
    (train,) = [argv for argv in launched if any(a.endswith("pretrain_gpt.py") for a in argv)]
    assert train[-len(train_args) :] == train_args  # the train step ran with the plan made after preprocess

    # The shared preparation of the same job: its tokens, row for row, and its report, line for line.
    hf = AutoTokenizer.from_pretrained(str(tiny_llama_dir.resolve()))
    shared = prepare_data(indexing_job(job), hf, None, [EXAMPLES], tmp_path / "cache")
    assert shared.from_cache  # the step's own entry: nothing tokenized twice
    lines = shared.report.lines()
    assert "1 invalid (first: row 10" in lines[0] and "60 used" in lines[0]
    assert all(f"data: {line}" in said for line in lines)
    documents = [list(map(int, ids)) for ids in load_prepared({"train": str(shared.train_path)})[0]["input_ids"]]

    # --train-iters: one epoch of the samples GPTDataset cuts, (tokens - 1) // seq_length, at global batch 1.
    assert value_of(train_args, "--train-iters") == str((sum(map(len, documents)) - 1) // SEQ)
    data_path = value_of(train_args, "--data-path")
    tokenizer_dir = value_of(train_args, "--tokenizer-model")
    assert data_path == config["data_path"] and tokenizer_dir == config["hf_model"]
    indexed = IndexedDataset(data_path)
    assert [list(map(int, indexed[i])) for i in range(len(indexed))] == documents
    eod = hf.eos_token_id
    texts = [json.loads(line).get("text") for line in corpus.read_text(encoding="utf-8").splitlines()]
    expected = [[*hf(t, add_special_tokens=True).input_ids, eod] for t in texts if t is not None]
    assert sorted(documents) == sorted(expected)  # every document whole, in the pipeline's seeded order
    manifest = json.loads((run_dir / "data" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["train"] == data_path and manifest["documents"] == len(documents) == 60
    assert manifest["tokens"] == sum(map(len, documents))

    bodies = [doc[:-1] for doc in documents]
    samples = min(8, (sum(map(len, documents)) - 1) // SEQ)
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

    # A second run over the same data writes nothing: both cache entries are reused, its files link to the same ones.
    entry = Path(data_path + ".bin").resolve()
    written = entry.stat().st_mtime_ns
    second = tmp_path / "second"
    job2 = job_of("megatron_pt.yaml", "cuda", (*given, f"output.dir={second}"))
    plan2 = get_backend("megatron").plan(job2, "cuda")
    run_dir_for(job2, plan2, second, tiny_llama_dir)
    argv = value_after(plan2.steps, "factory_cli.backends.megatron.indexed")
    capsys.readouterr()
    assert main(argv) == 0
    again = " ".join(capsys.readouterr().out.split())
    assert "tokenized rows reused from the cache" in again and "indexed data reused from the cache" in again
    assert Path(plan2.engine_config["data_path"] + ".bin").resolve() == entry
    assert entry.stat().st_mtime_ns == written


def value_after(steps: list[object], module: str) -> list[str]:
    """The arguments of the step that runs `module`."""
    for step in steps:
        argv = step.argv  # type: ignore[attr-defined]
        if argv[1:3] == ["-m", module]:
            return list(argv[3:])
    raise AssertionError(f"no step runs {module}")


@pytest.mark.integration
@pytest.mark.parametrize("packing", [False, True])
def test_factory_prepared_pt_set_is_written_as_indexed_data(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, packing: bool
) -> None:
    """One preparation, two formats: the Arrow set factory prepares (cached, bounded memory) is written through
    megatron-core's builder and megatron-core's IndexedDataset reads back the same tokens, row for row."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from factory_cli.backends.megatron.indexed import document_prefix, write_prepared
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
