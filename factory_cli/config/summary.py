"""A one-screen summary of a validated job (what `factory check` prints). Pure; no torch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from factory_cli.config.defaults import data_parallel_size
from factory_cli.config.schema import DeepSpeedJob, JobBase, MegatronJob, VerlJob
from factory_cli.registry.models import find_model

if TYPE_CHECKING:
    from factory_cli.config.checks import DataScan
    from factory_cli.data.readers import FileScan
    from factory_cli.registry.datasets import DatasetEntry

COUNT_ROWS_UP_TO_BYTES = 50 * 1024 * 1024


def method_line(job: JobBase) -> str:
    """`lora r=16 alpha=32 dropout=0.05 targets=all` and friends."""
    m = job.method
    if m.type in ("lora", "qlora"):
        text = (
            f"{m.type} r={m.lora.rank} alpha={m.lora.alpha} dropout={m.lora.dropout} targets={','.join(m.lora.target)}"
        )
        if m.type == "qlora":
            text += f" ({m.quant.bits}-bit {m.quant.type}{', double quant' if m.quant.double_quant else ''})"
        if m.lora.use_dora:
            text += " dora"
        if m.lora.use_rslora:
            text += " rslora"
        return text
    if m.type == "freeze":
        return f"freeze: train the last {m.freeze.trainable_layers} layers"
    return "full fine-tuning"


def parallel_line(job: JobBase) -> str:
    """Processes and parallel sizes, backend-specific."""
    if isinstance(job, DeepSpeedJob):
        ds = job.parallel
        zero = f"ZeRO-{ds.zero_stage}" if ds.zero_stage else "no ZeRO"
        offload = f", offload {ds.offload}" if ds.offload != "none" else ""
        return f"{ds.nnodes} node(s) x {ds.nproc_per_node} process(es), {zero}{offload}"
    if isinstance(job, MegatronJob):
        mg = job.parallel
        return (
            f"{mg.world_size} ranks = DP {data_parallel_size(job)} x TP {mg.tp} x PP {mg.pp} x CP {mg.cp}"
            + (f", EP {mg.ep}" if mg.ep > 1 else "")
            + (", sequence parallel" if mg.sequence_parallel else "")
        )
    if isinstance(job, VerlJob):
        vl = job.parallel
        return f"{vl.world_size} devices, actor {vl.strategy}, rollout {job.rollout.engine} tp={job.rollout.tp}"
    return ""


def dataset_lines(job: JobBase, base_dirs: tuple[Path, ...]) -> list[str]:
    """One line per dataset: where it comes from, its format and row count (small local files)."""
    from factory_cli.data.readers import count_rows
    from factory_cli.data.sources import DatasetNotFound, resolve_dataset

    lines = []
    for split in ("train", "eval"):
        for spec in getattr(job.data, split):
            try:
                resolved = resolve_dataset(spec, job.data.dataset_dir, base_dirs)
            except DatasetNotFound:
                lines.append(f"{split}: {spec.path} (not found)")
                continue
            rows = ""
            file = resolved.file
            if file is not None and file.is_file() and file.stat().st_size <= COUNT_ROWS_UP_TO_BYTES:
                rows = f", {count_rows(file)} rows"
            lines.append(f"{split}: {resolved.label} ({resolved.entry.format}{rows}){_hub_origin(resolved.entry)}")
    return lines


def _hub_origin(entry: DatasetEntry) -> str:
    """`, from the Hugging Face cache` / `, download from the Hugging Face Hub` for a Hub dataset, else nothing."""
    from factory_cli.modeling.hubs import HUBS, cached_hub_dataset

    if entry.hf_hub_url is None:
        return ""
    cached = cached_hub_dataset(entry.hf_hub_url)
    return f", from the cache {cached}" if cached else f", download from {HUBS['hf'].endpoint()}"


def model_origin(job: JobBase, base_dirs: tuple[Path, ...]) -> str:
    """Where the model's files come from (modeling/locate.py): a local path, a hub's cache, or a download."""
    from factory_cli.config.errors import UsageError
    from factory_cli.modeling.locate import locate_model

    try:
        return locate_model(job.model, base_dirs).describe()
    except UsageError as exc:
        return exc.message


def data_check_line(files: Sequence[FileScan]) -> str | None:
    """What the data check read (config/checks.py data_scan): files, rows, MB and seconds, and its rate in rows/s;
    None when it read no local file. A .json too large to load has no rows to count and is left out."""
    counted = [scan for scan in files if scan.rows_counted]
    if not counted:
        return None
    rows = sum(scan.rows for scan in counted)
    megabytes = sum(scan.bytes_checked for scan in counted) / 1e6
    seconds = sum(scan.seconds for scan in counted)
    rate = f"{rows / seconds:,.0f} rows/s" if seconds > 0 else "too fast to time"
    whole = sum(scan.complete for scan in counted)
    read = f"{len(counted)} file{'s' if len(counted) != 1 else ''}"
    if whole < len(counted):
        read += f" ({len(counted) - whole} read in part)"
    return f"{read} parsed: {rows:,} rows, {megabytes:,.2f} MB in {seconds:.3f} s ({rate})"


def summarize(job: JobBase, base_dirs: tuple[Path, ...] = (), scan: DataScan | None = None) -> list[tuple[str, str]]:
    """(label, text) rows describing the job; `scan` adds what the data check read and how fast."""
    t = job.train
    checked = data_check_line(scan.files) if scan is not None else None
    spec = find_model(job.model.name_or_path)
    model = job.model.name_or_path
    if spec is not None:
        model += f"  [{spec.hf_id}, {spec.params_b:g}B params]"
    model += f"; {model_origin(job, base_dirs)}"
    length = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs:g} epoch(s)"
    rows = [
        ("job", f"{job.stage} on {job.backend}, device {job.device}"),
        ("model", model),
        ("method", method_line(job)),
        *[("data", line) for line in dataset_lines(job, base_dirs)],
        *([("data check", checked)] if checked else []),
        ("sequence", f"max_length {job.data.max_length}, packing {'on' if job.data.packing else 'off'}"),
        (
            "batch",
            f"global {t.global_batch_size} = micro {t.micro_batch_size} x data-parallel {data_parallel_size(job)} "
            f"x accumulation {t.gradient_accumulation_steps}",
        ),
        (
            "optimizer",
            f"{t.optimizer} lr {t.learning_rate:g}, {t.scheduler}, warmup {t.warmup_ratio:g}, wd {t.weight_decay:g}, "
            f"{length}",
        ),
        ("parallel", parallel_line(job)),
    ]
    if job.dpo is not None:
        rows.append(("dpo", f"loss {job.dpo.loss}, beta {job.dpo.beta:g}, ref {job.dpo.ref_model or 'frozen base'}"))
    if job.grpo is not None:
        g = job.grpo
        rewards = ", ".join(f"{r.label} x{r.weight:g}" for r in g.rewards)
        rows.append(
            (
                "grpo",
                f"{g.loss}: group {g.num_generations}, clip {g.epsilon:g}/{g.epsilon_high:g}, KL beta {g.beta:g}, "
                f"completion {g.max_completion_length} tokens; rewards {rewards}",
            )
        )
    rows.append(("output", f"{job.output.dir} (resume {job.output.resume}, save every {job.output.save_steps} steps)"))
    return rows
