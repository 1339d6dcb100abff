"""modeling/hubs.py and modeling/locate.py: where a model's files are (a local path, a hub's cache, a hub), which hub
`model.source` and the hubs' own variables pick, and the one fast refusal when nothing can serve it — in
`factory check`, `factory train` and the run's own fetch. No test reaches a network: hubs are 127.0.0.1 stand-ins,
closed ports or offline switches."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from factory_cli.cli import app
from factory_cli.config.errors import UsageError
from factory_cli.config.schema import ModelSection
from factory_cli.hub import _reachable
from factory_cli.modeling.download import fetch_model
from factory_cli.modeling.hubs import HUBS, Hub, default_hub, hub_order, missing_model_files
from factory_cli.modeling.locate import ModelLocation, locate_model, model_unavailable
from factory_cli.modeling.sources import ModelSource
from factory_cli.train import ConsoleProgress
from tests.hub_stand_in import COMMIT, cache_snapshot, isolate_hubs, serve_repo

QWEN = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture(autouse=True)
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Empty caches under tmp_path, no hub variables from the calling shell, no remembered probe."""
    isolate_hubs(tmp_path, monkeypatch)
    yield tmp_path
    _reachable.cache_clear()


def model(name: str, **fields: object) -> ModelSection:
    return ModelSection.model_validate({"name_or_path": name, **fields})


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------------------------ where it is


def test_a_local_folder_is_local_and_needs_no_hub(tmp_path: Path) -> None:
    folder = cache_snapshot(tmp_path / "elsewhere", "me/mine")  # any complete folder
    got = locate_model(model(str(folder)))
    assert (got.where, got.path, got.hub) == ("local", folder.resolve(), None)
    assert model_unavailable(got) is None
    assert got.describe() == f"from local folder {folder.resolve()}"


def test_a_local_gguf_file_is_local(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    got = locate_model(model("m.gguf"))
    assert got.where == "local" and got.describe().startswith("from local file ")


def test_a_registry_name_not_cached_is_a_download_from_the_hugging_face_hub(tmp_path: Path) -> None:
    got = locate_model(model("qwen2.5-0.5b-instruct"))
    assert (got.where, got.hub, got.repo_id, got.chosen_by) == ("remote", "hf", QWEN, None)
    assert got.searched == ("hf", "modelscope", "modelers")
    assert str(tmp_path / "qwen2.5-0.5b-instruct") in got.local_paths
    assert got.describe().startswith(f"to download: {QWEN} from the Hugging Face Hub (https://huggingface.co)")


def test_a_registry_name_in_the_hugging_face_cache_loads_from_there(tmp_path: Path) -> None:
    snapshot = cache_snapshot(tmp_path / "hf", QWEN)
    got = locate_model(model("qwen2.5-0.5b-instruct"))
    assert (got.where, got.hub, got.path) == ("cache", "hf", snapshot)
    assert got.describe() == f"from the Hugging Face cache {snapshot}"


def test_a_hub_id_at_a_revision_reads_that_ref_of_the_cache(tmp_path: Path) -> None:
    snapshot = cache_snapshot(tmp_path / "hf", "me/model")
    repo = snapshot.parents[1]
    (repo / "refs" / "v1").write_text("f" * 40)
    assert locate_model(model("me/model")).path == snapshot
    assert locate_model(model("me/model", revision="v1")).where == "remote"  # v1's snapshot is not there
    assert locate_model(model("me/model", revision=COMMIT)).path == snapshot


def test_an_incomplete_cached_copy_is_not_used(tmp_path: Path) -> None:
    snapshot = cache_snapshot(tmp_path / "hf", QWEN, {"config.json": "{}", "tokenizer.json": "{}"})
    assert missing_model_files(snapshot) == ["weights (*.safetensors)"]
    assert locate_model(model("qwen2.5-0.5b-instruct")).where == "remote"


def test_a_sharded_copy_needs_every_shard(tmp_path: Path) -> None:
    index = '{"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}'
    files = {"config.json": "{}", "tokenizer.json": "{}", "model.safetensors.index.json": index}
    snapshot = cache_snapshot(tmp_path / "hf", QWEN, {**files, "model-1.safetensors": ""})
    assert missing_model_files(snapshot) == ["model-2.safetensors"]
    (snapshot / "model-2.safetensors").write_text("")
    assert missing_model_files(snapshot) == []


def test_the_modelscope_cache_layout_is_found(tmp_path: Path) -> None:
    # modelscope writes <MODELSCOPE_CACHE>/hub/models/<owner>/<name>, with '.' in the name as '___'
    folder = tmp_path / "ms" / "hub" / "models" / "Qwen" / "Qwen2___5-0___5B-Instruct"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text("{}")
    got = locate_model(model("qwen2.5-0.5b-instruct"))
    assert (got.where, got.hub, got.path) == ("cache", "modelscope", folder)
    assert locate_model(model("qwen2.5-0.5b-instruct", source="hf")).where == "remote"  # hf looks only at its own


def test_a_modelers_copy_is_found_in_its_cache(tmp_path: Path) -> None:
    snapshot = cache_snapshot(tmp_path / "xdg" / "openmind" / "hub", QWEN)
    got = locate_model(model("qwen2.5-0.5b-instruct", source="modelers"))
    assert (got.where, got.hub, got.path) == ("cache", "modelers", snapshot)


def test_hf_home_and_hf_hub_cache_move_the_hugging_face_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert HUBS["hf"].cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "direct"))
    assert HUBS["hf"].cache_dir() == tmp_path / "direct"


