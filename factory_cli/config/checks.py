"""Cross-field checks over a validated job: functions that read files and call rewards, never torch. Each yields
Issues.

Batch arithmetic, parallel sizes against the model's architecture, method/backend compatibility,
dataset files and their first rows, rewards, templates, and values far outside their usual range.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factory_cli.config.defaults import data_parallel_size, lora_base_bf16_obstacle, usual_lr
from factory_cli.config.errors import Issue, UsageError
from factory_cli.config.pydantic_issues import did_you_mean
from factory_cli.config.schema import DeepSpeedJob, JobBase, MegatronJob
from factory_cli.devices import cpu_has_bf16_matmul
from factory_cli.registry.models import Architecture, ModelSpec, architecture_of, find_model, gguf_path

if TYPE_CHECKING:
    from factory_cli.data.formats import FormatSpec
    from factory_cli.data.readers import FileScan

ROWS_CHECKED = 5  # a bad row among the first of a file is an error: the format or column mapping is wrong
ROWS_CONVERTED = 10_000  # rows of each file converted in check (~55 us each), the bad ones counted as a warning
ROWS_TOKENIZED = 2_000  # rows of each dataset whose prompt length check measures (data/prompt_lengths.py)
FULL_CHECK_BYTES = 2 * 1024**3  # each data file is parsed up to this size: ~20 s (throughput in scan_file)


@dataclass(frozen=True)
class CheckContext:
    """What checks may look at besides the job: folders that relative paths are resolved against, and the backend's
    own checks (injected by config/validate.py from the registry in backends/, which config/ never imports)."""

    base_dirs: Sequence[Path] = ()
    backend_check: Check | None = None
    # data_scan's result per job, so checks that need the row counts do not read the data again.
    scans: dict[int, tuple[JobBase, DataScan]] = field(default_factory=dict, compare=False, repr=False)


Check = Callable[[JobBase, CheckContext], Iterable[Issue]]


def error(path: str, message: str, hint: str | None = None) -> Issue:
    """An issue that blocks the run."""
    return Issue(path=path, message=message, hint=hint)


def warning(path: str, message: str, hint: str | None = None) -> Issue:
    """An issue worth reading that does not block the run."""
    return Issue(path=path, message=message, hint=hint, severity="warning")


# ------------------------------------------------------------------------------------------------ model


def model_source(job: JobBase, ctx: CheckContext) -> tuple[str, ModelSpec | None, Path | None]:
    """('registry'|'local'|'gguf'|'hub'|'missing', registry spec, local path) for model.name_or_path."""
    from factory_cli.data.sources import find_local_path

    name = job.model.name_or_path
    spec = find_model(name)
    if spec is not None:
        return ("gguf" if spec.gguf else "registry"), spec, None
    local = find_local_path(name, ctx.base_dirs)
    if local is not None:
        return ("gguf" if local.suffix == ".gguf" else "local"), None, local
    if name.endswith(".gguf"):
        return "missing", None, None
    parts = name.split("/")
    if len(parts) == 2 and all(parts):
        return "hub", None, None
    return "missing", None, None


def job_architecture(job: JobBase, ctx: CheckContext) -> Architecture | None:
    """The model's architecture numbers, from the registry or a local config.json."""
    kind, spec, local = model_source(job, ctx)
    if spec is not None:
        return spec.architecture
    if kind == "local" and local is not None and local.is_dir():
        return architecture_of(str(local))
    return None


