"""`factory download`: a model (modeling/download.py `download_model`) or a Hugging Face dataset's data files, fetched
once on a connected machine, checked against the sizes and hashes the hub publishes, and the line a job uses to load
them with no network (docs/architecture.md §11)."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from factory_cli.config.errors import UsageError
from factory_cli.config.schema import ModelSection
from factory_cli.modeling.download import Fetched, Progress, copy_folder, download_model, verify_files
from factory_cli.modeling.hubs import HUBS

SOURCE_CHOICES = ("auto", "hf", "modelscope", "modelers")


def _print_files(fetched: Fetched) -> None:
    from factory_cli.ui import console

    for name, size in fetched.files.items():
        console.print(f"  {name}  {size / 1e6:,.1f} MB", markup=False)
    total = sum(fetched.files.values())
    checked = f"; {fetched.verified} checked against the hub's sizes and hashes" if fetched.verified else ""
    console.print(f"{len(fetched.files)} files, {total / 1e6:,.1f} MB in {fetched.folder}{checked}", markup=False)


def download_command(
    reference: str,
    to: Path | None,
    source: str,
    revision: str | None,
    gguf_file: str | None,
    trust: bool,
    dataset: bool = False,
) -> None:
    """`factory download`: fetch, then print each file, the total and the line a job uses."""
    from factory_cli.ui import console, err_console

    if dataset:
        if source not in ("auto", "hf") or gguf_file is not None or trust:
            raise UsageError("--dataset downloads from the Hugging Face Hub only", "drop --source / --gguf-file")
        fetched = download_dataset(reference, to, revision, lambda message: err_console.print(f"[dim]{message}[/dim]"))
        _print_files(fetched)
        folders = ", ".join(str(folder) for folder in data_folders(fetched))
        console.print(f"use it with no network:  data: {{train: [{folders}]}}", markup=False)
        return
    if source not in SOURCE_CHOICES:
        raise UsageError(f"--source {source} is not one of {', '.join(SOURCE_CHOICES)}", "e.g. --source modelscope")
    model = ModelSection.model_validate(
        {"name_or_path": reference, "source": source, "revision": revision, "gguf_file": gguf_file}
        | {"trust_remote_code": trust}
    )
    location, fetched = download_model(
        model, to, (Path.cwd(),), lambda message: err_console.print(f"[dim]{message}[/dim]")
    )
    _print_files(fetched)
    if to is not None:
        console.print(f"use it with no network:  model: {{name_or_path: {fetched.folder}}}", markup=False)
    else:
        where = HUBS[location.hub].short if location.hub is not None else "hub"
        console.print(f"in the {where} cache: `{reference}` now loads with no network", markup=False)


DATASET_FILES = ("*.parquet", "*.jsonl", "*.json", "*.csv", "README.md", "LICENSE*")


def _is_dataset_file(name: str) -> bool:
    """Data (and its card and license), not the hub's metadata files (dataset_info.json, dataset_infos.json)."""
    return not name.startswith("dataset_info") and any(fnmatch.fnmatch(name, p) for p in DATASET_FILES)


def data_folders(fetched: Fetched) -> list[Path]:
    """The folders of a downloaded dataset that hold its data files: what `data.train` names."""
    data = [name for name in fetched.files if not name.endswith(("README.md",)) and "LICENSE" not in name]
    return sorted({(fetched.folder / name).parent for name in data})


def download_dataset(repo_id: str, to: Path | None, revision: str | None, progress: Progress) -> Fetched:
    """`factory download --dataset`: a Hugging Face dataset's data files (parquet, jsonl, json, csv), into `to` or the
    Hub cache (where `factory check` finds it), sizes and hashes checked; refuses fast when the Hub cannot serve."""
    from factory_cli.modeling.hubs import cached_hub_dataset

    hub = HUBS["hf"]
    why = hub.unavailable()
    if why is not None:
        cached = cached_hub_dataset(repo_id)
        if cached is not None and to is not None:
            return copy_folder(cached, to)
        raise UsageError(
            f"dataset `{repo_id}` cannot be downloaded: {why}",
            f"run this on a machine that reaches {hub.endpoint()}, or set HF_ENDPOINT to a mirror you can reach",
        )
    progress(f"dataset: downloading {repo_id} from {hub.label} ({hub.endpoint()})")
    try:
        from huggingface_hub import HfApi, snapshot_download

        info = HfApi(endpoint=hub.endpoint()).dataset_info(repo_id, revision=revision, files_metadata=True)
        siblings = {s.rfilename: s for s in info.siblings or []}
        wanted = sorted(n for n in siblings if _is_dataset_file(n.rsplit("/", 1)[-1]))
        folder = Path(
            snapshot_download(
                repo_id,
                repo_type="dataset",
                revision=revision,
                allow_patterns=wanted,
                local_dir=to,
                cache_dir=hub.cache_dir(),
                endpoint=hub.endpoint(),
                max_workers=4,
            )
        )
    except Exception as exc:  # not found, gated, cut off: the hub's message is the user's to act on
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "check the id; the same command resumes"
        raise UsageError(f"downloading dataset {repo_id} failed: {reason}", hint) from None
    verified = verify_files(folder, {name: siblings[name] for name in wanted}, hashes=True)
    return Fetched(folder, {name: (folder / name).stat().st_size for name in wanted}, verified)
