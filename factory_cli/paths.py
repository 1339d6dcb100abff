"""Where the project's data folders live: the repo checkout, else the copy packaged in the wheel."""

from __future__ import annotations

from pathlib import Path


def repo_root() -> Path:
    """The directory that holds `factory_cli/` (the repo root in a checkout)."""
    return Path(__file__).resolve().parent.parent


def resource_dir(name: str) -> Path:
    """`<repo>/<name>` when it exists (checkout), else `factory_cli/_data/<name>` (wheel install)."""
    in_repo = repo_root() / name
    if in_repo.is_dir():
        return in_repo
    return Path(__file__).resolve().parent / "_data" / name
