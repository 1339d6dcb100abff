"""The `factory` command line. Thin: parse, call one function, print. No heavy imports at module level."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import typer
from typer.core import TyperGroup

from factory_cli.config.errors import JobError, UsageError


class FactoryGroup(TyperGroup):
    """Turns user mistakes into one readable message and exit code 2; bugs keep their traceback."""

    def invoke(self, ctx: click.Context) -> Any:
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
    what: str = typer.Argument(..., help="backends | stages | models | datasets | templates | rewards"),
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
    from factory_cli.config.summary import summarize
    from factory_cli.config.validate import load_and_validate
    from factory_cli.ui import console, print_issues, print_table

    validated = load_and_validate(job_file, overrides or [])
    print_table(f"{job_file} is valid", ["", ""], summarize(validated.job, (validated.base_dir,)))
    if validated.warnings:
        print_issues(validated.warnings, to_stderr=False)
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
