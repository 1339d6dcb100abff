"""`factory sample job.yaml`: the job's `sample:` section becomes a SampleRequest (no torch here). The model defaults
to the run's final/, the prompts to the job's training data, the rewards to its GRPO rewards."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from factory_cli.config.errors import UsageError
from factory_cli.sampling.request import SampleRequest


def request_from_job(
    job_file: Path, overrides: Sequence[str], device: str | None, dtype: str, force: bool
) -> SampleRequest:
    """Validate the job (without the launch checks) and read its sample section."""
    from factory_cli.backends.common.plan import RunPaths
    from factory_cli.config.validate import load_and_validate
    from factory_cli.runs import RunDir

    validated = load_and_validate(job_file, overrides, checks=False)
    job = validated.job
    section = job.sample
    if section is None:
        raise UsageError(
            f"{job_file} has no `sample:` section",
            "add one (sample: {output: data/rft.jsonl, n: 8}) or run `factory sample --model <dir> --data ... -o ...`",
        )
    rewards = section.rewards or (job.grpo.rewards if job.grpo is not None else [])
    if not rewards:
        raise UsageError(
            f"{job_file}: sample.rewards is empty and the job has no grpo.rewards to fall back on",
            "add sample.rewards, e.g. [math_answer]",
        )
    base_dir = validated.base_dir
    model = section.model or str(RunDir(RunPaths.run_dir_of(job)).final_dir)
    if section.model is None and not Path(model).exists():
        raise UsageError(
            f"{model} does not exist: this job has not finished training yet",
            f"run `factory train {job_file}` first, or set sample.model",
        )
    output = Path(section.output)  # relative to the working directory, as output.dir is
    return SampleRequest(
        model=model,
        datasets=tuple(section.data or job.data.train),
        rewards=tuple(rewards),
        output=output,
        n=section.n,
        temperature=section.temperature,
        max_new_tokens=section.max_new_tokens,
        keep=section.keep,
        k=section.k,
        min_score=section.min_score,
        pairs=section.pairs,
        pairs_output=Path(section.pairs_output) if section.pairs_output is not None else None,
        limit=section.limit,
        batch_size=section.batch_size,
        seed=section.seed,
        engine=section.engine,
        device=device or job.device,
        dtype=dtype,
        dataset_dir=job.data.dataset_dir,
        force=force,
        base_dirs=(base_dir, Path.cwd()),
    )