def test_the_llamafactory_switches_choose_the_hub_of_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_hub() == ("hf", None)
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    assert default_hub() == ("modelscope", "USE_MODELSCOPE_HUB")
    assert hub_order("auto") == ["modelscope", "hf", "modelers"]
    got = locate_model(model("qwen2.5-0.5b-instruct"))
    assert (got.hub, got.chosen_by) == ("modelscope", "USE_MODELSCOPE_HUB")
    assert "chosen by USE_MODELSCOPE_HUB" in got.describe()
    monkeypatch.delenv("USE_MODELSCOPE_HUB")
    monkeypatch.setenv("USE_OPENMIND_HUB", "true")
    assert default_hub() == ("modelers", "USE_OPENMIND_HUB")
    assert locate_model(model("qwen2.5-0.5b-instruct", source="hf")).hub == "hf"  # the job's choice wins


def test_endpoints_come_from_the_hubs_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [HUBS[h].endpoint() for h in ("hf", "modelscope", "modelers")] == [
        "https://huggingface.co",
        "https://www.modelscope.cn",
        "https://modelers.cn",
    ]
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com/")
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "modelscope.example")  # a bare host, as modelscope reads it
    monkeypatch.setenv("OPENMIND_HUB_ENDPOINT", "https://om.example")
    assert [HUBS[h].endpoint() for h in ("hf", "modelscope", "modelers")] == [
        "https://hf-mirror.com",
        "https://modelscope.example",
        "https://om.example",
    ]


def test_a_registry_entry_may_name_another_id_per_hub() -> None:
    source = ModelSource("registry", QWEN, hub_ids=(("modelers", "PyTorch-NPU/qwen2.5_0.5b_instruct"),))
    assert source.repo_id("hf") == QWEN and source.repo_id("modelscope") == QWEN
    assert source.repo_id("modelers") == "PyTorch-NPU/qwen2.5_0.5b_instruct"


def test_a_missing_local_path_is_still_the_resolvers_error() -> None:
    with pytest.raises(UsageError, match="does not exist"):
        locate_model(model("./no/such/dir"))


# ------------------------------------------------------------------------------------------------ the refusal


