"""The lm-evaluation-harness bridge: our loaded model as an HFLM, built-in or local YAML tasks, results mapped back.

Tasks load through lm-eval's public `TaskManager` (its `load`, `task_index`, `all_subtasks`, `all_tags`).

Local tasks (`lm_eval_tasks/*.yaml`, or a YAML file given as `lm:<path>`) run offline on `dataset_path: json`.
lm-eval 0.4.13 hands `dataset_kwargs.data_files` to `datasets.load_dataset` as written, so a relative path would be
read from the working directory (indexing the folder with `TaskManager(include_path=...)` keeps it relative); we load
the YAML with lm-eval's own loader (`lm_eval.tasks._yaml_loader.load_yaml`, which lm-eval's CLI uses too: there is no
public one; `!function` and `include:` resolve next to the file), rewrite relative data files to absolute paths (next
to the YAML, else datasets_registry/data/), and pass the config as a dict to `TaskManager.load`: no temp files.

Built-in tasks: `TaskManager()` parses all ~14k task YAMLs of lm-eval 0.4.13 to build its index: 9.6 s (median of
3 fresh processes; 8.9-9.8 s) on the 2-core development machine, paid before every `factory eval` with an `lm:` task,
where a text scan of the task folder for `task:`/`group:` lines plus a `TaskManager(include_path=<the task's folder>)`
takes 0.75 s (hellaswag) and 0.88 s (the mmlu group); an unknown name (a typo) is refused with a did-you-mean in
0.97 s instead of after the full index. So the scan stays, as a narrowing step in front of the public API: the
narrow index is used only when the task, or every member of the group, is in it; anything else (a tag, a group
reaching outside its folder) gets the full index. Each manager is built once per process (the pre-run check and the
run share it). `factory check` and `factory list tasks` never import lm-eval (0.45-0.5 s each).

A built-in task loads in Hugging Face offline mode when the Hub is not reachable (factory_cli/hub.py): a cached dataset
still loads, and a missing one fails at once instead of after ~25 s of retries.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory_cli.config.errors import UsageError
from factory_cli.evaluation.report import TaskResult
from factory_cli.evaluation.tasks import LOCAL_HARNESS_DIR, TaskSpec
from factory_cli.hub import offline_unless_reachable

EXAMPLES_KEPT = 3
LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow"}  # datasets' builders over local files
HUB_HINT = (
    "run where the Hub is reachable (or with the dataset in the Hugging Face cache), or define the task over local"
    " files (see factory_cli/evaluation/lm_eval_tasks/)"
)
_HUB_ERRORS = {
    "OfflineModeIsEnabled",
    "LocalEntryNotFoundError",
    "HfHubHTTPError",
    "RepositoryNotFoundError",
    "DatasetNotFoundError",
    "DataFilesNotFoundError",
    "ConnectTimeout",
    "ConnectError",
    "ReadTimeout",
}
_HUB_WORDS = ("on the hub", "huggingface.co", "offline", "is not cached", "couldn't reach", "hub")


@contextlib.contextmanager
def quiet_harness() -> Iterator[None]:
    """lm-eval's info/warning logs off (one line per task and option), and no `git describe` on stderr."""
    from unittest import mock

    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        # simple_evaluate runs `git describe` in the working directory; outside a checkout git prints "fatal: ...".
        with mock.patch("lm_eval.evaluator.get_git_commit_hash", lambda: None):
            yield
    finally:
        logger.setLevel(level)


# ------------------------------------------------------------------------------------------- local tasks


def _resolve_data_file(value: str, yaml_dir: Path) -> str:
    """A data file of a local task: absolute as is; relative: next to the YAML, else in datasets_registry/data/."""
    from factory_cli.paths import resource_dir

    path = Path(value).expanduser()
    if path.is_absolute() or "://" in value:
        return value
    for base in (yaml_dir, resource_dir("datasets_registry") / "data"):
        if (base / path).is_file():
            return str((base / path).resolve())
    raise UsageError(
        f"lm-eval task data file `{value}` not found next to the task YAML ({yaml_dir})",
        "put the file next to the YAML, or give an absolute path in dataset_kwargs.data_files",
    )


