"""runs.RunDir: the one reader of a run directory (job, plan, manifest, metrics, checkpoints, final, summary) and the
readers that used to parse job.yaml on their own (deepspeed worker, megatron, verl, eval, export) going through it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from factory_cli.backends import get_backend
from factory_cli.config.defaults import DeviceFacts, resolve_device_defaults
from factory_cli.config.dump import job_to_yaml
from factory_cli.config.errors import JobError, UsageError
from factory_cli.config.schema import DeepSpeedJob, JobBase, MegatronJob
from factory_cli.config.validate import load_and_validate
from factory_cli.runs import MetricsWriter, RunDir, mark_complete, read_metrics
from tests.unit.plan_helpers import EXAMPLES


def resolved(example: str, device: str, run_dir: Path, *overrides: str) -> JobBase:
    """An example job as `factory train` resolves it for `device`, writing into `run_dir`."""
    job = load_and_validate(EXAMPLES / example, [f"output.dir={run_dir}", *overrides]).job
    return resolve_device_defaults(job, DeviceFacts(device, bf16=device != "cpu"))


def written_run(tmp_path: Path, example: str = "sft_lora.yaml", device: str = "cpu") -> tuple[RunDir, JobBase]:
    """A run directory with every file a finished deepspeed run leaves."""
    run = RunDir(tmp_path / "run")
    job = resolved(example, device, run.path)
    assert run.prepare(job_to_yaml(job)) == []
    run.write_plan({"run_dir": str(run.path), "base_dirs": [str(EXAMPLES)], "device": device})
    run.manifest_file.parent.mkdir(parents=True)
    run.manifest_file.write_text(json.dumps({"model_path": "m", "train": "t", "eval": None}), encoding="utf-8")
    writer = run.metrics_writer()
    writer.write({"step": 1, "loss": 2.5})
    writer.write({"step": 2, "loss": float("nan")})
    for step, sealed in ((2, True), (4, True), (6, False)):
        checkpoint = run.checkpoints_dir / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        if sealed:
            (checkpoint / "trainer_state.json").write_text("{}", encoding="utf-8")
            mark_complete(checkpoint, step)
    run.final_dir.mkdir()
    run.summary_file.write_text(json.dumps({"ok": True, "steps": 6}), encoding="utf-8")
    return run, job


def test_reads_every_file_of_a_run(tmp_path: Path) -> None:
    run, job = written_run(tmp_path)
    assert run.is_run_dir()
    assert run.job() == job and run.job(DeepSpeedJob) == job
    assert run.plan()["device"] == "cpu" and run.base_dirs() == (EXAMPLES, run.path)
    assert run.manifest()["model_path"] == "m"
    records = run.metrics()
    assert records[0] == {"step": 1, "loss": 2.5} and records[1]["loss"] != records[1]["loss"]  # nan back
    assert len(read_metrics(run.path)) == 2  # the bare-path helper reads the same file
    assert [step for step, _ in run.checkpoints()] == [2, 4, 6]
    assert run.last_complete_checkpoint() == run.checkpoints_dir / "checkpoint-4"  # 6 was never sealed
    assert run.resume_checkpoint("auto") == run.checkpoints_dir / "checkpoint-4"
    assert run.resume_checkpoint("never") is None
    assert run.final_dir.is_dir() and run.summary() == {"ok": True, "steps": 6}
    assert isinstance(run.metrics_writer(), MetricsWriter)


def test_a_changed_job_keeps_the_previous_one(tmp_path: Path) -> None:
    run, job = written_run(tmp_path)
    changed = job.model_copy(update={"stage": "pt"})
    (note,) = run.prepare(job_to_yaml(changed))
    assert "previous one is kept" in note and len(list(run.path.glob("job.*.yaml"))) == 1


def test_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist") as nowhere:
        RunDir(tmp_path / "nowhere").job()
    assert nowhere.value.hint is not None and "output.dir" in nowhere.value.hint
    folder = RunDir(tmp_path / "folder")
    folder.path.mkdir()
    for read in (folder.job, folder.plan, folder.manifest, folder.summary):
        with pytest.raises(UsageError, match=r"is not a run directory: it has no job\.yaml"):
            read()
    assert not folder.is_run_dir() and folder.metrics() == [] and folder.checkpoints() == []
    run = RunDir(tmp_path / "run")
    run.prepare(job_to_yaml(resolved("sft_lora.yaml", "cpu", run.path)))
    with pytest.raises(UsageError, match=r"plan.json is missing \(the plan"):
        run.plan()
    with pytest.raises(UsageError, match=r"manifest.json is missing \(the prepared data"):
        run.manifest()
    run.plan_file.write_text("[1, 2", encoding="utf-8")
    with pytest.raises(UsageError, match=r"plan\.json is not valid JSON"):
        run.plan()


def test_the_job_is_validated_and_of_the_backend_asked_for(tmp_path: Path) -> None:
    run, _ = written_run(tmp_path)
    with pytest.raises(UsageError, match="is a deepspeed job, not the MegatronJob"):
        run.job(MegatronJob)
    run.job_file.write_text(run.job_file.read_text(encoding="utf-8").replace("stage: sft", "stage: sftt"))
    with pytest.raises(JobError, match="unknown stage"):
        run.job()


# ------------------------------------------------------------------------------------- the former readers


class Read(Exception):
    """Raised by the recording RunDir.job once a reader asked for the job."""


def _worker(run: RunDir, tmp_path: Path) -> None:
    from factory_cli.backends.deepspeed.worker import load_run_inputs

    load_run_inputs(run.plan_file)


def _megatron(run: RunDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from factory_cli.backends.common import run as common_run

    job = resolved("megatron_sft.yaml", "npu", run.path)
    plan = get_backend("megatron").plan(job, "npu")
    monkeypatch.setattr(common_run, "_module_found", lambda dotted, homes: True)
    monkeypatch.setenv("MINDSPEED_LLM_HOME", str(tmp_path))
    get_backend("megatron").run(plan, _Quiet())


def _verl(run: RunDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from factory_cli.backends.common import run as common_run

    job = resolved("verl_sft.yaml", "cuda", run.path)
    monkeypatch.setattr(common_run, "_module_found", lambda dotted, homes: True)
    get_backend("verl").run(get_backend("verl").plan(job, "cuda"), _Quiet())


def _eval(run: RunDir, tmp_path: Path) -> None:
    from factory_cli.evaluation.run import EvalRequest, ppl_source

    ppl_source(EvalRequest(model=str(run.path), tasks=["ppl"]), [run.path])


def _quantize(run: RunDir, tmp_path: Path) -> None:
    from factory_cli.export.quantize import calibration_source

    calibration_source(None, run.path)


def _merge(run: RunDir, tmp_path: Path) -> None:
    from factory_cli.export.merge import _run_template

    _run_template(run.path)


class _Quiet:
    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...


READERS: dict[str, Callable[..., None]] = {
    "deepspeed worker": _worker,
    "megatron": _megatron,
    "verl": _verl,
    "eval": _eval,
    "export quantize": _quantize,
    "export merge": _merge,
}


@pytest.mark.parametrize("reader", list(READERS))
def test_every_former_reader_goes_through_run_dir(reader: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, _ = written_run(tmp_path)
    asked: list[tuple[Path, Any]] = []

    def recording_job(self: RunDir, kind: Any = None) -> JobBase:
        asked.append((self.path, kind))
        raise Read

    monkeypatch.setattr(RunDir, "job", recording_job)
    call = READERS[reader]
    with pytest.raises(Read):
        if reader in ("megatron", "verl"):
            call(run, tmp_path, monkeypatch)
        else:
            call(run, tmp_path)
    assert [path for path, _ in asked] == [run.path]
