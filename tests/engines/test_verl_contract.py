"""Contract tests against the real verl, in verl's own environment (`make setup-verl` builds .venv-verl).

tests/engines/verl_probe.py runs once in verl's interpreter and reports; each test here asserts one part of the
report, so a verl release that renames a key, a dataset field, a reward-manager argument or a metric fails here,
not in a user's run.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from factory_cli.backends.verl.backend import METRIC_ALIASES
from tests.engines import verl_probe
from tests.unit.test_verl_data import RL_ROWS, SFT_ROWS

REPO_ROOT = Path(__file__).resolve().parents[2]
VERL_PYTHON = REPO_ROOT / ".venv-verl" / "bin" / "python"
PROBE_SECONDS = 300

pytestmark = pytest.mark.verl


@pytest.fixture(scope="session")
def verl_python() -> Path:
    """verl's interpreter; its absence fails (CI builds it with `make setup-verl`)."""
    if not VERL_PYTHON.is_file():
        pytest.fail("verl's environment is missing: run make setup-verl", pytrace=False)
    return VERL_PYTHON


@pytest.fixture(scope="module")
def report(verl_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The probe's report (one run of verl's interpreter for every check)."""
    work = tmp_path_factory.mktemp("verl-probe")
    out = work / "report.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(work / "hf-datasets"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.run(
        [str(verl_python), str(Path(verl_probe.__file__)), str(out), str(work)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROBE_SECONDS,
    )
    assert proc.returncode == 0 and out.is_file(), f"the probe stopped (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return data


def failures(report: dict[str, Any], *sections: str) -> str:
    found = [f for f in report["failures"] if f["section"] in sections]
    return "\n\n".join(f"{f['section']} / {f['label']}:\n{f['detail']}" for f in found)


def test_every_job_plans(report: dict[str, Any]) -> None:
    problems = failures(report, "plan")
    assert not problems, problems
    assert report["counts"]["examples"] >= 2 and report["counts"]["templates"] == 12


def test_every_override_composes_against_verls_config(report: dict[str, Any]) -> None:
    problems = failures(report, "compose")
    assert not problems, problems
    counts = report["counts"]
    variants = sum(len(v) for v in verl_probe.VARIANTS.values())
    # examples and templates on cuda and npu (an example naming one device: that one), variants on cuda
    assert counts["plans composed"] >= 2 * counts["templates"] + counts["examples"] + variants
    assert counts["overrides composed"] > 40 * counts["plans composed"]
    composed = report["composed"]
    assert composed["ppo_trainer"] and composed["sft_trainer_engine"]
    # The control: verl's config refuses a key it does not declare, so a renamed key fails above.
    assert report["control"] == "refused: ConfigCompositionException"


def test_configs_pass_verls_validation(report: dict[str, Any]) -> None:
    sections = ["actor_rollout_ref.model", "actor_rollout_ref.rollout", "model", "engine", "optim", "checkpoint"]
    problems = failures(report, "validate_config", *(f"{s} dataclass" for s in sections))
    assert not problems, problems
    ppo, sft = len(report["composed"]["ppo_trainer"]), len(report["composed"]["sft_trainer_engine"])
    assert report["counts"]["validate_config passed"] == ppo
    assert report["counts"]["section dataclasses built"] == 2 * ppo + 4 * sft
    for note in report["skipped"]:  # only what needs vLLM, which this environment may lack
        assert "vllm not installed" in note
        print(f"skipped: {note}")


def test_verls_sft_dataset_gets_each_row_exactly(report: dict[str, Any]) -> None:
    problems = failures(report, "sft data")
    assert not problems, problems
    assert report["counts"]["sft rows read exactly"] == len(SFT_ROWS)


def test_rlhf_dataset_and_reward_managers_get_each_row_exactly(report: dict[str, Any]) -> None:
    problems = failures(report, "rl data and rewards")
    assert not problems, problems
    for manager in ("naive", "dapo"):
        assert report["counts"][f"rl rows read exactly ({manager})"] == len(RL_ROWS)
        assert report["counts"][f"reward manager {manager} calls checked"] == len(RL_ROWS)


def test_metric_aliases_are_names_verl_logs(report: dict[str, Any]) -> None:
    problems = failures(report, "metrics")
    assert not problems, problems
    assert report["counts"]["metric names found"] == sum(len(names) for names in METRIC_ALIASES.values())