def test_model_source_local_never_downloads(tmp_path: Path) -> None:
    got = locate_model(model("qwen2.5-0.5b-instruct", source="local"))
    assert got.where == "missing"
    problem = model_unavailable(got)
    assert problem is not None
    assert "model.source is local" in problem.message and str(tmp_path / "hf") in problem.message
    assert problem.hint is not None and "factory download qwen2.5-0.5b-instruct --to DIR" in problem.hint


def test_offline_mode_refuses_without_a_connection(monkeypatch: pytest.MonkeyPatch, real_hub_probe: None) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("factory_cli.hub._connect", lambda *a: pytest.fail("probed although offline"))
    problem = model_unavailable(locate_model(model("qwen2.5-0.5b-instruct")))
    assert problem is not None
    assert "cannot be downloaded: offline mode is on (HF_HUB_OFFLINE)" in problem.message
    assert f"it would come from {QWEN} on the Hugging Face Hub" in problem.message
    assert problem.hint is not None
    for fix in ("local checkpoint folder", "factory download", "HF_ENDPOINT", "model.source: modelscope or modelers"):
        assert fix in problem.hint


def test_an_unreachable_endpoint_refuses_at_once(monkeypatch: pytest.MonkeyPatch, real_hub_probe: None) -> None:
    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    problem = model_unavailable(locate_model(model("qwen2.5-0.5b-instruct")))
    assert time.monotonic() - started < 3.0
    assert problem is not None and f"127.0.0.1:{port} is not reachable from here" in problem.message


def test_the_proxy_is_what_is_probed(monkeypatch: pytest.MonkeyPatch, real_hub_probe: None) -> None:
    port = closed_port()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    problem = model_unavailable(locate_model(model("qwen2.5-0.5b-instruct")))
    assert problem is not None and f"127.0.0.1:{port} (through HTTPS_PROXY) is not reachable" in problem.message


def test_a_reachable_endpoint_lets_the_download_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_hub_probe: None
) -> None:
    (tmp_path / "repo").mkdir()
    with serve_repo(tmp_path / "repo") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert model_unavailable(locate_model(model("qwen2.5-0.5b-instruct"))) is None
        assert hub.requests == []  # a TCP connection, no request


def test_the_probe_is_bounded_even_when_nothing_answers(monkeypatch: pytest.MonkeyPatch, real_hub_probe: None) -> None:
    def hangs(address: tuple[str, int], timeout: float) -> bool:
        time.sleep(30)  # a name lookup that never returns
        return True

    monkeypatch.setattr("factory_cli.hub._connect", hangs)
    monkeypatch.setattr("factory_cli.hub.HUB_PROBE_TIMEOUT_S", 0.2)
    started = time.monotonic()
    from factory_cli.hub import address_reachable

    assert address_reachable(("huggingface.co", 443), 0.2) is False
    assert time.monotonic() - started < 3.0


def test_a_hub_library_that_is_not_installed_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Hub, "installed", lambda self: self.name == "hf")
    problem = model_unavailable(locate_model(model("qwen2.5-0.5b-instruct", source="modelscope")))
    assert problem is not None and "its library `modelscope` is not installed" in problem.message
    assert problem.hint is not None and problem.hint.startswith("pip install modelscope")
    problem = model_unavailable(locate_model(model("qwen2.5-0.5b-instruct", source="modelers")))
    assert problem is not None and problem.hint is not None and problem.hint.startswith("pip install openmind_hub")


# ------------------------------------------------------------------------------------------------ check, train, run

JOB = """\
backend: deepspeed
stage: sft
device: cpu
model:
  name_or_path: qwen2.5-0.5b-instruct
method: {{type: lora}}
data:
  train: [demo-sft-alpaca]
  max_length: 128
train: {{max_steps: 1, micro_batch_size: 1}}
output: {{dir: {run}}}
"""
WIDE = {"COLUMNS": "240", "NO_COLOR": "1", "TERM": "dumb"}


