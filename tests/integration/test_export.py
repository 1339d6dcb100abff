"""`factory export` on the tiny random Llama: LoRA merge round trip, tokenizer and chat template, shards, GGUF that
the `gguf` package reads back (and transformers reloads), and the command line's exit codes."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from factory_cli.config.errors import UsageError
from factory_cli.export import ExportRequest, run_export
from factory_cli.export.gguf_converter import CONVERTER
from factory_cli.export.run import EXPORT_FILE
from tests.unit.test_cli import run_cli

pytestmark = pytest.mark.integration

PROMPT = "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\nRed, green and"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def lora_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory as `factory train` leaves it: job.yaml + final/ (a LoRA adapter with the tokenizer).

    The adapter's B matrices are random (PEFT's init_lora_weights=False), so merging it changes the logits."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path_factory.mktemp("export-run") / "run"
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, init_lora_weights=False)
    adapted = get_peft_model(base, config)
    adapted.save_pretrained(run / "final")
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(run / "final")
    job = {
        "backend": "deepspeed",
        "stage": "sft",
        "model": {"name_or_path": str(tiny_llama_dir)},
        "method": {"type": "lora", "lora": {"rank": 4}},
        "data": {"train": [{"path": "demo-sft-messages"}], "max_length": 128},
    }
    (run / "job.yaml").write_text(yaml.safe_dump(job))
    return run


def _logits(model: Any, tokenizer: Any, text: str = PROMPT) -> Any:
    import torch

    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _request(model: str | Path, output: Path, **options: Any) -> ExportRequest:
    return ExportRequest(model=str(model), output=output, device="cpu", **options)


def test_lora_merge_round_trip_matches_base_plus_adapter(lora_run: Path, tiny_llama_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output = tmp_path / "merged"
    messages: list[str] = []
    report = run_export(_request(lora_run, output), progress=messages.append)

    assert report.kind == "merged" and report.output == output.resolve()
    assert report.check["tokenizer_matches"] is True
    assert report.check["max_abs_logit_diff"] < 1e-4 and report.check["top1_agreement"] == 1.0
    assert isinstance(report.check["generated"], str)
    assert any("merged the LoRA adapter" in n for n in report.notes)
    # sizes count the weight files only: the base's and the adapter's before, the merged checkpoint's after
    base_bytes = (tiny_llama_dir / "model.safetensors").stat().st_size
    assert report.size_before_bytes == base_bytes + (lora_run / "final" / "adapter_model.safetensors").stat().st_size
    assert report.size_after_bytes == (output / "model.safetensors").stat().st_size
    assert abs(report.size_after_bytes - base_bytes) < 4096  # the same tensors as the base, in the same dtype
    assert messages[-1].startswith("checking the output")

    # the merged checkpoint is a plain model: no adapter files, a full config, safetensors weights
    assert not (output / "adapter_config.json").exists() and (output / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((output / "config.json").read_text())
    assert not list(output.parent.glob(".merged.tmp-*")), "the staging folder was left behind"
    assert stat.S_IMODE(output.stat().st_mode) == 0o755

    # merged logits == base + unmerged adapter logits, computed independently of the exporter
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    base_logits = _logits(base, tokenizer)
    adapted = PeftModel.from_pretrained(base, str(lora_run / "final")).eval()
    expected = _logits(adapted, tokenizer)
    merged = AutoModelForCausalLM.from_pretrained(output).eval()
    got = _logits(merged, tokenizer)
    assert (expected - base_logits).abs().max().item() > 1e-2, "the adapter should change the logits"
    assert (got - expected).abs().max().item() < 1e-4

    provenance = json.loads((output / EXPORT_FILE).read_text())
    assert provenance["kind"] == "merged" and provenance["source"]["run_dir"] == str(lora_run)
    assert provenance["source"]["base"] == str(tiny_llama_dir)
    assert {"torch", "transformers", "peft"} <= set(provenance["versions"])


def test_tokenizer_and_chat_template_are_copied(lora_run: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    output = tmp_path / "merged"
    run_export(_request(lora_run / "final", output))
    source = AutoTokenizer.from_pretrained(lora_run / "final")
    exported = AutoTokenizer.from_pretrained(output)
    assert (output / "tokenizer.json").is_file()
    assert source.chat_template and exported.chat_template == source.chat_template
    assert exported("Hello, world!")["input_ids"] == source("Hello, world!")["input_ids"]
    assert (exported.eos_token, exported.pad_token) == (source.eos_token, source.pad_token)
    chat = [{"role": "user", "content": "hi"}]
    assert exported.apply_chat_template(chat, tokenize=False) == source.apply_chat_template(chat, tokenize=False)


def test_an_adapter_without_a_template_gets_the_runs_template(lora_run: Path, tmp_path: Path) -> None:
    """A tokenizer without a chat template takes the one the run trained with (job.yaml model.template)."""
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    config = json.loads((run / "final" / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (run / "final" / "tokenizer_config.json").write_text(json.dumps(config))
    (run / "final" / "chat_template.jinja").unlink(missing_ok=True)
    job = yaml.safe_load((run / "job.yaml").read_text())
    job["model"]["template"] = "chatml"
    (run / "job.yaml").write_text(yaml.safe_dump(job))

    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(run / "final").chat_template is None
    report = run_export(_request(run, tmp_path / "merged"))
    assert any("`chatml` template" in n for n in report.notes)
    exported = AutoTokenizer.from_pretrained(tmp_path / "merged")
    text = exported.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "<|im_start|>user\nhi<|im_end|>" in text


def test_shard_size_and_dtype_are_respected(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    output = tmp_path / "sharded"
    report = run_export(_request(tiny_llama_dir, output, shard_size="2MB", dtype="bf16"))
    assert report.kind == "resaved"
    index = json.loads((output / "model.safetensors.index.json").read_text())
    shards = sorted(output.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and set(index["weight_map"].values()) == {s.name for s in shards}
    for shard in shards:
        with safe_open(str(shard), "pt") as handle:
            keys = list(handle.keys())
            dtypes = {handle.get_slice(k).get_dtype() for k in keys}
        # a shard may exceed the limit only by holding one tensor that is bigger than it (the 49k x 64 embedding)
        assert shard.stat().st_size <= 2_000_000 + 100_000 or len(keys) == 1, (shard.name, keys)
        assert dtypes == {"BF16"}
    assert json.loads((output / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(output)
    assert len(model.state_dict()) >= len(index["weight_map"])
    # the check compares with the source as loaded for export (in bf16): the files hold exactly those weights
    assert report.check["max_abs_logit_diff"] == 0.0 and report.check["top1_agreement"] == 1.0
    assert report.size_after_bytes == sum(s.stat().st_size for s in shards)
    assert report.size_after_bytes == pytest.approx(report.size_before_bytes / 2, rel=0.01)  # bf16 from fp32


@pytest.mark.parametrize("gguf_type", ["f16", "q8_0"])
def test_gguf_is_read_back_by_the_gguf_package(
    lora_run: Path, tiny_llama_dir: Path, tmp_path: Path, gguf_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize
    from transformers import AutoConfig, AutoTokenizer

    _path_without_a_converter(monkeypatch)  # the built-in writer: the fallback where llama.cpp is not installed
    if gguf_type == "f16":  # -o a folder: <folder>/<folder name>-<type>.gguf + factory_export.json
        output = tmp_path / "gguf"
        report = run_export(_request(lora_run, output, format="gguf", gguf_type=gguf_type))
        assert sorted(f.name for f in output.iterdir()) == [EXPORT_FILE, "gguf-f16.gguf"]
        file = output / "gguf-f16.gguf"
    else:  # -o a .gguf file: exactly that file, nothing next to it
        file = tmp_path / "tiny.gguf"
        report = run_export(_request(lora_run, file, format="gguf", gguf_type=gguf_type))
        assert list(tmp_path.iterdir()) == [file] and report.output == file.resolve()
    assert report.kind == f"gguf-{gguf_type}"
    assert report.size_after_bytes == file.stat().st_size

    reader = GGUFReader(str(file))
    config = AutoConfig.from_pretrained(tiny_llama_dir)
    layers = config.num_hidden_layers
    # per layer: attn_norm, q, k, v, o, ffn_norm, gate, up, down; plus token_embd and output_norm (tied: no output)
    assert len(reader.tensors) == 9 * layers + 2
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight", f"blk.{layers - 1}.ffn_down.weight"} <= (
        names
    )
    assert "output.weight" not in names
    kinds = {t.name: t.tensor_type for t in reader.tensors}
    assert kinds["output_norm.weight"] == GGMLQuantizationType.F32
    matrix = GGMLQuantizationType.F16 if gguf_type == "f16" else GGMLQuantizationType.Q8_0
    assert kinds["blk.0.attn_q.weight"] == matrix and kinds["blk.0.ffn_down.weight"] == matrix

    fields = reader.fields
    assert fields["general.architecture"].contents() == "llama"
    assert fields["llama.block_count"].contents() == layers
    assert fields["llama.embedding_length"].contents() == config.hidden_size
    assert fields["llama.attention.head_count_kv"].contents() == config.num_key_value_heads
    tokenizer = AutoTokenizer.from_pretrained(lora_run / "final")
    assert len(fields["tokenizer.ggml.tokens"].contents()) == config.vocab_size
    assert fields["tokenizer.ggml.eos_token_id"].contents() == tokenizer.eos_token_id
    assert fields["tokenizer.chat_template"].contents() == tokenizer.chat_template

    # the weights are the model's: the embedding (no LoRA on it) dequantizes to the base's, and transformers' GGUF
    # loader (which undoes llama.cpp's Q/K permutation) gives the merged source's logits back
    from safetensors.numpy import load_file

    embedding = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert [int(n) for n in embedding.shape] == [config.hidden_size, config.vocab_size]  # GGUF order: columns first
    values = dequantize(embedding.data, embedding.tensor_type).reshape(config.vocab_size, config.hidden_size)
    base = load_file(str(tiny_llama_dir / "model.safetensors"))["model.embed_tokens.weight"]
    assert np.abs(values - base).max() < (1e-4 if gguf_type == "f16" else 1e-3)
    assert report.check["tokenizer_matches"] is True
    tolerance = 0.01 if gguf_type == "f16" else 0.05
    assert report.check["max_abs_logit_diff"] < tolerance and report.check["top1_agreement"] >= 0.9
    assert any("built-in GGUF writer" in n and "not on PATH" in n for n in report.notes)


def _path_without_a_converter(monkeypatch: pytest.MonkeyPatch) -> None:
    folders = os.environ.get("PATH", "").split(os.pathsep)
    monkeypatch.setenv("PATH", os.pathsep.join(f for f in folders if not (Path(f) / CONVERTER).exists()))


# A stand-in for llama.cpp's convert_hf_to_gguf.py: same arguments; it logs them and the checkpoint it was given,
# then writes the GGUF with the built-in writer (or fails the way a converter newer than the `gguf` package does).
FAKE_CONVERTER = """#!/usr/bin/env python3
import argparse, json, sys
from pathlib import Path

