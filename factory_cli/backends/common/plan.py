"""Pure pieces the engine planners share: the run directory's standard paths and argv helpers."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from factory_cli.config.schema import JobBase
from factory_cli.devices import ASCEND_SET_ENV, DeviceKind
from factory_cli.runs import CHECKPOINT_DIR, FINAL_DIR

PYTHON = "python"  # the run step puts the interpreter that runs factory first on PATH (run.child_env)

# Our scheduler names -> Megatron's --lr-decay-style (warmup is separate); verl's megatron strategy takes the same.
LR_DECAY_STYLES = {
    "cosine": "cosine",
    "cosine_with_min_lr": "cosine",
    "linear": "linear",
    "constant": "constant",
    "constant_with_warmup": "constant",
    "warmup_stable_decay": "WSD",
}


@dataclass(frozen=True)
class RunPaths:
    """The run directory and the standard places inside it that an engine reads or writes."""

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

    @property
    def checkpoints(self) -> str:
        return self.sub(CHECKPOINT_DIR)

    @property
    def final(self) -> str:
        return self.sub(FINAL_DIR)


def num(value: float) -> str:
    """A number as a flag value, without binary noise: 1e-05, 0.0001, 8 (1e-4 x 0.1 is not 1.0000000000000002e-05)."""
    return str(value) if isinstance(value, int) else f"{value:.10g}"


def on_device(argv: list[str], device: DeviceKind) -> list[str]:
    """On Ascend, run argv after sourcing the CANN toolkit's set_env.sh (the one use of a shell)."""
    if device != "npu":
        return argv
    return ["bash", "-c", f"source {shlex.quote(str(ASCEND_SET_ENV))} && exec {shlex.join(argv)}"]
