"""The megatron run steps that run without an engine checkout: the guard around engine scripts, the Ascend
set_env prelude, the packed-sequence count and the learning-rate schedule flags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from factory_cli.backends.megatron import bridge_export, roundtrip
from factory_cli.backends.megatron.args import optimizer_args, wsd_decay_iters
from factory_cli.backends.megatron.bridge_export import latest_iteration_dir
from factory_cli.backends.megatron.indexed import HEADER_SIZE, sequence_count, token_count
from factory_cli.backends.megatron.plan import on_device
from factory_cli.backends.megatron.tokenizer_copy import pad_choice, write_engine_tokenizer
from factory_cli.config.errors import UsageError
from factory_cli.config.schema import TrainSection
from factory_cli.launching import run_child

REPO = Path(__file__).resolve().parents[2]

# An engine script that fails the way Megatron-LM's preprocess can: it raises while a multiprocessing child it
# started is still alive, so a plain `python script.py` prints the traceback and then waits at exit forever.
HANGING_SCRIPT = textwrap.dedent(
    """
    import multiprocessing, os, sys, time

    def worker(pid_file):
        open(pid_file, "w").write(str(os.getpid()))
        time.sleep(3600)

    if __name__ == "__main__":
        child = multiprocessing.Process(target=worker, args=(sys.argv[1],))
        child.start()
        while not os.path.exists(sys.argv[1]) or not open(sys.argv[1]).read():
            time.sleep(0.01)
        open("/nonexistent-dir/train_text_document.bin", "wb")
    """
)


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail instead of hanging when the guard regresses."""

    def fail(*_: Any) -> None:
        raise TimeoutError("the failed step did not end")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_plain_failing_script_with_a_live_child_hangs(tmp_path: Path) -> None:
    """The failure the guard exists for is real: without it the process does not end."""
    script = tmp_path / "preprocess.py"
    script.write_text(HANGING_SCRIPT, encoding="utf-8")
    pid_file = tmp_path / "child.pid"
    process = subprocess.Popen(
        [sys.executable, str(script), str(pid_file)], start_new_session=True, stderr=subprocess.PIPE
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=3)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_the_guard_ends_a_failing_script_and_its_children(tmp_path: Path, alarm: None) -> None:
    script = tmp_path / "preprocess.py"
    script.write_text(HANGING_SCRIPT, encoding="utf-8")
    pid_file = tmp_path / "child.pid"
    argv = [sys.executable, "-m", "factory_cli.backends.megatron.guard", str(script), str(pid_file)]
    assert run_child(argv, {"PYTHONPATH": str(REPO)}) == 1
    child = int(pid_file.read_text())
    for _ in range(100):  # killed by the guard; gone once its parent (init) reaps it
        if not alive(child):
            break
        time.sleep(0.05)
    assert not alive(child)


