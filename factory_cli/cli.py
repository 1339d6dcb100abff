"""The `factory` command line. Thin: parse, call one function, print. No heavy imports at module level."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from factory_cli.config.errors import JobError, UsageError


class FactoryGroup(TyperGroup):
    """Turns user mistakes into one readable message and exit code 2; bugs keep their traceback."""

    def invoke(self, ctx: Any) -> Any:  # typer >= 0.29 types it with its vendored click Context
        from factory_cli import ui

        try:
            return super().invoke(ctx)
        except JobError as exc:
            ui.print_issues(exc.issues)
            count = len(exc.errors)
            ui.err_console.print(f"[red]{count} problem{'s' if count != 1 else ''}[/red] — nothing was started.")
            ctx.exit(2)
        except UsageError as exc:
            ui.print_error(exc.message, exc.hint)
            ctx.exit(2)


app = typer.Typer(
    name="factory",
    cls=FactoryGroup,
    help="Declarative LLM training: one YAML job, validated before launch, run on DeepSpeed, Megatron or verl.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

OVERRIDES_HELP = "key.path=value overrides, type-checked like the file (e.g. train.learning_rate=2e-5)"


@app.command("list")
def list_command(
    what: str = typer.Argument(..., help="backends | stages | models | datasets | templates | rewards | tasks"),
) -> None:
    """List what the toolkit knows: backends, stages, models, datasets, chat templates, rewards."""
    from factory_cli.catalog import print_catalog

    print_catalog(what)


@app.command()
def env() -> None:
    """Versions of python/torch/transformers/trl/peft/deepspeed and the devices found."""
    from factory_cli.environment import print_environment

    print_environment()


@app.command()
def config(
    backend: str | None = typer.Option(None, help="deepspeed | megatron | verl"),
    stage: str | None = typer.Option(None, help="pt | sft | dpo | grpo"),
    model: str | None = typer.Option(None, help="registry name (factory list models), local path or Hub id"),
    method: str | None = typer.Option(None, help="full | freeze | lora | qlora"),
    device: str | None = typer.Option(None, help="auto | cuda | npu | cpu"),
    dataset: str | None = typer.Option(None, help="registry name (factory list datasets) or a file"),
    output: Path | None = typer.Option(None, "-o", "--output", help="write the job here (default: print it)"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing output file"),
) -> None:
    """Write a commented job template; fields marked *** must be edited."""
    from factory_cli.config.render import TemplateChoice, render_job, resolve_choice

    choice = resolve_choice(
        TemplateChoice(backend=backend, stage=stage, model=model, method=method, device=device, dataset=dataset),
        interactive=sys.stdin.isatty() and sys.stdout.isatty(),
    )
    text = render_job(choice)
    if output is None:
        sys.stdout.write(text)
        return
    if output.exists() and not force:
        raise UsageError(f"{output} exists", "pass --force to overwrite it, or choose another -o path")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    from factory_cli.ui import console

    todo = text.count('"***"')
    console.print(f"wrote {output}" + (f" — edit the {todo} field(s) marked ***, then" if todo else ";"), end=" ")
    console.print(f"[bold]factory check {output}[/bold]")


@app.command()
def check(
    job_file: Path = typer.Argument(..., help="the job YAML"),
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
) -> None:
    """Validate a job completely (schema, batch and parallel math, data, rewards) without starting anything."""
    from factory_cli.backends import probe_engine_environment
    from factory_cli.config.summary import summarize
    from factory_cli.config.validate import load_and_validate
    from factory_cli.ui import console, print_issues, print_table

    validated = load_and_validate(job_file, overrides or [])
    print_table(f"{job_file} is valid", ["", ""], summarize(validated.job, (validated.base_dir,), validated.data_scan))
    notes, engine_warnings = probe_engine_environment(validated.job)
    warnings = [*validated.warnings, *(w.located(validated.loaded.source, None) for w in engine_warnings)]
    if warnings:
        print_issues(warnings, to_stderr=False)
    for note in notes:
        console.print(note, markup=False)
    console.print(f"next: [bold]factory train {job_file}[/bold]")


@app.command()
def train(
    job_file: Path = typer.Argument(..., help="the job YAML"),
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and print the plan; start nothing"),
) -> None:
    """Train: validate, plan for the backend, run, and write the run directory."""
    from factory_cli.train import train_job

    sys.exit(train_job(job_file, overrides or [], dry_run=dry_run))


@app.command()
def chat(
    model: str = typer.Option(..., "--model", "-m", help="registry name, model/adapter dir, or a run directory"),
    system: str | None = typer.Option(None, help="system prompt"),
    max_new_tokens: int = typer.Option(256, help="longest answer"),
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    device: str = typer.Option("auto", help="auto | cuda | npu | cpu"),
) -> None:
    """A few turns in the terminal with the model's chat template (reads piped lines too)."""
    from factory_cli.chat import ChatOptions, run_chat

    run_chat(model, ChatOptions(max_new_tokens, temperature, system), device=device, base_dirs=(Path.cwd(),))


