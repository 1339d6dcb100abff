"""Trainer callbacks: metrics.jsonl, the progress bar, sealed checkpoints, clean stop on signals, NaN guard."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from factory_cli.devices import peak_memory_mb
from factory_cli.runs import MetricsWriter, last_complete_checkpoint, mark_complete

# Set by tests to stop a run exactly as a SIGTERM at that step would.
INTERRUPT_AT_STEP_ENV = "FACTORY_TEST_INTERRUPT_AT_STEP"


class RunState:
    """What the callbacks learned, read by the worker after training returns."""

    def __init__(self) -> None:
        self.interrupted_by: str | None = None
        self.nan_at_step: int | None = None
        self.first_loss: float | None = None
        self.last_loss: float | None = None
        self.tokens_per_second: list[float] = []
        self.started: float = time.time()


class MetricsCallback(TrainerCallback):
    """Every log becomes one metrics.jsonl record with tokens/s, step time and (on a GPU / NPU) the peak device memory
    so far; a NaN/inf loss stops the run."""

    def __init__(self, run_dir: Path, run_state: RunState) -> None:
        self.writer = MetricsWriter(run_dir)
        self.run_state = run_state
        self.last_time = time.time()
        self.last_tokens = 0
        self.last_step = 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        self.last_time = time.time()
        self.last_tokens = state.num_input_tokens_seen
        self.last_step = state.global_step

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if not logs:
            return
        now = time.time()
        elapsed = max(now - self.last_time, 1e-9)
        record: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch, "time": now}
        record.update(logs)
        steps = state.global_step - self.last_step
        tokens = state.num_input_tokens_seen - self.last_tokens
        if steps > 0 and "loss" in logs:
            record["step_time"] = elapsed / steps
            if tokens > 0:
                record["tokens_per_second"] = tokens / elapsed
                self.run_state.tokens_per_second.append(tokens / elapsed)
            record.update(peak_memory_mb())
            self.last_time, self.last_tokens, self.last_step = now, state.num_input_tokens_seen, state.global_step
        loss = logs.get("loss")
        if loss is not None:
            if not math.isfinite(loss):
                self.run_state.nan_at_step = state.global_step
                control.should_training_stop = True
                control.should_save = False
            else:
                if self.run_state.first_loss is None:
                    self.run_state.first_loss = loss
                self.run_state.last_loss = loss
        if state.is_world_process_zero:
            self.writer.write(record)


class CheckpointSealCallback(TrainerCallback):
    """Marks a checkpoint complete once the Trainer has written all of it; resume only trusts sealed ones."""

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if state.is_world_process_zero:
            folder = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                mark_complete(folder, state.global_step)


class StopOnSignalCallback(TrainerCallback):
    """SIGINT / SIGTERM: finish the current step, save a checkpoint on every rank, stop cleanly."""

    def __init__(self, run_state: RunState) -> None:
        self.run_state = run_state
        self.requested: str | None = None
        self.interrupt_at = int(os.environ.get(INTERRUPT_AT_STEP_ENV, "0") or 0)
        self.previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = signal.Signals(signum).name

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handler)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.interrupt_at and state.global_step == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGTERM)
        if _any_rank(self.requested is not None):
            self.run_state.interrupted_by = self.requested or "a signal on another rank"
            control.should_save = True
            control.should_training_stop = True


def _any_rank(flag: bool) -> bool:
    """True on every rank when it is true on any (so all ranks save and stop at the same step)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    import torch

    tensor = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


class ProgressCallback(TrainerCallback):
    """A rich progress bar with step, loss, tokens/s and ETA (main process only)."""

    def __init__(self, run_state: RunState) -> None:
        self.run_state = run_state
        self.progress: Any = None
        self.task: Any = None
        self.loss = "-"
        self.speed = "-"

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if not state.is_world_process_zero:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  {task.fields[speed]} tok/s"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=state.max_steps, completed=state.global_step, loss=self.loss, speed=self.speed
        )

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if self.progress is None or not logs:
            return
        if "loss" in logs:
            self.loss = f"{logs['loss']:.4f}"
        if self.run_state.tokens_per_second:
            self.speed = f"{self.run_state.tokens_per_second[-1]:,.0f}"
        self.progress.update(self.task, loss=self.loss, speed=self.speed)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def last_good_checkpoint(run_dir: Path) -> str:
    """For messages: the newest sealed checkpoint, or `none yet`."""
    found = last_complete_checkpoint(run_dir)
    return str(found) if found else "none yet"