sys.path.insert(0, {repo!r})
parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--outfile", required=True)
parser.add_argument("--outtype", required=True)
parser.add_argument("--model-name", required=True)
args = parser.parse_args()
files = sorted(p.name for p in Path(args.model).iterdir())
Path({log!r}).write_text(json.dumps({{"argv": sys.argv[1:], "files": files}}))
if {fail!r}:
    sys.exit("AttributeError: module 'gguf.constants' has no attribute 'NEWER_ARCH'")
from transformers import AutoModelForCausalLM, AutoTokenizer

from factory_cli.export.gguf_writer import write_gguf

model = AutoModelForCausalLM.from_pretrained(args.model)
write_gguf(model, AutoTokenizer.from_pretrained(args.model), Path(args.outfile), args.outtype, name=args.model_name)
"""


@pytest.mark.parametrize("fails", [False, True])
def test_gguf_goes_through_llama_cpps_converter_when_it_is_on_path(
    lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    folder, log = tmp_path / "bin", tmp_path / "converter.json"
    folder.mkdir()
    script = folder / CONVERTER
    script.write_text(FAKE_CONVERTER.format(repo=str(Path(__file__).resolve().parents[2]), log=str(log), fail=fails))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    file = tmp_path / "out" / "tiny.gguf"
    report = run_export(_request(lora_run, file, format="gguf", gguf_type="q8_0"))

    called = json.loads(log.read_text())
    checkpoint, *options = called["argv"]
    assert options[:4] == ["--outfile", options[1], "--outtype", "q8_0"] and options[4] == "--model-name"
    assert Path(options[1]).name == "tiny.gguf" and not Path(checkpoint).exists()  # a temporary checkpoint
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(called["files"])  # the merged model
    assert list((tmp_path / "out").iterdir()) == [file]  # nothing left next to it
    if fails:
        (note,) = [n for n in report.notes if "failed" in n]
        assert str(script) in note and "exit 1: AttributeError" in note and "built-in GGUF writer" in note
    else:
        assert f"GGUF written by llama.cpp's converter {script}" in report.notes
        assert not any("built-in GGUF writer" in n for n in report.notes)
    assert report.check["tokenizer_matches"] is True and report.check["top1_agreement"] >= 0.9


@pytest.mark.parametrize(
    ("quant", "weight_dtype", "method"),
    [("int8", "I8", "bitsandbytes"), ("nf4", "U8", "bitsandbytes"), ("fp8", "F8_E4M3", "compressed-tensors")],
)
def test_int8_nf4_fp8_on_cpu(tiny_llama_dir: Path, tmp_path: Path, quant: str, weight_dtype: str, method: str) -> None:
    """What this machine's libraries really do without a GPU: bitsandbytes' CPU backend quantizes and saves int8 / nf4,
    llm-compressor writes FP8 (W8A8 dynamic); all three reload in transformers and generate."""
    from safetensors import safe_open

    output = tmp_path / quant
    report = run_export(_request(tiny_llama_dir, output, quant=quant))
    config = json.loads((output / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == method
    with safe_open(str(output / "model.safetensors"), "pt") as handle:
        assert handle.get_slice("model.layers.0.mlp.down_proj.weight").get_dtype() == weight_dtype
        # embeddings stay in full precision
        assert handle.get_slice("model.embed_tokens.weight").get_dtype() == "F32"
    assert report.check["tokenizer_matches"] is True and report.check["top1_agreement"] >= 0.9
    assert report.size_after_bytes == (output / "model.safetensors").stat().st_size
    # the check's numbers are the largest logit difference and the top-1 agreement, recomputed here on the reloaded
    # export against the fp32 source
    diff, agreement = _difference_from_source(tiny_llama_dir, output)
    assert report.check["max_abs_logit_diff"] == pytest.approx(diff, rel=1e-3, abs=1e-5)
    assert report.check["top1_agreement"] == pytest.approx(agreement, abs=1e-4)
    assert 1e-3 < diff < 0.5  # quantized: close, not equal
    if method == "bitsandbytes":
        assert any("bitsandbytes" in n and "CPU backend" in n for n in report.notes)


def _difference_from_source(source: Path, output: Path) -> tuple[float, float]:
    """Max |logit difference| and top-1 agreement of the export at `output` against `source` on the check prompt."""
    from transformers import AutoModelForCausalLM

    from factory_cli.devices import DeviceInfo
    from factory_cli.export.verify import load_artifact, prompt_ids

    exported, tokenizer = load_artifact(output, None, DeviceInfo("cpu", 1, "cpu", False))
    ids = prompt_ids(tokenizer)
    reference = _logits_of_ids(AutoModelForCausalLM.from_pretrained(source).eval(), ids)
    got = _logits_of_ids(exported, ids)
    diff = (got - reference).abs()
    agreement = (got.argmax(-1) == reference.argmax(-1)).float().mean().item()
    return float(diff.max().item()), float(agreement)


def _logits_of_ids(model: Any, ids: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_bitsandbytes_without_a_supported_device_is_a_usage_error(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bitsandbytes build without this machine's device: one message and a hint, nothing written."""
    import bitsandbytes

    monkeypatch.setattr(bitsandbytes, "supported_torch_devices", set(), raising=False)
    with pytest.raises(UsageError) as caught:
        run_export(_request(tiny_llama_dir, tmp_path / "exports" / "int8", quant="int8"))
    assert caught.value.message.startswith("bitsandbytes cannot quantize to int8 on cpu")
    assert "gptq" in str(caught.value.hint)
    assert list((tmp_path / "exports").iterdir()) == []


