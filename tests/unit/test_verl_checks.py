"""verl's zero-step check: data that fills no global batch (sft) or rollout step (grpo) is refused by `factory check`
with the rows, the batch and the fix; the rows are check_data's count (the data is read once)."""

from __future__ import annotations

import pytest

from factory_cli.backends.verl.plan import plan_verl
from factory_cli.config.defaults import DeviceFacts, resolve_device_defaults
from factory_cli.config.errors import Issue, JobError
from factory_cli.config.schema import VerlJob
from factory_cli.config.validate import load_and_validate
from factory_cli.data import readers
from tests.unit.plan_helpers import EXAMPLES


def issues_of(example: str, *overrides: str) -> list[Issue]:
    """Every issue `factory check` finds (errors raise JobError; its issues include the warnings)."""
    try:
        return list(load_and_validate(EXAMPLES / example, list(overrides)).warnings)
    except JobError as exc:
        return list(exc.issues)


def only(issues: list[Issue], path: str) -> Issue:
    (issue,) = [i for i in issues if i.path == path]
    return issue


def test_shipped_sft_example_trains_steps() -> None:
    validated = load_and_validate(EXAMPLES / "verl_sft.yaml")
    assert not validated.warnings
    job = resolve_device_defaults(validated.job, DeviceFacts("cuda", bf16=True))
    assert isinstance(job, VerlJob)
    plan = plan_verl(job, "cuda", "x", dataset_sizes=[60])
    # 60 rows // 16 = 3 steps per epoch, 2 epochs
    assert "trainer.total_training_steps=6" in plan.engine_config["overrides"]


def test_sft_rows_under_one_global_batch() -> None:
    issue = only(issues_of("verl_sft.yaml", "train.global_batch_size=64"), "train.global_batch_size")
    assert issue.is_error
    assert issue.message == (
        "60 training rows fill no global batch of 64: verl drops the last partial batch, so the job would run "
        "0 optimizer steps"
    )
    assert issue.hint == "set train.global_batch_size: 48 or less (a multiple of micro 4 x 4 devices), or add rows"
    # exactly one batch of the data is enough
    assert not [i for i in issues_of("verl_sft.yaml", "train.global_batch_size=48") if i.is_error]


def test_sft_rows_under_one_forward_pass() -> None:
    issue = only(
        issues_of("verl_sft.yaml", "train.micro_batch_size=16", "train.global_batch_size=64"), "train.global_batch_size"
    )
    assert issue.hint == "lower train.micro_batch_size to 15 and the global batch to 60 or less, or add rows"


def test_eval_rows_under_one_global_batch_warn() -> None:
    issues = issues_of("verl_sft.yaml", "data.eval_ratio=0.2")  # 12 held out of 60, global batch 16
    warning = only(issues, "data.eval_ratio")
    assert not warning.is_error
    assert warning.message.startswith("12 eval rows fill no global batch of 16")
    assert not [i for i in issues if i.is_error]  # 48 training rows: 3 steps


def test_grpo_prompts_under_one_rollout_step() -> None:
    overrides = ("rollout.prompts_per_step=400", "rollout.update_batch_size=64")
    issue = only(issues_of("verl_grpo.yaml", *overrides), "rollout.prompts_per_step")
    assert issue.is_error
    assert issue.message.startswith("300 training prompts fill no rollout step of 400 prompts")
    # updates of 64 samples (8 prompts of 8) must still split the step: 300 prompts do not, 296 do
    assert issue.hint == "set rollout.prompts_per_step: 296 or less, or add prompts"


def test_grpo_fix_keeps_a_whole_step_update() -> None:
    issue = only(
        issues_of("verl_grpo.yaml", "rollout.prompts_per_step=301", "rollout.update_batch_size=null"),
        "rollout.prompts_per_step",
    )
    assert issue.hint == "set rollout.prompts_per_step: 300 or less, or add prompts"


def test_data_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    scanned: list[str] = []
    scan_file = readers.scan_file

    def counting(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        scanned.append(path.name)
        return scan_file(path, *args, **kwargs)

    monkeypatch.setattr(readers, "scan_file", counting)
    issue = only(issues_of("verl_sft.yaml", "train.global_batch_size=64"), "train.global_batch_size")
    assert issue.message.startswith("60 training rows")
    assert scanned == ["demo_sft_messages.jsonl"]