@app.command("eval")
def eval_command(
    job_file: Path | None = typer.Argument(None, help="a job YAML: evaluate what its `eval:` section names"),
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
    model: str | None = typer.Option(None, "--model", "-m", help="registry name, model/adapter dir, or run dir"),
    tasks: str | None = typer.Option(None, help="comma-separated: ppl, gsm8k_demo, arc_demo, ... or lm:<task> [ppl]"),
    compare: str | None = typer.Option(None, help="a second model on the same tasks; deltas = model - compare"),
    limit: int | None = typer.Option(None, help="examples per task (default: all)"),
    batch_size: int | None = typer.Option(None, help="examples per forward pass [8]"),
    num_fewshot: int | None = typer.Option(None, help="few-shot examples for lm-eval tasks (default: the task's)"),
    max_new_tokens: int | None = typer.Option(
        None, help="generation budget (default: 256 for gsm8k_demo, the task's own for lm-eval tasks)"
    ),
    dataset: str | None = typer.Option(None, help="ppl data: registry name or file (default: the run's data)"),
    device: str | None = typer.Option(None, help="auto | cuda | npu | cpu"),
    dtype: str = typer.Option("auto", help="auto | bf16 | fp16 | fp32"),
    output: Path | None = typer.Option(None, "-o", "--output", help="JSON report path"),
) -> None:
    """Measure a model (perplexity, accuracy, lm-eval tasks); --compare puts two side by side with deltas."""
    from factory_cli.evaluation import EvalRequest, default_report_path, print_report, run_eval, write_report
    from factory_cli.ui import console, err_console

    if job_file is not None:
        from factory_cli.evaluation.from_job import request_from_job

        options = {
            "model": model,
            "tasks": tasks,
            "compare": compare,
            "limit": limit,
            "batch_size": batch_size,
            "num_fewshot": num_fewshot,
            "max_new_tokens": max_new_tokens,
        }
        given = [name for name, value in options.items() if value is not None]
        if given or dataset is not None:
            first = (given or ["dataset"])[0]
            raise UsageError(
                f"--{first.replace('_', '-')} does not apply with a job file: the job's `eval:` section decides",
                f"override it instead, e.g. `factory eval {job_file} eval.{first}=...`"
                + (" (the ppl data is the job's data.eval)" if not given else ""),
            )
        request = request_from_job(job_file, overrides or [], device, dtype)
    elif model is None:
        raise UsageError("nothing to evaluate", "give --model <dir or name>, or a job file with an `eval:` section")
    else:
        request = EvalRequest(
            model=model,
            tasks=[t.strip() for t in (tasks or "ppl").split(",") if t.strip()],
            compare=compare,
            limit=limit,
            batch_size=batch_size or 8,
            num_fewshot=num_fewshot,
            max_new_tokens=max_new_tokens,
            dataset=dataset,
            device=device or "auto",
            dtype=dtype,
            base_dirs=(Path.cwd(),),
        )
    report = run_eval(request, progress=lambda message: err_console.print(f"[dim]{message}[/dim]"))
    print_report(report)
    paths = [p for p in (output, default_report_path(report)) if p is not None]
    for path in paths:
        write_report(report, path)
        console.print(f"report: {path}")