def _resolve_data_files(files: Any, yaml_dir: Path) -> Any:
    if isinstance(files, str):
        return _resolve_data_file(files, yaml_dir)
    if isinstance(files, list):
        return [_resolve_data_files(f, yaml_dir) for f in files]
    if isinstance(files, dict):
        return {split: _resolve_data_files(f, yaml_dir) for split, f in files.items()}
    return files


def local_task_config(yaml_path: Path) -> dict[str, Any]:
    """A local task YAML as an lm-eval config dict, its relative data files made absolute."""
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        config = copy.deepcopy(load_yaml(yaml_path, resolve_func=True))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read lm-eval task {yaml_path}: {exc}", "check the YAML") from None
    if "task" not in config:
        raise UsageError(f"{yaml_path} defines no `task:` name", "an lm-eval task YAML needs `task: <name>`")
    kwargs = config.get("dataset_kwargs")
    if isinstance(kwargs, dict) and "data_files" in kwargs:
        kwargs["data_files"] = _resolve_data_files(kwargs["data_files"], yaml_path.parent)
    return config


# ---------------------------------------------------------------------------------------- built-in tasks


def _builtin_root() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


_NAME_LINE = re.compile(r"^(?:task|group):\s*['\"]?([A-Za-z0-9_.\-]+)['\"]?\s*(?:#.*)?$", re.MULTILINE)


@dataclass
class _Scan:
    """A text scan of lm-eval's task YAMLs (no YAML parsing: 0.8 s instead of 9.6 s for the full index)."""

    defining: list[Path]  # files with `task: <name>` or `group: <name>`
    mentioned: bool  # the name occurs anywhere (a tag, or a task written in another style)
    names: set[str]  # every task/group name seen, for a did-you-mean


@functools.lru_cache(maxsize=8)
def _scan_builtin(name: str, root: Path) -> _Scan:
    word = re.compile(rf"(?<![A-Za-z0-9_.\-]){re.escape(name)}(?![A-Za-z0-9_.\-])")
    scan = _Scan(defining=[], mentioned=False, names=set())
    for path in sorted(root.glob("**/*.yaml")):
        try:
            text = path.read_text(encoding="utf-8", errors="ignore")
        except OSError:
            continue
        found = set(_NAME_LINE.findall(text))
        scan.names |= found
        if name in found:
            scan.defining.append(path)
        elif not scan.mentioned and word.search(text):
            scan.mentioned = True
    return scan


def _members_known(name: str, manager: Any, seen: set[str] | None = None) -> bool:
    """Whether a group's members (recursively) are all in `manager`'s index: then the narrow index suffices.

    Kinds come from TaskManager's public all_subtasks / all_tags; a group's members from its indexed config."""
    seen = seen if seen is not None else set()
    entry = manager.task_index.get(name)
    if entry is None:
        return False
    if name in manager.all_subtasks or name in seen:
        return True
    seen.add(name)
    if name in manager.all_tags:
        return all(_members_known(t, manager, seen) for t in entry.tags)
    members = (entry.cfg or {}).get("task") or []
    for member in members if isinstance(members, list) else [members]:
        ref = member if isinstance(member, str) else member.get("task") or member.get("group")
        if isinstance(ref, str) and ref in manager.task_index and not _members_known(ref, manager, seen):
            return False
        if isinstance(member, str) and member not in manager.task_index:
            return False
    return True


