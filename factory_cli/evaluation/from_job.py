"""`factory eval job.yaml`: the job's optional `eval:` section becomes an EvalRequest (no torch here)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from factory_cli.config.errors import UsageError
from factory_cli.evaluation.run import EvalRequest


def request_from_job(job_file: Path, overrides: Sequence[str], device: str | None, dtype: str) -> EvalRequest:
    """Validate the job (without the launch checks) and read its eval section; the model defaults to run_dir/final."""
    from factory_cli.backends.common.plan import RunPaths
    from factory_cli.config.validate import load_and_validate
    from factory_cli.runs import RunDir

    validated = load_and_validate(job_file, overrides, checks=False)
    job = validated.job
    section = job.eval
    if section is None:
        raise UsageError(
            f"{job_file} has no `eval:` section",
            "add one (eval: {tasks: [ppl, gsm8k_demo]}) or run `factory eval --model <dir> --tasks ...`",
        )
    base_dir = validated.base_dir
    run_dir = RunPaths.run_dir_of(job)  # relative to the working directory, as `factory train` writes it
    model = section.model or str(RunDir(run_dir).final_dir)
    if section.model is None and not Path(model).exists():
        raise UsageError(
            f"{model} does not exist: this job has not finished training yet",
            f"run `factory train {job_file}` first, or set eval.model",
        )
    return EvalRequest(
        model=model,
        tasks=list(section.tasks),
        compare=section.compare,
        limit=section.limit,
        batch_size=section.batch_size,
        num_fewshot=section.num_fewshot,
        max_new_tokens=section.max_new_tokens,
        device=device or job.device,
        dtype=dtype,
        base_dirs=(base_dir, Path.cwd()),
    )