@app.command()
def sample(
    job_file: Path | None = typer.Argument(None, help="a job YAML: sample as its `sample:` section says"),
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
    model: str | None = typer.Option(None, "--model", "-m", help="run dir, model/adapter dir or registry name"),
    data: str | None = typer.Option(None, "--data", help="prompts: registry names or files, comma-separated"),
    rewards: str | None = typer.Option(None, help="built-in rewards or file.py:function, comma-separated"),
    output: Path | None = typer.Option(None, "-o", "--output", help="the rows, a .jsonl file"),
    n: int | None = typer.Option(None, "--n", help="answers per prompt [8]"),
    temperature: float | None = typer.Option(None, help="sampling temperature [1.0]"),
    max_new_tokens: int | None = typer.Option(None, help="longest answer in tokens [256]"),
    keep: str | None = typer.Option(
        None, help="best | top-k | all: the accepted answers kept per prompt (default: best)"
    ),
    k: int | None = typer.Option(None, "--k", help="answers kept per prompt with --keep top-k [2]"),
    min_score: float | None = typer.Option(None, help="an answer is accepted at or above this total reward [1.0]"),
    pairs: bool = typer.Option(False, "--pairs", help="write DPO pairs (best accepted vs worst) instead of SFT rows"),
    limit: int | None = typer.Option(None, help="prompts read (default: all)"),
    batch_size: int | None = typer.Option(None, help="prompts per generation batch [8]"),
    seed: int | None = typer.Option(None, help="the same seed gives the same rows [42]"),
    engine: str | None = typer.Option(
        None, help="auto | vllm | transformers (default: auto: vLLM on CUDA where installed)"
    ),
    device: str | None = typer.Option(None, help="auto | cuda | npu | cpu"),
    dtype: str = typer.Option("auto", help="auto | bf16 | fp16 | fp32"),
    force: bool = typer.Option(False, "--force", help="start over instead of continuing a stopped run's output"),
) -> None:
    """Rejection sampling: n answers per prompt, scored by rewards, the best kept as SFT rows or DPO pairs."""
    from factory_cli.sampling import SampleRequest, run_sample
    from factory_cli.sampling.report import print_summary
    from factory_cli.sampling.request import parse_rewards
    from factory_cli.ui import err_console

    options = {
        "model": model,
        "data": data,
        "rewards": rewards,
        "output": output,
        "n": n,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "keep": keep,
        "k": k,
        "min_score": min_score,
        "pairs": pairs or None,
        "limit": limit,
        "batch_size": batch_size,
        "seed": seed,
        "engine": engine,
    }
    if job_file is not None:
        from factory_cli.sampling.from_job import request_from_job

        given = [name for name, value in options.items() if value is not None]
        if given:
            key = "output" if given[0] == "output" else given[0]
            raise UsageError(
                f"--{given[0].replace('_', '-')} does not apply with a job file: the job's `sample:` section decides",
                f"override it instead, e.g. `factory sample {job_file} sample.{key}=...`",
            )
        request = request_from_job(job_file, overrides or [], device, dtype, force)
    else:
        if overrides:
            raise UsageError(f"unexpected argument `{overrides[0]}`", "key=value overrides go after a job file")
        missing = [f"--{name}" for name, value in (("model", model), ("data", data)) if not value]
        if output is None:
            missing.append("-o")
        if missing:
            raise UsageError(
                f"missing {', '.join(missing)}",
                "e.g. factory sample --model runs/grpo/final --data demo-grpo-math --rewards math_answer "
                "-o data/rft.jsonl (or give a job file with a `sample:` section)",
            )
        assert model is not None and data is not None and output is not None
        from factory_cli.config.schema import DatasetSpec

        request = SampleRequest(
            model=model,
            datasets=tuple(DatasetSpec(path=part.strip()) for part in data.split(",") if part.strip()),
            rewards=parse_rewards(rewards),
            output=output,
            n=8 if n is None else n,
            temperature=1.0 if temperature is None else temperature,
            max_new_tokens=256 if max_new_tokens is None else max_new_tokens,
            keep=keep or "best",  # type: ignore[arg-type]  # validate_request names a wrong one
            k=2 if k is None else k,
            min_score=1.0 if min_score is None else min_score,
            pairs=pairs,
            limit=limit,
            batch_size=8 if batch_size is None else batch_size,
            seed=42 if seed is None else seed,
            engine=engine or "auto",
            device=device or "auto",
            dtype=dtype,
            force=force,
            base_dirs=(Path.cwd(),),
        )
    summary = run_sample(request, say=lambda message: err_console.print(f"[dim]{message}[/dim]"))
    print_summary(summary)


