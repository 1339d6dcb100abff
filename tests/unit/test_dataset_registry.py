"""The dataset registry: demo entries, their data (every row converts), LlamaFactory dataset_info.json, lookup order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factory_cli.data.formats import OPENAI_TAGS, convert_row
from factory_cli.data.readers import count_rows, read_rows
from factory_cli.registry.datasets import (
    DatasetEntry,
    entries_from_dataset_info,
    find_dataset,
    load_dataset_registry,
)

REGISTRY_DIR = Path(__file__).resolve().parents[2] / "datasets_registry"

DEMOS = {
    "demo-sft-alpaca": ("sft", "alpaca", 200),
    "demo-sft-sharegpt": ("sft", "sharegpt", 60),
    "demo-sft-messages": ("sft", "messages", 60),
    "demo-dpo": ("dpo", "preference", 150),
    "demo-grpo-math": ("grpo", "rl", 300),
    "demo-pt": ("pt", "text", 300),
    "demo-eval-math": ("grpo", "rl", 60),
}
LF_DEMOS = {"alpaca_demo": "sft", "sharegpt_demo": "sft", "openai_demo": "sft", "dpo_demo": "dpo", "pt_demo": "pt"}


def convert_all(entry: DatasetEntry, stage: str) -> int:
    assert entry.file is not None
    spec = entry.format_spec()
    converted = 0
    for _number, row in read_rows(entry.file):
        convert_row(row, spec, stage)  # raises RowError on the first bad row
        converted += 1
    return converted


@pytest.fixture(scope="module")
def registry() -> dict[str, DatasetEntry]:
    return load_dataset_registry()


def test_demo_entries_load_with_their_files(registry: dict[str, DatasetEntry]) -> None:
    for name, (stage, fmt, _rows) in DEMOS.items():
        entry = registry[name]
        assert entry.stage == stage and entry.format == fmt, name
        assert entry.file is not None and entry.file.is_absolute() and entry.file.is_file(), name
        assert entry.file.parent == REGISTRY_DIR / "data"
        assert entry.description


@pytest.mark.parametrize("name", sorted(DEMOS))
def test_every_demo_row_converts_for_its_stage(registry: dict[str, DatasetEntry], name: str) -> None:
    entry = registry[name]
    stage, _fmt, rows = DEMOS[name]
    assert convert_all(entry, stage) == rows
    assert count_rows(entry.file) == rows  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(DEMOS))
def test_every_demo_row_converts_with_auto_detection(registry: dict[str, DatasetEntry], name: str) -> None:
    entry = registry[name].model_copy(update={"format": "auto"})
    assert convert_all(entry, DEMOS[name][0]) == DEMOS[name][2]


def test_demo_math_answers_are_numbers_and_eval_is_held_out(registry: dict[str, DatasetEntry]) -> None:
    train = [row for _, row in read_rows(registry["demo-grpo-math"].file)]  # type: ignore[arg-type]
    held_out = [row for _, row in read_rows(registry["demo-eval-math"].file)]  # type: ignore[arg-type]
    for row in train + held_out:
        assert row["answer"].lstrip("-").isdigit() and row["data_source"] == "demo_math"
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held_out}
    assert len({r["prompt"] for r in train}) == len(train)


def test_dataset_info_entries_load_unchanged_and_convert() -> None:
    entries = entries_from_dataset_info(REGISTRY_DIR / "dataset_info.json")
    assert set(LF_DEMOS) <= set(entries)
    for name, stage in LF_DEMOS.items():
        entry = entries[name]
        assert entry.stage == stage, name
        assert entry.file is not None and entry.file.is_file(), name
        assert convert_all(entry, stage) > 0
    assert entries["dpo_demo"].ranking
    assert entries["sharegpt_demo"].format == "sharegpt"
    assert entries["alpaca_demo"].format == "alpaca"


def test_dataset_info_entries_are_in_the_registry(registry: dict[str, DatasetEntry]) -> None:
    assert set(LF_DEMOS) <= set(registry)


def test_registry_folder_stays_small() -> None:
    size = sum(p.stat().st_size for p in REGISTRY_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert size < 1_500_000


def test_format_spec_carries_the_entry_and_system() -> None:
    entry = DatasetEntry(name="x", file=Path("/x.json"), format="sharegpt", ranking=True, columns={"messages": "c"})
    spec = entry.format_spec(system="Be kind.")
    assert (spec.format, spec.ranking, dict(spec.columns), spec.system) == (
        "sharegpt",
        True,
        {"messages": "c"},
        "Be kind.",
    )


def test_default_registry_is_cached_but_returned_as_a_copy() -> None:
    first = load_dataset_registry()
    first.pop("demo-pt")
    assert "demo-pt" in load_dataset_registry()


# ----------------------------------------------------------------------------------------------- LlamaFactory


def write_info(folder: Path, info: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dataset_info.json"
    path.write_text(json.dumps(info), encoding="utf-8")
    return path


class TestDatasetInfo:
    def test_llamafactory_conventions(self, tmp_path: Path) -> None:
        path = write_info(
            tmp_path,
            {
                "plain": {"file_name": "alpaca.json"},
                "remote": {"hf_hub_url": "org/data", "file_name": "ignored.json", "subset": "en", "split": "test"},
                "ms_only": {"ms_hub_url": "org/ms"},
                "chat": {"file_name": "c.json", "formatting": "openai", "tags": {"observation_tag": "function"}},
                "pairs": {
                    "file_name": "p.json",
                    "formatting": "sharegpt",
                    "ranking": True,
                    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
                },
                "corpus": {"file_name": "c4.jsonl", "columns": {"prompt": "text"}, "num_samples": 50},
            },
        )
        entries = entries_from_dataset_info(path)
        assert entries["plain"].file == (tmp_path / "alpaca.json").resolve()
        assert (
            entries["plain"].format == "alpaca" and entries["plain"].stage == "sft" and entries["plain"].columns == {}
        )
        remote = entries["remote"]
        assert (remote.hf_hub_url, remote.file, remote.subset, remote.split) == ("org/data", None, "en", "test")
        assert "ms_hub_url" in entries["ms_only"].description
        chat = entries["chat"]
        assert chat.format == "sharegpt" and chat.tags == {**OPENAI_TAGS, "observation_tag": "function"}
        pairs = entries["pairs"]
        assert pairs.ranking and pairs.stage == "dpo"
        # LlamaFactory reads only the columns an entry lists once it lists any
        assert pairs.columns["system"] == "" and pairs.columns["messages"] == "conversations"
        corpus = entries["corpus"]
        assert corpus.stage == "pt" and corpus.num_samples == 50
        assert convert_row({"text": "Hello."}, corpus.format_spec(), "pt") == {"text": "Hello."}

    def test_openai_formatting_converts(self, tmp_path: Path) -> None:
        path = write_info(
            tmp_path, {"chat": {"file_name": "c.json", "formatting": "openai", "columns": {"messages": "messages"}}}
        )
        entry = entries_from_dataset_info(path)["chat"]
        row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
        assert convert_row(row, entry.format_spec(), "sft")["messages"][1] == {"role": "assistant", "content": "a"}

    def test_listed_columns_only(self, tmp_path: Path) -> None:
        path = write_info(
            tmp_path, {"d": {"file_name": "d.json", "columns": {"prompt": "instruction", "response": "output"}}}
        )
        entry = entries_from_dataset_info(path)["d"]
        row = {"instruction": "q", "input": "ignored by LlamaFactory", "output": "a", "system": "ignored too"}
        assert convert_row(row, entry.format_spec(), "sft") == {
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        }

    @pytest.mark.parametrize(
        ("info", "message"),
        [
            ({"d": {"file_name": "x", "formatting": "xml"}}, "formatting"),
            ({"d": {"file_name": "x", "colums": {}}}, "colums"),
            ({"d": "not an object"}, "expected an object"),
        ],
    )
    def test_bad_entries(self, tmp_path: Path, info: dict[str, object], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            entries_from_dataset_info(write_info(tmp_path, info))

    def test_bad_json(self, tmp_path: Path) -> None:
        path = tmp_path / "dataset_info.json"
        path.write_text("{\n  oops\n}", encoding="utf-8")
        with pytest.raises(ValueError, match=r"dataset_info.json:2"):
            entries_from_dataset_info(path)


# ----------------------------------------------------------------------------------------------- lookup


def test_find_dataset_prefers_dataset_dir(tmp_path: Path) -> None:
    write_info(
        tmp_path,
        {"demo-pt": {"file_name": "mine.jsonl", "columns": {"prompt": "text"}}, "extra": {"file_name": "e.json"}},
    )
    local = find_dataset("demo-pt", tmp_path)
    assert local is not None and local.file == (tmp_path / "mine.jsonl").resolve()
    registry_entry = find_dataset("demo-pt")
    assert registry_entry is not None and registry_entry.file == REGISTRY_DIR / "data" / "demo_pt.jsonl"
    assert find_dataset("demo-sft-alpaca", tmp_path) == load_dataset_registry()["demo-sft-alpaca"]
    extra = find_dataset("extra", tmp_path)
    assert extra is not None and extra.format == "alpaca"
    assert find_dataset("extra") is None
    assert find_dataset("no-such-dataset", tmp_path / "missing") is None


class TestYamlRegistry:
    def test_relative_files_resolve_against_the_yaml(self, tmp_path: Path) -> None:
        (tmp_path / "mine.yaml").write_text(
            "name: mine\nstage: sft\nfile: data/x.jsonl\nformat: alpaca\n", encoding="utf-8"
        )
        entries = load_dataset_registry(tmp_path)
        assert entries["mine"].file == (tmp_path / "data" / "x.jsonl").resolve()

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("name: a\nfile: x.json\nfromat: alpaca\n", "fromat"),
            ("name: a\nfile: x.json\nformat: xml\n", "format"),
            ("name: a\nfile: x.json\nstage: rlhf\n", "stage"),
            ("name: a\n", "file"),
            ("- just\n- a list\n", "mapping"),
            ("name: [unclosed\n", "YAML"),
        ],
    )
    def test_bad_yaml_names_the_file(self, tmp_path: Path, text: str, message: str) -> None:
        (tmp_path / "bad.yaml").write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=message) as info:
            load_dataset_registry(tmp_path)
        assert "bad.yaml" in str(info.value)

    def test_duplicate_names(self, tmp_path: Path) -> None:
        for stem in ("one", "two"):
            (tmp_path / f"{stem}.yaml").write_text("name: same\nfile: x.json\n", encoding="utf-8")
        with pytest.raises(ValueError, match="already defined"):
            load_dataset_registry(tmp_path)

    def test_missing_folder(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="not found"):
            load_dataset_registry(tmp_path / "nope")
