"""Paths under a run directory that backends write engine inputs to (shared by the megatron and verl planners)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from factory_cli.config.schema import JobBase


@dataclass(frozen=True)
class RunPaths:
    """The run directory and the standard places inside it."""

    run_dir: Path

    @staticmethod
    def run_dir_of(job: JobBase) -> Path:
        """The job's run directory (resolve_defaults fills it)."""
        assert job.output.dir is not None, "resolve_defaults fills output.dir"
        return Path(job.output.dir)

    def sub(self, *parts: str) -> str:
        """A path inside the run directory."""
        return str(self.run_dir.joinpath(*parts))

    @property
    def hf_model(self) -> str:
        """Where the Hugging Face checkpoint the engine starts from is linked."""
        return self.sub("hf_model")