@app.command("export")
def export_command(
    model: str = typer.Option(..., "--model", "-m", help="model/adapter dir, run dir or registry name"),
    output: Path = typer.Option(..., "-o", "--output", help="output directory"),
    quant: str | None = typer.Option(None, help="awq | gptq | int8 | nf4 | fp8 (default: none, merge only)"),
    format: str = typer.Option("safetensors", "--format", help="safetensors | gguf"),
    gguf_type: str = typer.Option("f16", help="gguf tensor type: f16 | q8_0"),
    group_size: int = typer.Option(128, help="awq/gptq group size (falls back to the largest that divides)"),
    calibration: str | None = typer.Option(None, help="awq/gptq calibration dataset (default: the run's data)"),
    samples: int = typer.Option(128, help="calibration samples"),
    max_length: int = typer.Option(512, help="calibration sample length in tokens"),
    dtype: str = typer.Option("auto", help="auto | bf16 | fp16 | fp32 of the merged weights"),
    shard_size: str = typer.Option("5GB", help="largest safetensors shard"),
    device: str = typer.Option("auto", help="auto | cuda | npu | cpu"),
    no_merge: bool = typer.Option(False, "--no-merge", help="refuse to quantize an adapter instead of merging it"),
    force: bool = typer.Option(False, "--force", help="replace an existing output directory"),
    dry_run: bool = typer.Option(False, "--dry-run", help="check the options and print the plan; load nothing"),
) -> None:
    """Merge an adapter into its base, optionally quantize or write GGUF, then reload and generate to prove it."""
    from factory_cli.export import ExportRequest, plan_export, print_export_plan, print_export_report, run_export
    from factory_cli.ui import err_console

    request = ExportRequest(
        model=model,
        output=output,
        quant=quant,
        format=format,
        gguf_type=gguf_type,
        group_size=group_size,
        calibration=calibration,
        samples=samples,
        max_length=max_length,
        dtype=dtype,
        shard_size=shard_size,
        device=device,
        merge=not no_merge,
        overwrite=force,
        base_dirs=(Path.cwd(),),
    )
    if dry_run:
        print_export_plan(plan_export(request))
        return
    report = run_export(request, progress=lambda message: err_console.print(f"[dim]{message}[/dim]"))
    print_export_report(report)


@app.command()
def download(
    model: str = typer.Argument(..., help="registry name (factory list models) or Hub id owner/name (or --dataset id)"),
    to: Path | None = typer.Option(None, "--to", help="folder to write the files into (default: the hub's cache)"),
    source: str = typer.Option("auto", help="auto | hf | modelscope | modelers (auto: as model.source: auto)"),
    revision: str | None = typer.Option(None, help="branch, tag or commit"),
    gguf_file: str | None = typer.Option(None, help="just this .gguf file of the repository"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="also fetch the repository's *.py"),
    dataset: bool = typer.Option(False, "--dataset", help="MODEL is a Hugging Face dataset id: fetch its data files"),
) -> None:
    """Fetch every file a run needs (weights, tokenizer, chat template, configs) once; then train with no network."""
    from factory_cli.download import download_command

    download_command(model, to, source, revision, gguf_file, trust_remote_code, dataset)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