def test_the_guard_passes_exit_codes_argv_and_the_script_folder(tmp_path: Path) -> None:
    (tmp_path / "sibling.py").write_text("VALUE = 'imported from the script folder'\n", encoding="utf-8")
    script = tmp_path / "tool.py"
    script.write_text(
        "import sys, sibling\nprint(sibling.VALUE, sys.argv[1:])\nsys.exit(int(sys.argv[1]))\n", encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    guard = [sys.executable, "-m", "factory_cli.backends.megatron.guard", str(script)]
    ok = subprocess.run([*guard, "0", "--x"], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "imported from the script folder ['0', '--x']" in ok.stdout
    failed = subprocess.run([*guard, "3"], env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 3


# ------------------------------------------------------------------------------------------------ Ascend


def fake_ascend(home: Path, atb: bool = True) -> None:
    """A CANN 9.x layout under $HOME/Ascend: cann/set_env.sh and nnal/atb/set_env.sh each export a variable."""
    (home / "Ascend" / "cann").mkdir(parents=True)
    (home / "Ascend" / "cann" / "set_env.sh").write_text("export FACTORY_CANN=cann\n", encoding="utf-8")
    if atb:
        (home / "Ascend" / "nnal" / "atb").mkdir(parents=True)
        (home / "Ascend" / "nnal" / "atb" / "set_env.sh").write_text("export FACTORY_ATB=atb\n", encoding="utf-8")


def run_on_npu(home: Path) -> subprocess.CompletedProcess[str]:
    probe = [sys.executable, "-c", "import os; print(os.environ.get('FACTORY_CANN'), os.environ.get('FACTORY_ATB'))"]
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    return subprocess.run(on_device(probe, "npu"), env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(Path("/usr/local/Ascend").exists(), reason="a real CANN install would be found first")
def test_npu_steps_source_cann_and_atb_under_home(tmp_path: Path) -> None:
    fake_ascend(tmp_path)
    done = run_on_npu(tmp_path)
    assert done.returncode == 0 and done.stdout.split() == ["cann", "atb"]


@pytest.mark.skipif(Path("/usr/local/Ascend").exists(), reason="a real CANN install would be found first")
def test_npu_steps_without_cann_stop_naming_where_they_looked(tmp_path: Path) -> None:
    done = run_on_npu(tmp_path)
    assert done.returncode == 127
    assert "no CANN set_env.sh in: /usr/local/Ascend/cann/set_env.sh" in done.stderr and done.stdout == ""


# ------------------------------------------------------------------------------------------------ schedule, data


def test_warmup_stable_decay_gives_megatron_its_decay_length() -> None:
    train = TrainSection.model_validate(
        {"scheduler": "warmup_stable_decay", "learning_rate": 1e-4, "global_batch_size": 8, "epochs": 1}
    )
    args = optimizer_args(train, 200)
    assert args[args.index("--lr-decay-style") + 1] == "WSD"
    assert args[args.index("--lr-wsd-decay-iters") + 1] == "20" and "--lr-wsd-decay-style" in args
    assert "--lr-wsd-decay-iters" not in optimizer_args(train, None)  # filled when the run step re-plans
    assert wsd_decay_iters(3) == 1
    cosine = TrainSection.model_validate({"scheduler": "cosine", "learning_rate": 1e-4, "global_batch_size": 8})
    assert "--lr-wsd-decay-iters" not in optimizer_args(cosine, 200)


def test_sequence_count_reads_the_index_header(tmp_path: Path) -> None:
    pytest.importorskip("megatron.core")
    from tests.unit.test_megatron_plan import write_index

    idx = tmp_path / "train_packed_input_ids_document.idx"
    write_index(idx, [[1, 2], [3], [4, 5, 6], [7]])
    assert sequence_count(idx) == 4 and token_count(idx) == 7
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"not an index")
    with pytest.raises(ValueError, match="bad header"):
        sequence_count(bad)
    cut = tmp_path / "cut.idx"
    cut.write_bytes(idx.read_bytes()[: HEADER_SIZE + 8])
    with pytest.raises(ValueError, match="cut short: 2 of 4"):
        token_count(cut)


def test_pretraining_samples_are_gpt_dataset_samples(tmp_path: Path) -> None:
    """An epoch of GPTDataset is (tokens - 1) // seq_length samples: each sample reads one token past its end."""
    pytest.importorskip("megatron.core")
    from factory_cli.backends.megatron.backend import pretraining_samples
    from tests.unit.test_megatron_plan import write_index

    idx = tmp_path / "train_text_document.idx"
    write_index(idx, [list(range(10)), list(range(7)), list(range(4))])  # 21 tokens
    assert pretraining_samples(idx, 4) == 5 and pretraining_samples(idx, 5) == 4 and pretraining_samples(idx, 20) == 1
    with pytest.raises(UsageError, match=r"21 tokens, not one sample of data\.max_length 21"):
        pretraining_samples(idx, 21)
    with pytest.raises(UsageError, match=r"preprocess wrote no missing\.idx"):
        pretraining_samples(tmp_path / "missing.idx", 4)


# ------------------------------------------------------------------------------------------------ SFT tokenizer


def test_pad_choice() -> None:
    assert pad_choice("<pad>", "</s>", "<unk>", "<s>") is None  # its own pad already differs
    assert pad_choice("<|im_end|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>") == "<|endoftext|>"  # SmolLM2
    assert pad_choice(None, "<|eot_id|>", None, "<|begin_of_text|>") == "<|begin_of_text|>"  # Llama-3
    with pytest.raises(UsageError, match="never train the end-of-turn token"):
        pad_choice(None, "</s>", None, "</s>")


def test_sft_tokenizer_copy_keeps_eos_a_target(smollm2_tokenizer_dir: Path, tmp_path: Path) -> None:
    """SmolLM2's pad is its EOS (<|im_end|>); Megatron-LM's SFT loss skips every target equal to the pad id, so the
    copy must pad with another token and still render the same chat-template ids."""
    from transformers import AutoTokenizer

    original = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir))
    assert original.pad_token_id == original.eos_token_id
    assert write_engine_tokenizer(smollm2_tokenizer_dir, tmp_path / "tok") == "<|endoftext|>"
    copy = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert copy.pad_token_id != copy.eos_token_id and copy.eos_token_id == original.eos_token_id
    chat = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    ids = copy.apply_chat_template(chat, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    want = original.apply_chat_template(chat, tokenize=True)
    want = want["input_ids"] if isinstance(want, dict) or hasattr(want, "keys") else want
    assert list(ids) == list(want)
    # What Megatron-LM's sft_dataset.py does to the targets: the end of the assistant turn stays a target.
    targets = list(ids)[1:]
    kept = [t for t in targets if t != copy.pad_token_id]
    assert copy.eos_token_id in kept


# ------------------------------------------------------------------------------------------------ CUDA export


def test_latest_iteration_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no latest_checkpointed_iteration\.txt"):
        latest_iteration_dir(tmp_path)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("120\n")
    with pytest.raises(FileNotFoundError, match="iter_0000120"):
        latest_iteration_dir(tmp_path)
    (tmp_path / "iter_0000120").mkdir()
    assert latest_iteration_dir(tmp_path) == tmp_path / "iter_0000120"


def test_export_loads_the_megatron_lm_checkpoint_through_bridge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bridge_export.py calls Bridge's Megatron-LM checkpoint reader on the last iteration, then saves HF weights
    (Bridge faked: the API names and arguments are the ones of Megatron-Bridge v0.6.0)."""
    calls: list[tuple[str, Any]] = []

    def load_megatron_model(path: str, model_type: str, use_cpu_init: bool) -> list[str]:
        calls.append(("load", (path, model_type, use_cpu_init)))
        return ["model chunk"]

    class AutoBridge:
        @classmethod
        def from_hf_pretrained(cls, path: str) -> AutoBridge:
            calls.append(("from_hf_pretrained", path))
            return cls()

        def save_hf_pretrained(self, models: list[str], path: str) -> None:
            calls.append(("save", (models, path)))

    bridge = types.ModuleType("megatron.bridge")
    bridge.AutoBridge = AutoBridge  # type: ignore[attr-defined]
    load_save = types.ModuleType("megatron.bridge.training.model_load_save")
    load_save.load_megatron_model = load_megatron_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "megatron.bridge", bridge)
    monkeypatch.setitem(sys.modules, "megatron.bridge.training", types.ModuleType("megatron.bridge.training"))
    monkeypatch.setitem(sys.modules, "megatron.bridge.training.model_load_save", load_save)
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "iter_0000007").mkdir(parents=True)
    (checkpoints / "latest_checkpointed_iteration.txt").write_text("7")
    argv = ["--hf-model", "hf", "--megatron-path", str(checkpoints), "--hf-path", str(tmp_path / "final")]
    assert bridge_export.main(argv) == 0
    assert calls == [
        ("load", (str(checkpoints / "iter_0000007"), "gpt", True)),
        ("from_hf_pretrained", "hf"),
        ("save", (["model chunk"], str(tmp_path / "final"))),
    ]


# ------------------------------------------------------------------------------------------------ round trip


def save_weights(folder: Path, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def test_roundtrip_names_what_a_converter_changed(tmp_path: Path) -> None:
    """The failure of MindSpeed-LLM 26.1.0 (q/k/v split as one block) is caught: heads put back in another order
    keeps names, shapes and the set of values but not the tensor."""
    torch.manual_seed(0)
    q, k = torch.randn(8, 4), torch.randn(4, 4)
    original = {"model.layers.0.self_attn.q_proj.weight": q, "model.layers.0.self_attn.k_proj.weight": k}
    reference = save_weights(tmp_path / "hf", original)
    same = save_weights(tmp_path / "same", {n: t.to(torch.bfloat16) for n, t in original.items()})
    assert roundtrip.differences(reference, same) == []  # a dtype change alone is not a difference
    swapped = {
        "model.layers.0.self_attn.q_proj.weight": torch.cat([q[4:], q[:4]]),
        "model.layers.0.self_attn.k_proj.weight": k,
    }
    wrong = save_weights(tmp_path / "wrong", swapped)
    assert roundtrip.differences(reference, wrong) == ["model.layers.0.self_attn.q_proj.weight: 32 of 32 values differ"]
    missing = save_weights(tmp_path / "missing", {"model.layers.0.self_attn.q_proj.weight": q})
    assert roundtrip.differences(reference, missing) == [
        "model.layers.0.self_attn.k_proj.weight: missing after the round trip"
    ]
    marker = tmp_path / "ok.json"
    argv = ["--reference", str(reference), "--marker", str(marker)]
    assert roundtrip.main([*argv, "--candidate", str(wrong)]) == 1 and not marker.exists()
    assert roundtrip.main([*argv, "--candidate", str(same)]) == 0 and marker.is_file()


def test_export_check_compares_names_and_shapes_only(tmp_path: Path) -> None:
    """A trained model's export changed its values but must keep every tensor of the start, with its shape."""
    start = save_weights(tmp_path / "hf", {"a.weight": torch.zeros(4, 4), "b.weight": torch.zeros(2)})
    trained = save_weights(tmp_path / "final", {"a.weight": torch.ones(4, 4), "b.weight": torch.ones(2)})
    assert roundtrip.differences(start, trained, values=False) == []
    assert roundtrip.differences(start, trained) != []
    broken = save_weights(tmp_path / "broken", {"a.weight": torch.ones(4, 2)})
    marker = tmp_path / "checked.json"
    argv = ["--shapes-only", "--reference", str(start), "--marker", str(marker)]
    assert roundtrip.main([*argv, "--candidate", str(broken)]) == 1 and not marker.exists()
    assert roundtrip.main([*argv, "--candidate", str(trained)]) == 0 and marker.is_file()


def test_roundtrip_allows_tied_output_layers(tmp_path: Path) -> None:
    embed = torch.randn(10, 4)
    reference = save_weights(tmp_path / "hf", {"model.embed_tokens.weight": embed})
    candidate = save_weights(tmp_path / "rt", {"model.embed_tokens.weight": embed, "lm_head.weight": embed.clone()})
    assert roundtrip.differences(reference, candidate) == []


def test_the_data_step_uses_the_engine_checkout(tmp_path: Path) -> None:
    """With --engine-home a checkout holding megatron/core, the pretraining data is written by that checkout's
    megatron-core (the one the train step reads it with), not by whatever megatron-core is installed; it is imported
    before any data is prepared."""
    core = tmp_path / "Megatron-LM" / "megatron" / "core"
    core.mkdir(parents=True)
    (core.parent / "__init__.py").write_text("")
    (core / "__init__.py").write_text("raise ImportError('the checkout megatron-core was imported')\n")
    argv = ["--run-dir", str(tmp_path / "run"), "--output-prefix", str(tmp_path / "out"), "--tokenizer", str(tmp_path)]
    argv += ["--engine-home", str(tmp_path / "Megatron-LM")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "factory_cli.backends.megatron.indexed", *argv],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "the checkout megatron-core was imported" in done.stderr