def test_a_failed_export_leaves_nothing_behind(tiny_llama_dir: Path, tmp_path: Path) -> None:
    unusable = tmp_path / "unusable.jsonl"
    unusable.write_text('{"id": 1}\n{"id": 2}\n')
    exports = tmp_path / "exports"
    with pytest.raises(UsageError, match="no usable calibration rows"):
        run_export(_request(tiny_llama_dir, exports / "out", quant="gptq", calibration=str(unusable)))
    assert list(exports.iterdir()) == []  # the staging folder is gone


def test_force_replaces_an_existing_export(tiny_llama_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "stale.txt").write_text("old")
    with pytest.raises(UsageError, match="already exists"):
        run_export(_request(tiny_llama_dir, output))
    run_export(_request(tiny_llama_dir, output, overwrite=True))
    assert not (output / "stale.txt").exists() and (output / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------- command line


def test_cli_export_succeeds_and_reports(lora_run: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(["export", "--model", str(lora_run), "-o", str(tmp_path / "merged"), "--device", "cpu"])
    assert code == 0, out + err
    assert "export: merged" in out and "logits vs source" in out and "weights on disk" in out
    assert (tmp_path / "merged" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quant", "int4"], "unknown quantization"),
        (["--quant", "gptq", "--no-merge"], "--no-merge"),
        (["--format", "gguf", "--quant", "awq"], "do not combine"),
        (["--shard-size", "lots"], "bad shard size"),
        (["--group-size", "0", "--quant", "gptq"], "group size must be a positive integer"),
    ],
)
def test_cli_user_errors_exit_2_without_traceback(
    lora_run: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    code, out, err = run_cli(["export", "--model", str(lora_run), "-o", str(tmp_path / "out"), *args])
    assert code == 2, out + err
    assert message in " ".join((out + err).split())
    assert "Traceback" not in out + err
    assert not (tmp_path / "out").exists()


def test_cli_existing_output_exits_2_and_dry_run_plans(lora_run: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    code, out, err = run_cli(["export", "--model", str(lora_run), "-o", str(tmp_path / "out")])
    assert code == 2 and "already exists" in out + err and "--force" in out + err
    code, out, err = run_cli(
        ["export", "--model", str(lora_run), "-o", str(tmp_path / "out"), "--force", "--quant", "awq", "--dry-run"]
    )
    assert code == 0, out + err
    assert "merge the LoRA adapter" in out and "AWQ W4A16" in out and "demo-sft-messages (run)" in out
    assert list((tmp_path / "out").iterdir()) == []  # --dry-run writes nothing