def run_cli(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args, env=WIDE)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("command", ["check", "train"])
def test_check_and_train_refuse_an_unreachable_model_fast_with_one_message(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_hub_probe: None
) -> None:
    port = closed_port()  # a hub that cannot answer (a hanging one is bounded: test_the_probe_is_bounded...)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    job = tmp_path / "job.yaml"
    job.write_text(JOB.format(run=tmp_path / "run"))
    started = time.monotonic()
    code, output = run_cli([command, str(job)])
    elapsed = time.monotonic() - started
    assert code == 2, output
    assert elapsed < 5.0
    assert "Traceback" not in output
    assert f"{job}:5 model.name_or_path: model `qwen2.5-0.5b-instruct` is not on this machine" in output
    assert f"127.0.0.1:{port} is not reachable from here" in output and "factory download" in output
    assert "1 problem — nothing was started" in output
    assert not (tmp_path / "run").exists()


def test_check_says_where_the_model_comes_from(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(JOB.format(run=tmp_path / "run"))
    code, output = run_cli(["check", str(job)])
    assert code == 0, output
    assert f"to download: {QWEN} from the Hugging Face Hub" in output
    snapshot = cache_snapshot(tmp_path / "hf", QWEN)
    code, output = run_cli(["check", str(job), "model.source=hf"])
    assert code == 0, output
    assert "from the Hugging Face cache" in output
    from factory_cli.config.summary import model_origin
    from factory_cli.config.validate import load_and_validate

    assert model_origin(load_and_validate(job).job, ()) == f"from the Hugging Face cache {snapshot}"


def test_model_source_is_a_job_field_and_an_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(JOB.format(run=tmp_path / "run"))
    code, output = run_cli(["check", str(job), "model.source=modelscope"])
    assert code == 2 and "command line model.source: " in output and "pip install modelscope" in output
    monkeypatch.setattr(Hub, "installed", lambda self: True)
    code, output = run_cli(["check", str(job), "model.source=modelscope"])
    assert code == 0, output
    assert f"to download: {QWEN} from ModelScope (https://www.modelscope.cn)" in output
    code, output = run_cli(["check", str(job), "model.source=hugginface"])
    assert code == 2 and "model.source: `hugginface` is not allowed; choose one of: auto, local, hf" in output


def test_a_run_that_passed_check_but_lost_its_network_refuses_the_same_way(
    monkeypatch: pytest.MonkeyPatch, real_hub_probe: None
) -> None:
    """The fetch every run step calls (fetch_model) refuses like check, before any library waits on retries."""
    from factory_cli.backends.common.run import materialize_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(UsageError, match="offline mode is on") as info:
        fetch_model(model("qwen2.5-0.5b-instruct"))
    assert info.value.hint is not None and "factory download" in info.value.hint

    class Job:
        model = ModelSection(name_or_path="qwen2.5-0.5b-instruct")

    with pytest.raises(UsageError, match="offline mode is on"):
        materialize_model(Job(), Path("hf_model"), (), ConsoleProgress())  # type: ignore[arg-type]
    assert time.monotonic() - started < 3.0


def test_a_cached_model_is_fetched_with_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = cache_snapshot(tmp_path / "hf", QWEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch_model(model("qwen2.5-0.5b-instruct")) == str(snapshot)
    location = locate_model(model("qwen2.5-0.5b-instruct"))
    assert isinstance(location, ModelLocation) and model_unavailable(location) is None


HUB_DATA_JOB = """\
backend: deepspeed
stage: sft
device: cpu
model: {{name_or_path: {model}}}
data:
  train: [{{path: someone/instructions, format: alpaca}}]
  max_length: 128
train: {{max_steps: 1, micro_batch_size: 1}}
output: {{dir: {run}}}
"""


def test_check_refuses_a_hub_dataset_it_cannot_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_hub_probe: None
) -> None:
    folder = cache_snapshot(tmp_path / "models", "me/mine")  # a local model: only the dataset needs the Hub
    job = tmp_path / "job.yaml"
    job.write_text(HUB_DATA_JOB.format(model=folder, run=tmp_path / "run"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, output = run_cli(["check", str(job)])
    assert code == 2, output
    assert "data.train[0]: dataset `someone/instructions` is not on this machine and cannot be downloaded" in output
    assert "factory download someone/instructions --dataset --to DIR" in output
    (tmp_path / "hf" / "datasets--someone--instructions" / "snapshots" / "abc").mkdir(parents=True)
    code, output = run_cli(["check", str(job)])
    assert code == 0, output
    assert "someone/instructions (alpaca), from the cache" in output


def test_the_dpo_reference_is_checked_like_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = cache_snapshot(tmp_path / "models", "me/mine")
    job = tmp_path / "job.yaml"
    job.write_text(
        JOB.format(run=tmp_path / "run")
        .replace("sft", "dpo")
        .replace("qwen2.5-0.5b-instruct", str(folder))
        .replace("[demo-sft-alpaca]", "[demo-dpo]")
        + "dpo: {ref_model: ./no/such/ref}\n"
    )
    code, output = run_cli(["check", str(job)])
    assert code == 2 and "dpo.ref_model: dpo.ref_model `./no/such/ref` does not exist" in output, output
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(Hub, "unavailable", Hub.offline_reason)
    code, output = run_cli(["check", str(job), "dpo.ref_model=qwen2.5-0.5b-instruct"])
    assert code == 2 and "dpo.ref_model: model `qwen2.5-0.5b-instruct` is not on this machine" in output, output


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "--model", "qwen2.5-0.5b-instruct", "--tasks", "ppl"],
        ["export", "--model", "qwen2.5-0.5b-instruct", "-o", "out"],
        ["chat", "--model", "qwen2.5-0.5b-instruct"],
    ],
    ids=["eval", "export", "chat"],
)
def test_eval_export_and_chat_refuse_the_same_way(args: list[str], tmp_path: Path) -> None:
    """The same refusal through the real command, before any model library asks the network."""
    import os
    import subprocess
    import textwrap

    code = textwrap.dedent(
        f"""
        import sys
        from factory_cli.cli import app
        try:
            app({args!r}, prog_name="factory")
        except SystemExit as exc:
            print("EXIT", exc.code, file=sys.stderr)
        """
    )
    env = {**os.environ, **WIDE, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, input="", capture_output=True, text=True, timeout=60
    )
    output = " ".join(proc.stderr.split())
    assert "EXIT 2" in output and "Traceback" not in output, output
    assert "model `qwen2.5-0.5b-instruct` is not on this machine and cannot be downloaded: offline mode" in output


def test_the_registry_names_the_modelscope_id_where_it_differs() -> None:
    got = locate_model(model("llama-3.1-8b-instruct", source="modelscope"))
    assert (got.hub, got.repo_id) == ("modelscope", "LLM-Research/Meta-Llama-3.1-8B-Instruct")
    assert locate_model(model("llama-3.1-8b-instruct")).repo_id == "meta-llama/Llama-3.1-8B-Instruct"


def test_a_train_whose_hub_went_away_after_check_ends_in_the_same_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_hub_probe: None
) -> None:
    """check found the hub (patched here), the run's own fetch does not: one message, exit 2, no traceback."""
    import factory_cli.modeling.locate as locate

    monkeypatch.setattr(locate, "model_unavailable", lambda location: None)  # what check saw
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what the run sees
    job = tmp_path / "job.yaml"
    job.write_text(JOB.format(run=tmp_path / "run"))
    code, output = run_cli(["train", str(job)])
    assert code == 2, output
    assert "Traceback" not in output
    assert "model `qwen2.5-0.5b-instruct` is not on this machine and cannot be downloaded: offline mode" in output
