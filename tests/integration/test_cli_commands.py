"""The commands and options that other tests call as functions, run here through the command line itself (the typer
app, as the `factory` console script runs it): `factory chat`, and the `factory eval` / `factory export` options,
each with what it must change in the result."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from factory_cli.cli import app

pytestmark = pytest.mark.integration

WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _factory(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=WIDE, input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


# ------------------------------------------------------------------------------------------------------- chat


def _answers(out: str) -> list[str]:
    """What chat streamed after each `assistant: ` (the line end it adds after an answer removed)."""
    return [part.removesuffix("\n") for part in out.replace("(conversation cleared)\n", "").split("assistant: ")[1:]]


def test_chat_command_answers_piped_turns_with_the_options_given(tiny_llama_dir: Path) -> None:
    args = ["chat", "--model", str(tiny_llama_dir), "--device", "cpu", "--system", "be brief"]
    code, out, err = _factory(*args, "--max-new-tokens", "3", stdin="hello\n/reset\nhello\n/exit\nnever read\n")
    assert code == 0, out + err
    short = _answers(out)
    assert len(short) == 2 and "(conversation cleared)" in out  # /exit stopped before the third line
    assert short[0] == short[1]  # /reset: the same question from the same start, greedy, gets the same answer
    code, out, err = _factory(*args, "--max-new-tokens", "12", stdin="hello\n")
    (longer,) = _answers(out)
    assert code == 0 and longer.startswith(short[0]) and len(longer) > len(short[0]), (longer, short)


def test_chat_command_with_a_missing_model_is_one_message(tmp_path: Path) -> None:
    code, out, err = _factory("chat", "--model", str(tmp_path / "nowhere"), "--device", "cpu", stdin="hi\n")
    assert code == 2 and "Traceback" not in out + err
    assert "nowhere" in " ".join((out + err).split())


# ------------------------------------------------------------------------------------------------------- eval


def test_eval_options_from_the_command_line_reach_the_report(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "ppl.jsonl"
    data.write_text(
        "".join(json.dumps({"instruction": f"Say {n}.", "output": f"{n}"}) + "\n" for n in ("one", "two", "three"))
    )
    out = tmp_path / "report.json"
    model = str(tiny_llama_dir)
    code, stdout, stderr = _factory(
        "eval", "--model", model, "--compare", model, "--tasks", "ppl,gsm8k_demo", "--limit", "2",
        "--batch-size", "1", "--max-new-tokens", "3", "--num-fewshot", "0", "--dataset", str(data),
        "--dtype", "fp32", "--device", "cpu", "-o", str(out),
    )  # fmt: skip
    assert code == 0, stdout + stderr
    report = json.loads(out.read_text())
    request = report["request"]
    assert (request["compare"], request["batch_size"], request["max_new_tokens"], request["num_fewshot"]) == (
        model,
        1,
        3,
        0,
    )
    assert request["dtype"] == "fp32" and request["limit"] == 2
    first, second = report["models"]
    assert first["path"] == second["path"] == model
    ppl = next(r for r in first["results"] if r["task"] == "ppl")
    assert ppl["n"] == 2 and str(data) in ppl["details"]["dataset"]
    # the same model on both sides: every delta is exactly zero
    assert report["deltas"] and all(d["delta"] == 0 for d in report["deltas"]), report["deltas"]


# ----------------------------------------------------------------------------------------------------- export


def _safetensors_header(path: Path) -> dict[str, dict[str, object]]:
    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header: dict[str, dict[str, object]] = json.loads(handle.read(size))
    header.pop("__metadata__", None)
    return header


def test_export_dtype_and_shard_size_from_the_command_line(tiny_llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fp16"
    code, stdout, stderr = _factory(
        "export", "--model", str(tiny_llama_dir), "-o", str(out), "--dtype", "fp16", "--shard-size", "2MB",
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0, stdout + stderr
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and (out / "model.safetensors.index.json").is_file(), sorted(out.iterdir())
    for shard in shards:
        header = _safetensors_header(shard)
        assert {entry["dtype"] for entry in header.values()} == {"F16"}, shard.name
        # over the limit only by holding one tensor bigger than it (the 49k x 64 embedding)
        assert shard.stat().st_size <= 2_100_000 or len(header) == 1, (shard.name, list(header))
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"


def test_export_gguf_options_from_the_command_line_plan_that_file(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """--format / --gguf-type reach the export plan (what the written file then holds is asserted per type, in
    process, by tests/integration/test_export.py `test_gguf_is_read_back_by_the_gguf_package`)."""
    out = tmp_path / "gguf"
    args = ["export", "--model", str(tiny_llama_dir), "-o", str(out), "--format", "gguf", "--device", "cpu"]
    code, stdout, stderr = _factory(*args, "--gguf-type", "q8_0", "--dry-run")
    assert code == 0, stdout + stderr
    plan = json.loads(stdout[stdout.index("{") :])
    assert (plan["format"], plan["gguf_type"]) == ("gguf", "q8_0")
    assert any("write q8_0 GGUF model-q8_0.gguf" in step for step in plan["steps"]), plan["steps"]
    assert not out.exists()
    code, stdout, stderr = _factory(*args, "--gguf-type", "q4_k", "--dry-run")
    assert code == 2 and "q4_k" in stdout + stderr and "Traceback" not in stdout + stderr