@functools.lru_cache(maxsize=8)
def builtin_task_manager(name: str) -> Any:
    """A TaskManager that knows built-in task `name`: indexed from its own folder when that suffices, else all."""
    from lm_eval.tasks import TaskManager

    scan = _scan_builtin(name, _builtin_root())
    if scan.defining:
        narrow = TaskManager(include_defaults=False, include_path=sorted({f.parent for f in scan.defining}))
        if _members_known(name, narrow):
            return narrow
    elif not scan.mentioned:  # written nowhere: unknown, without building the full index
        close = difflib.get_close_matches(name, sorted(scan.names), n=3, cutoff=0.6)
        _raise_unknown(name, close)
    return TaskManager()


def _raise_unknown(name: str, close: list[str]) -> None:
    hint = f"did you mean {', '.join(f'lm:{c}' for c in close)}?" if close else "see `lm-eval ls tasks`"
    raise UsageError(f"lm-eval has no task or group `{name}`", hint)


# ----------------------------------------------------------------------------------------------- loading


def _is_hub_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (ConnectionError, TimeoutError)) or type(seen).__name__ in _HUB_ERRORS:
            return True
        text = str(seen).lower()
        if isinstance(seen, FileNotFoundError) and any(word in text for word in _HUB_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def load_harness_task(spec: TaskSpec) -> tuple[Any, list[Any]]:
    """(TaskManager, lm-eval Task objects) for one of our task specs; UsageError for unknown or unreachable tasks."""
    target = spec.harness_task or spec.name
    why: str | None = None
    try:
        if spec.local_yaml is not None:
            from lm_eval.tasks import TaskManager

            manager = TaskManager(include_defaults=False)
            config = local_task_config(spec.local_yaml)
            if config.get("dataset_path") in LOCAL_BUILDERS:  # files: no Hub involved
                loaded = manager.load([config])
            else:
                with offline_unless_reachable() as why:
                    loaded = manager.load([config])
        else:
            manager = builtin_task_manager(target)
            if target not in manager.all_tasks:
                _raise_unknown(target, difflib.get_close_matches(target, manager.all_tasks, n=3, cutoff=0.6))
            with offline_unless_reachable() as why:
                loaded = manager.load([target])
    except UsageError:
        raise
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise UsageError(
            f"lm-eval task `{target}` needs the Python package `{missing}`", f"pip install {missing}"
        ) from None
    except Exception as exc:
        if _is_hub_failure(exc):
            reason = f"{why} and it is not in the cache" if why else "the download failed"
            raise UsageError(
                f"lm-eval task `{target}` needs its dataset from the Hugging Face Hub ({reason})", hint=HUB_HINT
            ) from None
        raise
    tasks = list(loaded["tasks"].values())
    if not tasks:
        raise UsageError(f"lm-eval task `{target}` has no subtasks to run", "pick a task, not an empty tag")
    return manager, tasks


# ----------------------------------------------------------------------------------------------- running


def make_lm(loaded: Any, batch_size: int) -> Any:
    """An lm-eval HFLM around the already-loaded model and tokenizer (no second load)."""
    from lm_eval.models.huggingface import HFLM

    with quiet_harness():
        return HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)


