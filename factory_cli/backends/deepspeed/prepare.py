"""The step before training, run once in the launching process: the model in loadable form, the data tokenized.

Workers (one per device) then only load: no rank converts a GGUF file or tokenizes data twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from factory_cli.config.schema import JobBase
from factory_cli.runs import RunDir, write_json_atomic


def prepare_inputs(job: JobBase, run_dir: Path, base_dirs: Sequence[Path]) -> dict[str, Any]:
    """Convert the model if needed, prepare the data; write and return run_dir/data/manifest.json."""
    from factory_cli.data.masking import resolve_chat_template
    from factory_cli.data.pipeline import prepare_data
    from factory_cli.modeling.download import fetch_model
    from factory_cli.modeling.load import load_tokenizer
    from factory_cli.modeling.locate import sibling_model
    from factory_cli.modeling.sources import resolve_model_source, tokenizer_reference
    from factory_cli.registry.models import find_model
    from factory_cli.ui import console, quiet_engine_progress

    quiet_engine_progress()
    source = resolve_model_source(job.model, base_dirs)

    def say(message: str) -> None:
        console.print(message, markup=False)

    model_path = fetch_model(job.model, base_dirs, say)
    ref_model = job.dpo.ref_model if job.dpo is not None else None  # from where the model comes from
    ref_model_path = fetch_model(sibling_model(job.model, ref_model), base_dirs, say) if ref_model else None
    tokenizer_ref = tokenizer_reference(job.model, base_dirs) or model_path
    tokenizer = load_tokenizer(
        tokenizer_ref,
        trust_remote_code=job.model.trust_remote_code,
        revision=job.model.revision,
    )
    spec = find_model(job.model.name_or_path)
    template = resolve_chat_template(job.model.template, tokenizer, spec.template if spec else None, base_dirs)
    if job.data.streaming:
        return _stream_inputs(job, run_dir, model_path, template, tokenizer_ref, ref_model_path, source.lora_targets)
    prepared = prepare_data(job, tokenizer, template, base_dirs)
    for line in prepared.report.lines():
        console.print(f"data: {line}", markup=False)
    if prepared.from_cache:
        console.print(f"data: tokenized rows reused from the cache ({prepared.cache_key[:12]})")
    manifest: dict[str, Any] = {
        "model_path": model_path,
        "chat_template": template,
        "train": str(prepared.train_path),
        "eval": str(prepared.eval_path) if prepared.eval_path else None,
        "cache_key": prepared.cache_key,
        "from_cache": prepared.from_cache,
        "report": prepared.report.to_dict(),
        "sample_prompt": prepared.sample_prompt,
        "registry_targets": list(source.lora_targets) if source.lora_targets else None,
        "ref_model_path": ref_model_path,
    }
    write_json_atomic(RunDir(run_dir).manifest_file, manifest)
    return manifest


def _stream_inputs(
    job: JobBase,
    run_dir: Path,
    model_path: str,
    template: str | None,
    tokenizer_ref: str,
    ref_model_path: str | None,
    lora_targets: Sequence[str] | None,
) -> dict[str, Any]:
    """data.streaming: no preparation here; the manifest tells each worker how to build the stream."""
    from factory_cli.data.streaming import stream_manifest
    from factory_cli.ui import console

    console.print("data: streamed while training (data.streaming), tokenized and packed on the fly", markup=False)
    manifest: dict[str, Any] = {
        "model_path": model_path,
        "chat_template": template,
        "stream": stream_manifest(job, run_dir, tokenizer_ref, template),
        "train": None,
        "eval": None,
        "sample_prompt": None,
        "registry_targets": list(lora_targets) if lora_targets else None,
        "ref_model_path": ref_model_path,
    }
    write_json_atomic(RunDir(run_dir).manifest_file, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """`python -m factory_cli.backends.deepspeed.prepare <run_dir>/plan.json`: the prepare step on its own."""
    import sys

    from factory_cli.backends.deepspeed.worker import load_plan_and_job

    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1:
        print("usage: python -m factory_cli.backends.deepspeed.prepare <run_dir>/plan.json", file=sys.stderr)
        return 2
    plan, job = load_plan_and_job(Path(arguments[0]))
    prepare_inputs(job, Path(plan["run_dir"]), [Path(d) for d in plan.get("base_dirs", [])])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
