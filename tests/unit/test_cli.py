"""The `factory` command line: commands, exit codes, user errors without tracebacks, and no torch import
for `--help`, `config` and `check`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from factory_cli.cli import app
from tests.hub_stand_in import cached_registry_models

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}

DEEPSPEED_JOB = """\
backend: deepspeed
stage: sft
device: cpu
model:
  name_or_path: smollm2-135m-instruct
data:
  train: [demo-sft-alpaca]
train:
  epochs: 1
output:
  dir: {run_dir}
"""


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """Run `factory <args>` in-process through `app(...)` itself (as the console script does), so the app's
    handling of user errors (exit 2, no traceback) is part of what is tested. Returns (code, stdout, stderr)."""
    runner = CliRunner()
    with runner.isolation(env=WIDE) as (out, err, _):
        try:
            app(args, prog_name="factory")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        return code, out.getvalue().decode(), err.getvalue().decode()


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def deepspeed_job(tmp_path: Path) -> Path:
    job = tmp_path / "job.yaml"
    job.write_text(DEEPSPEED_JOB.format(run_dir=tmp_path / "run"), encoding="utf-8")
    return job


# ------------------------------------------------------------------------------------------------ help & list


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(app, ["--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    for command in ("list", "env", "config", "check", "train"):
        assert command in result.output


def test_no_arguments_shows_help() -> None:
    result = CliRunner().invoke(app, [], env=WIDE)
    assert "config" in result.output and "check" in result.output


@pytest.mark.parametrize(
    ("what", "shown"),
    [
        ("backends", ["deepspeed", "megatron", "verl"]),
        ("stages", ["pt", "sft", "dpo", "grpo"]),
        ("models", ["qwen2.5-7b-instruct", "smollm2-135m-instruct", "llama-3.1-8b"]),
        ("datasets", ["demo-sft-alpaca", "demo-dpo", "demo-grpo-math", "demo-pt"]),
        ("templates", ["chatml", "llama3", "qwen3"]),
        ("rewards", ["math_answer", "format"]),
        ("tasks", ["ppl", "gsm8k_demo", "arc_demo", "math_demo_harness", "lm:<task>"]),
    ],
)
def test_list(what: str, shown: list[str]) -> None:
    result = CliRunner().invoke(app, ["list", what], env=WIDE)
    assert result.exit_code == 0, result.output
    for name in shown:
        assert name in result.output


def test_list_unknown_exits_2_with_a_suggestion() -> None:
    code, _, err = run_cli(["list", "foo"])
    assert code == 2
    assert "nothing called `foo`" in err
    assert "backends" in err  # the hint lists what exists
    code, _, err = run_cli(["list", "model"])
    assert code == 2
    assert "did you mean `models`?" in err


def test_user_errors_exit_2_under_typer_clirunner() -> None:
    # CliRunner.invoke(app) runs the click command that typer builds from `app`, not `app.__call__`;
    # user errors must still come out as exit 2 with a message (not exit 1 with an exception).
    result = CliRunner().invoke(app, ["list", "foo"], env=WIDE)
    assert result.exit_code == 2, (result.exit_code, repr(result.exception))
    assert "nothing called `foo`" in result.output


# ------------------------------------------------------------------------------------------------ config


def test_config_prints_a_job_to_stdout() -> None:
    code, out, _ = run_cli(["config", "--backend", "deepspeed", "--stage", "dpo", "--method", "lora"])
    assert code == 0
    assert "backend: deepspeed" in out and "stage: dpo" in out and "dpo:" in out


def test_config_writes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "job.yaml"
    args = ["config", "--backend", "deepspeed", "--stage", "sft", "--model", "qwen2.5-0.5b-instruct", "-o", str(target)]
    code, out, _ = run_cli(args)
    assert code == 0
    assert target.is_file()
    assert "name_or_path: qwen2.5-0.5b-instruct" in target.read_text()
    assert "factory check" in out
    assert "2 field(s) marked ***" in _flat(out)  # the dataset and output.dir

    target.write_text("mine\n")
    code, _, err = run_cli(args)
    assert code == 2
    assert "exists" in err and "--force" in err
    assert target.read_text() == "mine\n"

    code, _, _ = run_cli([*args, "--force"])
    assert code == 0
    assert "backend: deepspeed" in target.read_text()


def test_config_written_file_checks_once_filled(tmp_path: Path) -> None:
    target = tmp_path / "job.yaml"
    code, _, _ = run_cli(
        ["config", "--backend", "deepspeed", "--stage", "sft", "--model", "smollm2-135m-instruct",
         "--dataset", "demo-sft-alpaca", "--device", "cpu", "-o", str(target)]
    )  # fmt: skip
    assert code == 0
    code, _, err = run_cli(["check", str(target)])
    assert code == 2
    assert "output.dir" in err and "***" in err
    code, out, err = run_cli(["check", str(target), f"output.dir={tmp_path / 'run'}"])
    assert code == 0, err
    assert "is valid" in out


@pytest.mark.parametrize(
    ("args", "listed"),
    [
        (["--backend", "verl", "--stage", "pt"], "sft, grpo"),
        (["--backend", "megatron", "--stage", "grpo"], "pt, sft, dpo"),
        (["--backend", "verl", "--method", "qlora"], "full, lora"),
    ],
)
def test_config_unsupported_combination_exits_2(args: list[str], listed: str) -> None:
    code, out, err = run_cli(["config", *args])
    assert code == 2
    assert listed in err
    assert not out
    assert "Traceback" not in out + err


# ------------------------------------------------------------------------------------------------ check


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_check_examples(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    code, out, err = run_cli(["check", str(example)])
    assert code == 0, err
    assert "is valid" in out
    for row in ("job", "model", "method", "batch", "optimizer", "parallel", "output"):
        assert row in out


def test_examples_exist() -> None:
    assert EXAMPLES, "examples/*.yaml"


def test_check_deepspeed_job(deepspeed_job: Path) -> None:
    code, out, err = run_cli(["check", str(deepspeed_job)])
    assert code == 0, err
    assert "sft on deepspeed, device cpu" in _flat(out)
    assert "global 8 = micro 1 x data-parallel 1 x accumulation 8" in _flat(out)


def test_check_missing_file_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "factory_cli", "check", str(tmp_path / "nope.yaml")],
        cwd=REPO_ROOT,
        env={**os.environ, **WIDE},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "job file not found" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_check_reports_warnings_without_failing(deepspeed_job: Path) -> None:
    code, out, _ = run_cli(["check", str(deepspeed_job), "train.learning_rate=0.5"])
    assert code == 0
    assert "train.learning_rate" in out and "far outside the usual range" in _flat(out)


@pytest.mark.parametrize("command", ["check", "train"])
def test_override_with_a_bad_type_exits_2(command: str, deepspeed_job: Path) -> None:
    code, out, err = run_cli([command, str(deepspeed_job), "train.epochs=abc"])
    assert code == 2
    assert "train.epochs" in err
    assert "command line" in err
    assert "Traceback" not in out + err


def test_malformed_override_exits_2(deepspeed_job: Path) -> None:
    code, _, err = run_cli(["check", str(deepspeed_job), "train.epochs"])
    assert code == 2
    assert "key.path=value" in err


# ------------------------------------------------------------------------------------------------ train --dry-run

DEEPSPEED_EXAMPLE = "examples/sft_lora.yaml"


@pytest.mark.parametrize(
    "job",
    [
        pytest.param("deepspeed", id="deepspeed_sft"),
        pytest.param(DEEPSPEED_EXAMPLE, id="deepspeed_example"),
        pytest.param("examples/megatron_sft.yaml", id="megatron_sft"),
        pytest.param("examples/verl_sft.yaml", id="verl_sft"),
        pytest.param("examples/verl_grpo.yaml", id="verl_grpo"),
    ],
)
def test_train_dry_run_shows_the_override(job: str, deepspeed_job: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    # An explicit device plans for that device without probing this machine (no torch import).
    if job == "deepspeed":
        args = [str(deepspeed_job)]
    else:
        args = [job, "device=cpu" if job == DEEPSPEED_EXAMPLE else "device=cuda"]
    code, out, err = run_cli(["train", *args, "train.learning_rate=2e-5", "--dry-run"])
    assert code == 0, err
    assert "resolved job" in out
    assert "learning_rate: 2.0e-05" in out


def test_dry_run_writes_no_run_directory(deepspeed_job: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(["train", str(deepspeed_job), "--dry-run"])
    assert code == 0, err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ import hygiene

HEAVY_MODULES = ("torch", "transformers", "trl", "peft", "deepspeed", "datasets")


def _run_in_process_and_list_heavy_imports(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(
        f"""
        import sys
        from factory_cli.cli import app
        try:
            app({args!r}, prog_name="factory")
        except SystemExit as exc:
            assert exc.code in (0, None), f"exit {{exc.code}}"
        heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]
        assert not heavy, f"imported {{heavy}}"
        print("NO-HEAVY-IMPORTS", file=sys.stderr)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, **WIDE, **cached_registry_models(cache, ("qwen2.5-7b-instruct",))},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["config", "--backend", "deepspeed", "--stage", "sft"],
        ["check", "examples/verl_grpo.yaml"],
    ],
    ids=["help", "config", "check"],
)
def test_no_torch_import(args: list[str], tmp_path: Path) -> None:
    proc = _run_in_process_and_list_heavy_imports(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "NO-HEAVY-IMPORTS" in proc.stderr


def test_env_reports_libraries_devices_and_verls_interpreter() -> None:
    code, out, err = run_cli(["env"])
    flat = _flat(out)
    assert code == 0, err
    assert "torch" in flat and "transformers" in flat and "devices" in flat
    assert "verl engine:" in flat and "factory_cli" in flat  # what verl's own interpreter holds (make setup-verl)


def test_check_measures_prompt_lengths_without_torch(tmp_path: Path) -> None:
    """check tokenizes prompts (config/checks.py, data/prompt_lengths.py) with the tokenizers library only."""
    from tests.unit.word_model import word_model

    model = word_model(tmp_path / "model")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"instruction": "word word", "output": "5"}\n' + '{"instruction": "' + "word " * 80 + '", "output": "5"}\n'
    )
    job = tmp_path / "job.yaml"
    job.write_text(
        f"backend: deepspeed\nstage: sft\ndevice: cpu\nmodel:\n  name_or_path: {model}\n"
        f"data:\n  train: [{rows}]\n  max_length: 64\noutput:\n  dir: {tmp_path / 'run'}\n"
    )
    proc = _run_in_process_and_list_heavy_imports(["check", str(job)], tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    assert "NO-HEAVY-IMPORTS" in proc.stderr
    assert "1 of its 2 rows would be dropped" in " ".join((proc.stdout + proc.stderr).split())