def _metric_name(key: str, filters_per_metric: dict[str, int]) -> str:
    metric, _, filt = key.partition(",")
    if not filt or filt == "none" or filters_per_metric.get(metric, 0) <= 1:
        return metric
    return f"{metric},{filt}"


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _examples(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A few logged samples: prompt, the (filtered) response, target, per-sample metric values."""
    kept = []
    for sample in samples[:EXAMPLES_KEPT]:
        arguments = sample.get("arguments") or [[""]]
        first = arguments[0] if isinstance(arguments, list) and arguments else [""]
        prompt = first[0] if isinstance(first, (list, tuple)) and first else str(first)
        example: dict[str, Any] = {"prompt": str(prompt)[-500:], "target": str(sample.get("target"))}
        responses = sample.get("filtered_resps")
        if isinstance(responses, list) and responses and all(isinstance(r, (list, tuple)) for r in responses):
            scores = [float(r[0]) for r in responses]  # multiple choice: (loglikelihood, is_greedy) per choice
            example["predicted"] = scores.index(max(scores))
        else:
            example["response"] = str(responses[0] if isinstance(responses, list) and responses else responses)[:500]
        for metric in sample.get("metrics") or []:
            if metric in sample:
                example[metric] = sample[metric]
        kept.append(example)
    return kept


def results_to_task_results(spec: TaskSpec, output: dict[str, Any], seconds: float) -> list[TaskResult]:
    """lm-eval's results dict -> TaskResults: one per metric (acc, acc_norm, exact_match ...) with its stderr."""
    results: dict[str, dict[str, Any]] = output.get("results") or {}
    target = spec.harness_task or spec.name
    if spec.local_yaml is not None and len(results) == 1:
        target = next(iter(results))
    names = [target] if target in results else sorted(results)
    n_samples = output.get("n-samples") or {}
    higher = output.get("higher_is_better") or {}
    out: list[TaskResult] = []
    for name in names:
        metrics = results[name]
        keys = [k for k in metrics if "," in k and "_stderr," not in k and _float_or_none(metrics[k]) is not None]
        filters_per_metric: dict[str, int] = {}
        for key in keys:
            filters_per_metric[key.split(",")[0]] = filters_per_metric.get(key.split(",")[0], 0) + 1
        if name in n_samples:
            n = int(n_samples[name].get("effective", 0))
        else:
            n = sum(int(v.get("effective", 0)) for k, v in n_samples.items() if k != name)
        task_label = spec.name if name == target else f"lm:{name}"
        subtasks = {k: {m: v for m, v in r.items() if "," in m} for k, r in results.items() if k != name}
        samples = (output.get("samples") or {}).get(name) or []
        for key in keys:
            metric, _, filt = key.partition(",")
            stderr = _float_or_none(metrics.get(f"{metric}_stderr,{filt}"))
            details: dict[str, Any] = {"harness_task": name, "filter": filt, "num_fewshot": _fewshot(output, name)}
            if subtasks and name == target:
                details["subtasks"] = subtasks
            if samples and key == keys[0]:  # once per task, not once per metric
                details["examples"] = _examples(samples)
            out.append(
                TaskResult(
                    task=task_label,
                    metric=_metric_name(key, filters_per_metric),
                    value=float(metrics[key]),
                    stderr=stderr,
                    n=n,
                    seconds=seconds,
                    details=details,
                    higher_is_better=bool((higher.get(name) or {}).get(metric, True)),
                )
            )
    if not out:
        raise UsageError(f"lm-eval task `{target}` produced no numeric metric", "check the task's metric_list")
    return out


def _fewshot(output: dict[str, Any], name: str) -> int | None:
    value = (output.get("n-shot") or {}).get(name)
    return int(value) if isinstance(value, int) else None


def run_harness_task(
    lm: Any,
    spec: TaskSpec,
    *,
    limit: int | None,
    num_fewshot: int | None,
    max_new_tokens: int | None,
) -> list[TaskResult]:
    """Run one harness task (or group) through `lm_eval.simple_evaluate` on an HFLM; map its metrics back."""
    import lm_eval

    started = time.perf_counter()
    with quiet_harness():
        manager, tasks = load_harness_task(spec)
        output = lm_eval.simple_evaluate(
            model=lm,
            tasks=tasks,
            task_manager=manager,
            num_fewshot=num_fewshot,
            limit=limit,
            gen_kwargs={"max_gen_toks": max_new_tokens} if max_new_tokens else None,  # else the task's own
            bootstrap_iters=1000,
            log_samples=True,
        )
    if output is None:  # not rank 0
        return []
    return results_to_task_results(spec, output, time.perf_counter() - started)


def local_task_names() -> list[str]:
    """The tasks defined in lm_eval_tasks/ (their `task:` names, from the file names)."""
    return sorted(p.stem for p in LOCAL_HARNESS_DIR.glob("*.yaml"))
