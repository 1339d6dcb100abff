"""factory's CPU speed-ups for a deepspeed-backend training run, applied through one hook: `apply`.

They patch internals of TRL, Transformers and PEFT that only pay on a CPU, so they are opt-in by device: the worker
(factory_cli/backends/deepspeed/worker.py) imports this package only for a run on the CPU with
`train.cpu_speedups: auto` (factory_cli/config/defaults.py `cpu_speedups_on`); GPU and NPU runs never load it, and
`off` runs the libraries' own code. What each kernel bought on the benchmark, and which were dropped, is recorded
in bench/README.md.

* `compact_lm_head` (lm_head.py, dense_logprob.py): TRL's fused LM head scores only the supervised positions, in two
  GEMMs (SFT, DPO, GRPO);
* `bf16_base_layers`, `bf16_lm_head` (frozen_bf16.py): the frozen base layers and LM head of an fp32 LoRA run stored
  and multiplied in bf16 (`method.lora.base_precision`, bf16 by default on a CPU with bf16 matrix units);
* `recomputed_adapter_inputs` (recomputed_activations.py): the LoRA A matrices rebuild their inputs (norm outputs,
  the SwiGLU product) in the backward instead of keeping them;
* `varlen_sdpa` (varlen_attention.py): packed rows run sdpa once per example instead of under a block mask.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from factory_cli.config.schema import DeepSpeedJob


@dataclass
class CpuSpeedups:
    """The speed-ups of one run. The worker calls `model_loaded` with the loaded model and `trainer_built` with the
    trainer's model; `applied` names the kernels used, `notes` says what each did (a line each for the run log)."""

    job: DeepSpeedJob
    bf16_head_fits: bool  # the LM head may go to bf16: it scores through the model's forward or the dense kernel
    applied: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def used(self, name: str, note: str) -> None:
        self.applied.append(name)
        self.notes.append(note)

    def model_loaded(self, model: Any) -> None:
        """Packed rows (padding-free, position ids restarting per example): sdpa once per example."""
        if not self.job.data.packing:
            return
        from factory_cli.accel.cpu.varlen_attention import use_varlen_sdpa

        if use_varlen_sdpa(model):
            self.used("varlen_sdpa", "attention: sdpa per example of each padding-free row (factory_varlen_sdpa)")

    def trainer_built(self, model: Any) -> None:
        """The LoRA kernels, applied to the trainer's PEFT model."""
        if self.job.method.type != "lora":
            return
        if self.job.method.lora.base_precision == "bf16":
            from factory_cli.accel.cpu.frozen_bf16 import bf16_frozen_base_layers, bf16_lm_head

            layers = bf16_frozen_base_layers(model)
            self.used("bf16_base_layers", f"frozen base layers in bf16 (fp32 activations and adapters): {layers}")
            if self.bf16_head_fits and bf16_lm_head(model):
                self.used("bf16_lm_head", "frozen LM head in bf16 (log-probabilities and gradients in fp32)")
        from factory_cli.accel.cpu.recomputed_activations import recompute_adapter_inputs

        mlps, norms, adapters = recompute_adapter_inputs(model)
        if mlps or norms or adapters:
            note = f"adapter inputs rebuilt in the backward, not kept: {mlps} SwiGLU MLPs, {norms} RMSNorms"
            self.used("recomputed_adapter_inputs", f"{note}, read by {adapters} LoRA A matrices")


@contextmanager
def apply(job: DeepSpeedJob, trainer: str) -> Iterator[CpuSpeedups]:
    """The CPU speed-ups of a run while the block trains it with `trainer` (the plan's trainer class name): TRL's
    fused LM head (every trainer but the plain Trainer) scores through the compact path until the block ends."""
    from factory_cli.accel.cpu.lm_head import compact_lm_head

    fused_head = trainer != "Trainer"
    with compact_lm_head() if fused_head else _nothing() as compact:
        speedups = CpuSpeedups(job, bf16_head_fits=not fused_head or compact)
        if compact:
            speedups.used("compact_lm_head", "LM head: only supervised positions scored, in two GEMMs")
        yield speedups


@contextmanager
def _nothing() -> Iterator[bool]:
    yield False