def check_model(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """The model exists somewhere we can load it from, in a form the backend takes."""
    from factory_cli.registry.models import load_model_registry

    kind, spec, local = model_source(job, ctx)
    name = job.model.name_or_path
    if kind == "missing":
        hint = did_you_mean(name.lower(), list(load_model_registry())) or (
            "a registry name (factory list models), a local directory, a .gguf file or a Hub id like org/name"
        )
        yield error("model.name_or_path", f"model `{name}` not found", hint)
        return
    if kind == "local" and local is not None and local.is_dir() and not (local / "config.json").is_file():
        yield error("model.name_or_path", f"{local} has no config.json", "give a Hugging Face model directory")
    if kind == "local" and local is not None and local.is_dir():
        from factory_cli.modeling.integrity import model_dir_problems

        damaged = model_dir_problems(local)
        for problem in damaged:
            yield error("model.name_or_path", problem, "copy the checkpoint again from its source (factory download)")
        if damaged:
            return
    if kind == "gguf" and spec is not None and spec.gguf is not None:
        try:
            gguf_path(spec)
        except UsageError as exc:
            yield error("model.name_or_path", exc.message, exc.hint)
    if kind == "gguf" and job.backend == "megatron":  # verl's run step converts it once, as deepspeed's does
        yield error(
            "model.name_or_path",
            f"the {job.backend} backend cannot start from a GGUF file",
            "use the Hugging Face model (registry name or directory) instead of the GGUF file",
        )
    if isinstance(job, MegatronJob) and job_architecture(job, ctx) is None:
        yield error(
            "model.name_or_path",
            "the megatron backend needs the model's architecture (layers, heads, hidden size)",
            "use a registry model or a local directory with config.json",
        )
    arch = job_architecture(job, ctx)
    if arch is not None and job.data.max_length > arch.max_position_embeddings:
        yield warning(
            "data.max_length",
            f"{job.data.max_length} is longer than the model's context ({arch.max_position_embeddings} positions)",
            f"set data.max_length: {arch.max_position_embeddings} or less",
        )


def check_model_source(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """A model that is not on this machine can be downloaded now: its hub is reachable (one short probe) and its
    library installed (modeling/locate.py), so a run never waits a minute on retries to end in a traceback."""
    from factory_cli.modeling.hubs import HUBS
    from factory_cli.modeling.locate import locate_model, model_unavailable, sibling_model

    models = [("model.name_or_path", job.model)]
    if job.dpo is not None and job.dpo.ref_model:
        models.append(("dpo.ref_model", sibling_model(job.model, job.dpo.ref_model)))
    for path, model in models:
        try:
            location = locate_model(model, ctx.base_dirs)
        except UsageError as exc:  # a reference that names nothing (check_model reports the model's)
            if path != "model.name_or_path":
                yield error(path, exc.message.replace("model.name_or_path", path), exc.hint)
            continue
        problem = model_unavailable(location)
        if problem is not None:
            library = location.hub is not None and not HUBS[location.hub].installed()
            yield error("model.source" if library else path, problem.message, problem.hint)


def check_dataset_sources(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """A Hub dataset that is in no cache can be downloaded now (the same probe as the model's, modeling/hubs.py)."""
    from factory_cli.data.sources import resolve_dataset
    from factory_cli.modeling.hubs import HUBS, cached_hub_dataset

    hub = HUBS["hf"]
    for split in ("train", "eval"):
        for index, spec in enumerate(getattr(job.data, split)):
            try:
                entry = resolve_dataset(spec, job.data.dataset_dir, ctx.base_dirs).entry
            except UsageError:  # check_data reports it
                continue
            if entry.hf_hub_url is None or cached_hub_dataset(entry.hf_hub_url) is not None:
                continue
            why = hub.unavailable()
            if why is not None:
                yield error(
                    f"data.{split}[{index}]",
                    f"dataset `{entry.hf_hub_url}` is not on this machine and cannot be downloaded: {why}. Looked "
                    f"in the Hugging Face cache ({hub.cache_dir()}) and the datasets cache",
                    "give a local file or folder (json, jsonl, csv, parquet); or on a connected machine run "
                    f"`factory download {entry.hf_hub_url} --dataset --to DIR`, copy DIR here and name it in "
                    f"data.{split}; or set HF_ENDPOINT to a mirror you can reach",
                )


def check_template(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """A named chat template exists (or a .jinja file)."""
    from factory_cli.data.chat_templates import TEMPLATE_NAMES
    from factory_cli.data.sources import find_local_path

    name = job.model.template
    if name in ("auto", "tokenizer") or name in TEMPLATE_NAMES:
        return
    if name.endswith((".jinja", ".j2")):
        if find_local_path(name, ctx.base_dirs) is None:
            yield error("model.template", f"template file not found: {name}", "give a path to a .jinja file")
        return
    hint = did_you_mean(name, TEMPLATE_NAMES) or f"choose one of: auto, {', '.join(TEMPLATE_NAMES)}"
    yield error("model.template", f"unknown chat template `{name}`", hint)


# ------------------------------------------------------------------------------------------------ method


def check_method(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """Which methods each backend runs, and QLoRA's constraints."""
    method = job.method.type
    if method == "qlora" and job.backend != "deepspeed":
        yield error("method.type", "qlora runs on the deepspeed backend only", "use method.type: lora here")
    if method == "freeze" and job.backend != "deepspeed":
        yield error("method.type", "freeze runs on the deepspeed backend only", "use full or lora")
    zero3 = isinstance(job, DeepSpeedJob) and job.parallel.zero_stage == 3
    if method == "qlora" and zero3 and job.method.quant.storage_dtype == "uint8":
        yield error(
            "method.quant.storage_dtype",
            "QLoRA with ZeRO-3 needs the 4-bit weights stored in the compute dtype to shard them",
            "set method.quant.storage_dtype: bf16 (your compute dtype), or use parallel.zero_stage: 2",
        )
    if method == "qlora" and job.device == "npu":
        yield error("method.type", "bitsandbytes QLoRA does not run on Ascend NPU", "use method.type: lora on NPU")
    lora = job.method.lora
    if method in ("lora", "qlora") and lora.rank > 256:
        yield warning("method.lora.rank", f"rank {lora.rank} is unusually high (8-64 is usual)", "try 16 or 32")


# ------------------------------------------------------------------------------------------------ batch & parallel


def _batch_ways_out(global_batch: int, per_step: int, accumulation: int) -> str:
    """The settings that agree, one for each field kept (a run's resolved job.yaml holds both, so changing the process
    count there breaks the product)."""
    ways = [f"train.global_batch_size={per_step * accumulation}"]
    if global_batch % per_step == 0:
        ways.append(f"train.gradient_accumulation_steps={global_batch // per_step}")
    return (
        f"set {' or '.join(ways)}, or give only one of the two (a run's resolved job.yaml holds both: "
        "change one with the process count)"
    )


def check_batch(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """global batch = micro x data-parallel x accumulation."""
    t = job.train
    dp = data_parallel_size(job)
    per_step = t.micro_batch_size * dp
    if t.global_batch_size is not None and t.gradient_accumulation_steps is not None:
        if t.global_batch_size != per_step * t.gradient_accumulation_steps:
            yield error(
                "train.global_batch_size",
                f"{t.global_batch_size} != micro {t.micro_batch_size} x data-parallel {dp} x accumulation "
                f"{t.gradient_accumulation_steps} = {per_step * t.gradient_accumulation_steps}",
                _batch_ways_out(t.global_batch_size, per_step, t.gradient_accumulation_steps),
            )
    elif t.global_batch_size is not None and t.global_batch_size % per_step:
        lower = max(per_step, t.global_batch_size // per_step * per_step)
        yield error(
            "train.global_batch_size",
            f"{t.global_batch_size} is not a multiple of micro {t.micro_batch_size} x data-parallel {dp} = {per_step}",
            f"use {lower} or {lower + per_step}",
        )


def divides(path: str, what: str, size: int, total: int, total_name: str) -> Iterator[Issue]:
    """An error when `size` (> 1) does not divide `total`, listing the sizes that would."""
    if size > 1 and total % size:
        options = [d for d in range(1, total + 1) if total % d == 0 and d <= 64]
        yield error(path, f"{what} {size} does not divide {total_name} {total}", f"valid sizes: {options}")


def check_grpo(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """Group size fits the batch; rewards load and have an accepted signature."""
    grpo = job.grpo
    if job.stage != "grpo" or grpo is None:
        return
    t = job.train
    if isinstance(job, DeepSpeedJob) and t.gradient_accumulation_steps is not None:
        batch = t.micro_batch_size * data_parallel_size(job) * t.gradient_accumulation_steps
        if batch % grpo.num_generations:
            yield error(
                "grpo.num_generations",
                f"the {batch} completions of one step (micro x processes x accumulation) are not a whole number of "
                f"groups of {grpo.num_generations}",
                f"make the global batch a multiple of {grpo.num_generations}, e.g. "
                f"train.gradient_accumulation_steps: {grpo.num_generations}",
            )
    if grpo.epsilon_high is not None and grpo.epsilon_high < grpo.epsilon:
        yield error("grpo.epsilon_high", "clip-high must be >= epsilon", f"dapo uses {grpo.epsilon} / 0.28")
    if isinstance(job, DeepSpeedJob) and "dynamic_sampling" in grpo.model_fields_set and grpo.dynamic_sampling:
        yield warning(
            "grpo.dynamic_sampling",
            "the deepspeed backend (TRL) does not resample all-equal groups; their advantage is 0, so they add no "
            "policy gradient",
            "use backend: verl for DAPO dynamic sampling",
        )
    if grpo.use_vllm and job.device == "cpu":
        yield error("grpo.use_vllm", "vLLM needs a GPU", "set grpo.use_vllm: false on CPU")
    arch = job_architecture(job, ctx)
    total = grpo.max_prompt_length + grpo.max_completion_length
    if arch is not None and total > arch.max_position_embeddings:
        yield warning("grpo.max_completion_length", f"prompt + completion {total} exceeds the model context")
    yield from _check_rewards(job, ctx)


def _check_rewards(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """Each reward imports, has an accepted signature, and scores the first training rows (with a time limit)."""
    from factory_cli.rewards.loader import RewardLoadError, load_reward
    from factory_cli.rewards.probe import probe_reward

    assert job.grpo is not None
    rows: list[dict[str, Any]] | None = None
    for index, reward in enumerate(job.grpo.rewards):
        path = f"grpo.rewards[{index}]"
        try:
            loaded = load_reward(reward.name, reward.function, reward.weight, reward.kwargs, ctx.base_dirs)
            rows = _first_rows(job, ctx) if rows is None else rows
            probe_reward(loaded, rows, trl_calls=job.backend == "deepspeed")  # TRL's GRPOTrainer calls it
        except RewardLoadError as exc:
            yield error(path, exc.message, exc.hint)
        except UsageError as exc:  # RewardCallError: the call failed
            yield error(path, f"{exc.message} (factory check calls each reward on the first rows)", exc.hint)


def _first_rows(job: JobBase, ctx: CheckContext) -> list[dict[str, Any]]:
    """The first rows of the first local training dataset as the stage's canonical rows ([] when none converts)."""
    from factory_cli.data.formats import RowError, convert_row
    from factory_cli.data.readers import read_rows
    from factory_cli.data.sources import resolve_dataset

    try:
        resolved = resolve_dataset(job.data.train[0], job.data.dataset_dir, ctx.base_dirs)
        if resolved.file is None:
            return []
        return [convert_row(row, resolved.format_spec, job.stage) for _, row in read_rows(resolved.file, ROWS_CHECKED)]
    except (UsageError, RowError):  # reported by check_data
        return []


# ------------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class DataScan:
    """What reading the job's data found: its issues, and the rows of the training and eval datasets (None when
    unknown: a Hub dataset, or a file that is malformed or too large to count)."""

    issues: tuple[Issue, ...]
    train_rows: int | None
    eval_rows: int | None
    files: tuple[FileScan, ...] = ()  # every local file read, with how much of it and how long it took


def data_scan(job: JobBase, ctx: CheckContext) -> DataScan:
    """The job's data read once per job and context (check_data and the backends' row arithmetic share it)."""
    cached = ctx.scans.get(id(job))
    if cached is not None and cached[0] is job:
        return cached[1]
    issues: list[Issue] = []
    files: list[FileScan] = []
    scan = _scan_data(job, ctx, files)
    while True:
        try:
            issues.append(next(scan))
        except StopIteration as done:
            train_rows, eval_rows = done.value
            break
    result = DataScan(tuple(issues), train_rows, eval_rows, tuple(files))
    ctx.scans[id(job)] = (job, result)
    return result


def check_data(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """Every dataset resolves; every local file parses to the end (up to FULL_CHECK_BYTES each) and has rows; the
    first rows of each file convert for the stage; the micro batch is not larger than the training set."""
    scan = data_scan(job, ctx)
    yield from scan.issues
    train_rows = scan.train_rows
    per_step = job.train.micro_batch_size * data_parallel_size(job)
    if train_rows and per_step > train_rows:
        yield warning(
            "train.micro_batch_size",
            f"micro {job.train.micro_batch_size} x data-parallel {data_parallel_size(job)} = {per_step} samples per "
            f"forward pass, but the training data has {train_rows} rows: every step holds all of them",
            f"set train.micro_batch_size: {max(1, train_rows // data_parallel_size(job))} or less",
        )


def _scan_data(
    job: JobBase, ctx: CheckContext, files: list[FileScan]
) -> Generator[Issue, None, tuple[int | None, int | None]]:
    """check_data's reading: yields the issues, returns the (train, eval) row counts; each file read goes to `files`."""
    from factory_cli.data.sources import DatasetNotFound, find_local_path, resolve_dataset

    if job.data.packing and job.stage in ("dpo", "grpo"):
        yield error("data.packing", f"packing applies to pt and sft, not {job.stage}", "set data.packing: false")
    if job.data.dataset_dir and find_local_path(job.data.dataset_dir, ctx.base_dirs) is None:
        yield error(
            "data.dataset_dir",
            f"folder not found: {job.data.dataset_dir}",
            "give the folder that holds your LlamaFactory dataset_info.json",
        )
        return None, None
    counts: dict[str, int | None] = {"train": 0, "eval": 0}
    tokenizer = _tokenizer_json(job, ctx)
    for split in ("train", "eval"):
        for index, spec in enumerate(getattr(job.data, split)):
            path = f"data.{split}[{index}]"
            try:
                resolved = resolve_dataset(spec, job.data.dataset_dir, ctx.base_dirs)
            except DatasetNotFound as exc:
                yield error(f"{path}.path" if not isinstance(spec, str) else path, exc.message, exc.hint)
                continue
            except UsageError as exc:  # a malformed dataset_info.json
                yield error(path, exc.message, exc.hint)
                continue
            if resolved.file is None:
                counts[split] = None
                continue
            if not resolved.file.exists() and job.data.dataset_dir:  # a path of the job's own is checked on resolving
                info = find_local_path(job.data.dataset_dir, ctx.base_dirs) or Path(job.data.dataset_dir)
                yield error(
                    path,
                    f"dataset `{resolved.entry.name}` is {resolved.file}, which does not exist",
                    f"fix its file_name in {info / 'dataset_info.json'}, or put the file there",
                )
                counts[split] = None
                continue
            rows = yield from _check_local_dataset(job, path, resolved.file, resolved.format_spec, tokenizer, files)
            if rows is not None and spec.max_samples is not None:
                rows = min(rows, spec.max_samples)
            total = counts[split]
            counts[split] = None if rows is None or total is None else total + rows
    return counts["train"], counts["eval"]


def _check_local_dataset(
    job: JobBase, path: str, source: Path, format_spec: FormatSpec, tokenizer: Path | None, files: list[FileScan]
) -> Generator[Issue, None, int | None]:
    """Scan every file of one local dataset; return its row count (None when a file is malformed, empty, or too
    large to count)."""
    from factory_cli.data.formats import RowError, convert_row
    from factory_cli.data.readers import ReadError, list_data_files, scan_file

    total: int | None = 0
    pairs = _preference_mark(job, format_spec)
    scanned = marked = kept = 0  # rows parsed, of them preference pairs, of them kept to convert
    first_pair = ""
    converted: list[tuple[str, dict[str, Any]]] = []  # (where, canonical row): the first that convert, to measure
    invalid = 0  # rows kept to convert that do not
    try:
        for file in list_data_files(source):
            scan = scan_file(file, ROWS_CONVERTED, FULL_CHECK_BYTES, pairs)
            files.append(scan)
            total = total + scan.rows if total is not None and scan.rows_counted else None
            scanned, marked, kept = scanned + scan.rows, marked + scan.marked, kept + len(scan.first)
            if scan.first_marked is not None and not first_pair:
                first_pair = f"row {scan.first_marked} of {file.name}"
            if not scan.complete:
                checked = (
                    "none of it (one JSON document)"
                    if not scan.rows_counted
                    else (f"its first {_size(scan.bytes_checked)} ({scan.rows} rows)")
                )
                yield warning(
                    path,
                    f"{file.name} is {_size(scan.size)}: check read {checked}; the rest is read at train time",
                    "a .jsonl file is checked by streaming" if file.suffix.lower() == ".json" else None,
                )
            elif scan.rows == 0:
                yield error(path, f"{file.name} holds no rows", "an empty dataset trains nothing: add rows")
                return None
            dropped: list[str] = []
            for position, (row_number, row) in enumerate(scan.first):
                try:
                    canonical = convert_row(row, format_spec, job.stage)
                    if len(converted) <= ROWS_TOKENIZED:
                        converted.append((f"row {row_number} of {file.name}", canonical))
                except RowError as exc:
                    invalid += 1
                    field = f" field `{exc.field}`:" if exc.field else ""
                    reason = f"row {row_number} of {file.name}:{field} {exc.message}"
                    if position < ROWS_CHECKED:  # one of the first rows: the format or column mapping is wrong
                        yield error(path, reason, _format_hint(format_spec.format, job.stage))
                        return None
                    dropped.append(reason)
            if dropped:
                of = f"its {scan.rows} rows" if len(scan.first) == scan.rows else f"the first {len(scan.first)} rows"
                yield warning(
                    path,
                    f"{len(dropped)} of {of} would be dropped at train time (first: {dropped[0]})",
                    "fix or remove them; training counts and skips them",
                )
    except ReadError as exc:
        name = exc.path.name if exc.path is not None else source.name
        where = f"{name}:{exc.line}: " if exc.line else f"{name}: "
        yield error(path, f"{where}{exc.detail}", exc.hint or "supported files: .json .jsonl .csv .parquet")
        return None
    if 0 < marked < scanned:
        yield error(
            path,
            f"{marked} of the {scanned} rows read are preference pairs (chosen/rejected; the first: {first_pair}) "
            "mixed in with sft rows: stage sft would train on their chosen answers and ignore the rejected ones",
            "remove them (a dpo job trains on pairs); to train sft on the chosen answers of preference data on "
            "purpose, give those rows as a dataset of their own with format: preference",
        )
        return None
    if marked and format_spec.format == "auto":
        yield warning(
            path,
            "every row is a preference pair (chosen/rejected): stage sft trains on the chosen answers only",
            "set format: preference on this dataset to say that is meant, or use stage: dpo to learn from the pairs",
        )
    if tokenizer is not None and converted:
        # the whole dataset when every row was converted (the ones that failed are dropped too) and measured
        whole = total is not None and kept == total and len(converted) <= ROWS_TOKENIZED
        left = yield from _check_prompt_lengths(job, path, tokenizer, converted[:ROWS_TOKENIZED], whole, invalid)
        if not left:
            return None
    return total


def _tokenizer_json(job: JobBase, ctx: CheckContext) -> Path | None:
    """The job's tokenizer.json when it is on this machine (model.tokenizer, else the model's folder or cache)."""
    from factory_cli.data.prompt_lengths import find_tokenizer_json
    from factory_cli.data.sources import find_local_path
    from factory_cli.modeling.locate import locate_model

    if job.model.tokenizer:
        return find_tokenizer_json(find_local_path(job.model.tokenizer, ctx.base_dirs))
    try:
        return find_tokenizer_json(locate_model(job.model, ctx.base_dirs).path)
    except UsageError:  # a model that names nothing: check_model reports it
        return None


def _check_prompt_lengths(
    job: JobBase, path: str, tokenizer: Path, rows: list[tuple[str, dict[str, Any]]], whole: bool, invalid: int
) -> Generator[Issue, None, bool]:
    """Count the rows training would drop because their prompt alone fills the length limit (data/prompt_lengths.py);
    an error when none would be left of the whole dataset (`whole`: `rows` are every row of it that converts; the
    `invalid` others are dropped too). Returns False after that error."""
    from factory_cli.data.prompt_lengths import count_long_prompts

    # The deepspeed backend's data pipeline and TRL drop these rows; megatron and verl read the data themselves.
    if job.backend != "deepspeed" or job.stage == "pt" or (job.stage == "sft" and job.data.train_on_prompt):
        return True
    grpo = job.grpo if job.stage == "grpo" else None
    limit = grpo.max_prompt_length if grpo is not None else job.data.max_length
    setting = "grpo.max_prompt_length" if grpo is not None else "data.max_length"
    try:
        found = count_long_prompts(tokenizer, [row for _, row in rows], job.stage, limit, strict=grpo is not None)
    except Exception:  # a tokenizer.json the Rust library cannot read: the model check and training say more
        return True
    if not found.dropped:
        return True
    assert found.first is not None
    fills = "is longer than" if grpo is not None else "fills"
    fix = f"raise {setting} (now {limit}), or shorten the prompts"
    valid = " valid" if invalid else ""
    if found.dropped == found.checked == len(rows) and whole:
        yield error(
            path,
            f"no row would be left to train on: the prompt of each of its {found.checked}{valid} rows {fills} "
            f"{setting}: {limit} tokens, and training drops such rows",
            fix,
        )
        return False
    whole_count = whole and found.checked == len(rows)
    of = f"its {found.checked}{valid} rows" if whole_count else f"the first {found.checked}{valid} rows"
    yield warning(
        path,
        f"{found.dropped} of {of} would be dropped at train time: the prompt alone {fills} {setting}: {limit} "
        f"tokens (first: {rows[found.first][0]})",
        f"{fix}; training counts and skips them",
    )
    return True


def _preference_mark(job: JobBase, format_spec: FormatSpec) -> Callable[[dict[str, Any]], bool] | None:
    """For an sft dataset not declared as preference data: whether a row holds a chosen/rejected pair (the same
    test data/formats.py `_pair` uses to learn the chosen answer), so pairs mixed into sft rows can be counted."""
    if job.stage != "sft" or format_spec.ranking or format_spec.format == "preference":
        return None
    chosen = format_spec.columns.get("chosen") or "chosen"
    rejected = format_spec.columns.get("rejected") or "rejected"
    return lambda row: row.get(chosen) is not None and row.get(rejected) is not None


def _size(count: int) -> str:
    if count >= 1e9:
        return f"{count / 1e9:.1f} GB"
    return f"{count / 1e6:.0f} MB" if count >= 1e6 else f"{count / 1e3:.0f} kB"


def _format_hint(declared: str, stage: str) -> str:
    shapes = {
        "pt": "rows like {text: ...}",
        "sft": "alpaca {instruction, input, output}, sharegpt {conversations}, or {messages}",
        "dpo": "{prompt, chosen, rejected}, or alpaca/sharegpt with ranking: true",
        "grpo": "{prompt, answer}",
    }
    return f"format `{declared}`; stage {stage} expects {shapes[stage]} (or map columns with columns: {{...}})"


# ------------------------------------------------------------------------------------------------ device & misc


def check_device(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """Options that a device cannot honour."""
    attn = job.model.attn_implementation
    # transformers runs flash_attention_2 on Ascend through torch_npu's npu_fusion_attention (varlen for packed rows)
    npu_flash = job.device == "npu" and attn == "flash_attention_2"
    if job.device in ("npu", "cpu") and attn.startswith("flash_attention") and not npu_flash:
        yield error(
            "model.attn_implementation",
            f"{attn} is CUDA-only" + (" (Ascend runs flash_attention_2)" if job.device == "npu" else ""),
            f"on {job.device} use sdpa or eager (or auto)",
        )
    if job.device in ("npu", "cpu") and attn == "flex_attention":
        yield error(
            "model.attn_implementation",
            f"flex_attention trains on CUDA only (torch's FlexAttention has no backward on {job.device})",
            f"on {job.device} use sdpa (or auto): packed rows then run sdpa once per example",
        )
    if job.device == "cpu" and job.train.precision == "fp16":
        yield error("train.precision", "fp16 mixed precision does not run on CPU", "use fp32 (or bf16) on CPU")
    if job.device == "cpu" and job.train.precision == "bf16":
        yield warning("train.precision", "bf16 on CPU is emulated on many CPUs and can be slower than fp32")
    if job.device in ("npu", "cpu") and job.train.fused_kernels is True:
        yield error("train.fused_kernels", "Liger fused kernels are CUDA-only", "set train.fused_kernels: auto")
    if job.backend == "megatron" and job.device == "cpu":
        yield error("device", f"the {job.backend} backend needs GPUs or NPUs", "use backend: deepspeed on CPU")
    if job.backend == "verl" and job.device == "cpu" and job.stage == "grpo":
        yield error(
            "device",
            "verl's GRPO needs GPUs or NPUs: its rollouts are vLLM / SGLang servers (verl's SFT runs on the CPU)",
            "set device: cuda (or npu), or use backend: deepspeed for GRPO on the CPU",
        )


def check_compile(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """Regional compilation is wired into the deepspeed backend's Trainer for pt and sft only."""
    if job.train.compile and (job.backend != "deepspeed" or job.stage not in ("pt", "sft")):
        yield error(
            "train.compile",
            f"train.compile is for pt and sft on the deepspeed backend, not {job.stage} on {job.backend}",
            "remove train.compile (set it to false)",
        )


def check_lora_base_precision(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """bf16 frozen base layers are wired for an fp32 LoRA run in one process on the deepspeed backend."""
    if job.method.lora.base_precision != "bf16":
        return
    path, fix = "method.lora.base_precision", "set method.lora.base_precision: auto"
    obstacle = lora_base_bf16_obstacle(job, job.train.precision)
    if obstacle is not None:
        yield error(path, obstacle, fix)
    elif job.device == "cpu" and not cpu_has_bf16_matmul():
        no_units = "this CPU has no bf16 matrix instructions (AMX-BF16, AVX512-BF16): bf16 multiplies are emulated"
        yield warning(path, f"{no_units} and slower", fix)


def check_output(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """The run directory can be made and written; resume target exists; reporters are installed."""
    from factory_cli.data.sources import find_local_path

    if job.output.dir is not None:
        problem = output_dir_problem(Path(job.output.dir))
        if problem is not None:
            yield error("output.dir", problem, "give a folder you can write to (it is created when missing)")
    resume = job.output.resume
    if resume not in ("auto", "never") and find_local_path(resume, ctx.base_dirs) is None:
        yield error("output.resume", f"checkpoint not found: {resume}", "use auto, never, or an existing checkpoint")
    modules = {"tensorboard": "tensorboard", "wandb": "wandb", "swanlab": "swanlab", "mlflow": "mlflow"}
    for index, reporter in enumerate(job.logging.report_to):
        if importlib.util.find_spec(modules[reporter]) is None:
            yield warning(
                f"logging.report_to[{index}]",
                f"{reporter} is not installed; metrics still go to metrics.jsonl",
                f"pip install {reporter}",
            )


def output_dir_problem(folder: Path) -> str | None:
    """Why `factory train` could not create or write `folder` (relative to the working directory, as the run
    resolves it), or None. The nearest existing folder must be a directory where a file can be created: a temporary
    file is made and removed there (permission bits alone miss read-only mounts, and say yes to root)."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file, not a folder"
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{folder} would be created under {existing}, which is a file"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        what = "is not writable" if existing == folder.absolute() else f"cannot be created in {existing}"
        return f"{folder} {what} ({exc.strerror or exc})"
    return None


def check_ranges(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """Values far (10x) outside their usual range are warnings, never errors."""
    t = job.train
    _, low, high = usual_lr(job)
    method = "LoRA" if job.method.type in ("lora", "qlora") else job.method.type
    if t.learning_rate is not None and not (low / 10 <= t.learning_rate <= high * 10):
        yield warning(
            "train.learning_rate",
            f"{t.learning_rate:g} is far outside the usual range for {method} {job.stage} ({low:g}-{high:g})",
            f"{low:g}-{high:g} is usual",
        )
    if t.warmup_ratio is not None and t.warmup_ratio > 0.3:
        yield warning("train.warmup_ratio", f"{t.warmup_ratio} of the run is warm-up", "0.01-0.1 is usual")
    if t.max_grad_norm == 0:
        yield warning("train.max_grad_norm", "gradient clipping is off", "1.0 is usual")
    if job.dpo is not None and not (0.01 <= job.dpo.beta <= 1.0):
        yield warning("dpo.beta", f"beta {job.dpo.beta} is far from the usual 0.1", "0.05-0.5 is usual")
    if job.grpo is not None:
        if not (2 <= job.grpo.num_generations <= 64) or job.grpo.num_generations < 4:
            yield warning("grpo.num_generations", f"group of {job.grpo.num_generations}", "4-8 is usual (8 default)")
        if job.grpo.epsilon > 0.4:
            yield warning("grpo.epsilon", f"clip {job.grpo.epsilon} is wide", "0.2 is usual")
        if job.grpo.beta is not None and job.grpo.beta > 0.4:
            yield warning("grpo.beta", f"KL weight {job.grpo.beta} is large", "0-0.04 is usual")


def check_backend(job: JobBase, ctx: CheckContext) -> Iterable[Issue]:
    """The backend's own checks (parallel sizes, launcher, rollout), as the context brings them."""
    if ctx.backend_check is None:
        raise ValueError("run_checks needs CheckContext.backend_check (validate.py passes backends.check_with_backend)")
    return ctx.backend_check(job, ctx)


def check_streaming(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """data.streaming (data/streaming.py): pt or sft on the deepspeed backend, with train.max_steps, no eval set."""
    if not job.data.streaming:
        return
    prepare = "set data.streaming: false: the data is then prepared on disk in bounded memory and cached"
    if job.backend != "deepspeed":
        reason = "Megatron reads an indexed dataset" if job.backend == "megatron" else "verl reads parquet files"
        yield error("data.streaming", f"the {job.backend} backend does not stream data ({reason})", prepare)
    elif job.stage not in ("pt", "sft"):
        yield error(
            "data.streaming",
            f"streaming is for pt and sft data, not stage {job.stage}: its rows are read whole before training "
            "(preference pairs and prompts are short and few)",
            prepare,
        )
    if job.train.max_steps is None:
        yield error(
            "data.streaming",
            "a stream has no length to count epochs by: streaming needs train.max_steps",
            "set train.max_steps (optimizer steps to train), or data.streaming: false",
        )
    if job.data.eval or job.data.eval_ratio > 0:
        path = "data.eval" if job.data.eval else "data.eval_ratio"
        yield error(path, "a stream holds out no eval set", f"remove {path}, or {prepare}")


def check_mix(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """A dataset weight is only read by data.mix.strategy interleave, over two or more train datasets: anywhere else
    it would be dropped without a word."""
    data = job.data
    for split in ("train", "eval"):
        for index, spec in enumerate(getattr(data, split)):
            if spec.weight is None:
                continue
            path = f"data.{split}[{index}].weight"
            if split == "eval":
                yield error(path, "eval datasets are not mixed: a weight here is never read", "remove the weight")
            elif data.mix.strategy != "interleave":
                yield error(
                    path,
                    f"the weight is read only when data.mix.strategy is interleave (it is {data.mix.strategy}: every "
                    "row of every dataset, once)",
                    "set data.mix.strategy: interleave to sample the datasets by weight, or remove the weight",
                )
            elif len(data.train) == 1:
                yield warning(path, "one train dataset: its weight has nothing to be weighed against", "remove it")


ALL_CHECKS: tuple[Check, ...] = (
    check_model,
    check_model_source,
    check_template,
    check_method,
    check_batch,
    check_backend,
    check_grpo,
    check_data,
    check_streaming,
    check_mix,
    check_dataset_sources,
    check_device,
    check_compile,
    check_lora_base_precision,
    check_output,
    check_ranges,
)


def run_checks(job: JobBase, ctx: CheckContext, checks: Sequence[Check] = ALL_CHECKS) -> list[Issue]:
    """Every check's issues, in order."""
    issues: list[Issue] = []
    for check in checks:
        issues.extend(check(job, ctx))
    return issues
