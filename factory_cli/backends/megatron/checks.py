"""Megatron-only checks: world = DP x TP x PP x CP; TP divides heads and vocabulary (and the sequence under
sequence parallel); PP divides layers; EP divides the experts and DP x CP, and MoE with TP > 1 runs sequence
parallel. No torch."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

from factory_cli.config.checks import CheckContext, divides, error, job_architecture
from factory_cli.config.errors import Issue
from factory_cli.config.schema import JobBase, MegatronJob


def check_megatron(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """Parallel sizes against the world and the model's architecture."""
    if not isinstance(job, MegatronJob):
        return
    yield from check_stack(job, os.environ)
    p = job.parallel
    world = p.world_size
    model_parallel = p.tp * p.pp * p.cp
    if world % model_parallel:
        yield error(
            "parallel",
            f"world size {world} (nnodes {p.nnodes} x nproc_per_node {p.nproc_per_node}) is not divisible by "
            f"tp {p.tp} x pp {p.pp} x cp {p.cp} = {model_parallel}",
            "world = DP x TP x PP x CP: change nproc_per_node or the parallel sizes",
        )
        return
    dp = world // model_parallel
    arch = job_architecture(job, ctx)
    if p.ep > 1 and (dp * p.cp) % p.ep:
        # megatron-core 0.16 parallel_state.initialize_model_parallel: the expert layout is expert-TP (= TP, the
        # default factory keeps) x EP x PP and must divide the world, so EP must divide DP x CP.
        experts = arch.num_experts if arch is not None and arch.num_experts else None
        options = [e for e in range(1, dp * p.cp + 1) if (dp * p.cp) % e == 0 and (not experts or experts % e == 0)]
        yield error(
            "parallel.ep",
            f"ep {p.ep} does not divide data-parallel x context-parallel size {dp} x {p.cp} = {dp * p.cp} "
            "(Megatron places the expert-parallel group inside it)",
            f"use an ep among {options}, or more ranks",
        )
    if p.ep > 1 and job.train.precision == "fp16":
        yield error("parallel.ep", "Megatron does not run expert parallelism in fp16", "set train.precision: bf16")
    if p.sequence_parallel and p.tp == 1:
        yield error("parallel.sequence_parallel", "sequence parallel needs tp > 1", "set parallel.tp >= 2 or turn off")
    if p.vpp is not None and p.pp == 1:
        yield error("parallel.vpp", "virtual pipeline stages need pp > 1", "remove parallel.vpp or set parallel.pp")
    if p.sequence_parallel and p.tp > 1 and job.data.max_length % p.tp:
        # Megatron scatters the sequence over the TP ranks and asserts it splits evenly.
        yield error(
            "data.max_length",
            f"{job.data.max_length} is not divisible by tp {p.tp} (sequence parallel splits the sequence over TP)",
            f"use {job.data.max_length // p.tp * p.tp}",
        )
    if p.cp > 1 and job.data.max_length % (2 * p.cp):
        yield error(
            "data.max_length",
            f"{job.data.max_length} is not divisible by 2 x cp = {2 * p.cp} (context-parallel load balancing)",
            f"use {job.data.max_length // (2 * p.cp) * 2 * p.cp}",
        )
    if arch is None:
        return
    from factory_cli.backends.megatron.args import SUPPORTED_MODEL_TYPES, UNPLANNED_MODEL_TYPES

    if arch.model_type not in SUPPORTED_MODEL_TYPES:
        reason = UNPLANNED_MODEL_TYPES.get(arch.model_type, "its layout is not described by the planned flags")
        yield error(
            "model.name_or_path",
            f"the megatron backend does not plan model_type `{arch.model_type}`: {reason}",
            f"use backend: deepspeed, or a model of type {', '.join(SUPPORTED_MODEL_TYPES)}",
        )
        return
    yield from divides("parallel.tp", "tp", p.tp, arch.num_attention_heads, "attention heads")
    yield from divides("parallel.tp", "tp", p.tp, arch.num_key_value_heads, "kv heads")
    if p.tp > 1 and arch.vocab_size % p.tp:
        # The plan keeps the checkpoint's vocabulary unpadded (args.py: --make-vocab-size-divisible-by 1), so each
        # TP rank must hold an equal slice of it.
        options = [d for d in range(1, 65) if arch.vocab_size % d == 0 and arch.num_attention_heads % d == 0]
        yield error(
            "parallel.tp",
            f"tp {p.tp} does not divide the model's vocabulary of {arch.vocab_size} tokens",
            f"tp sizes that divide both the vocabulary and the {arch.num_attention_heads} heads: {options}",
        )
    stages = p.pp * (p.vpp or 1)
    if stages > 1 and arch.num_hidden_layers % stages:
        label = f"pp {p.pp} x vpp {p.vpp}" if p.vpp else f"pp {p.pp}"
        options = [d for d in range(1, arch.num_hidden_layers + 1) if arch.num_hidden_layers % d == 0]
        yield error(
            "parallel.pp",
            f"{label} does not divide the model's {arch.num_hidden_layers} layers",
            f"pipeline sizes that divide {arch.num_hidden_layers}: {options}",
        )
    if not arch.is_moe and p.ep > 1:
        yield error("parallel.ep", "expert parallelism needs a mixture-of-experts model", "set parallel.ep: 1")
    if arch.num_experts is not None:
        yield from check_moe(job, arch.num_experts, dp * p.cp)


def check_moe(job: MegatronJob, experts: int, dp_cp: int) -> Iterator[Issue]:
    """What Megatron-LM's arguments validation asserts for a mixture of experts (megatron/training/arguments.py)."""
    p = job.parallel
    if experts % p.ep:
        options = [e for e in range(1, experts + 1) if experts % e == 0 and dp_cp % e == 0]
        yield error(
            "parallel.ep",
            f"ep {p.ep} does not divide the model's {experts} experts",
            f"ep sizes that divide the experts and DP x CP ({dp_cp}): {options}",
        )
    if p.tp > 1 and not p.sequence_parallel:
        yield error(
            "parallel.sequence_parallel",
            f"Megatron requires sequence parallel for a mixture of experts with tp {p.tp} > 1",
            "set parallel.sequence_parallel: true",
        )


def check_stack(job: MegatronJob, environ: Mapping[str, str]) -> Iterator[Issue]:
    """The engine stack, when the job names its device and the engine's checkout is configured on this machine.

    (A job checked elsewhere, say on a login node, is not held to this machine's stack; `factory train` checks it
    where it runs, backend.py.)
    """
    from factory_cli.backends.megatron.args import MEGATRON_LM, MINDSPEED_LLM
    from factory_cli.backends.megatron.stack import BRIDGE_HOME, MEGATRON_LM_HOME, MINDSPEED_LLM_HOME, stack_problems

    use = job.megatron.use_mindspeed
    if job.device == "npu" or use is True:
        engine, var = MINDSPEED_LLM, MINDSPEED_LLM_HOME
    elif job.device == "cuda":
        engine, var = MEGATRON_LM, MEGATRON_LM_HOME
    else:
        return
    if not environ.get(var) and not (engine == MEGATRON_LM and environ.get(BRIDGE_HOME)):
        return
    extra = list(job.megatron.extra_args)
    local = "--transformer-impl" in extra[:-1] and extra[extra.index("--transformer-impl") + 1] == "local"
    bridge = job.megatron.load is None or job.megatron.save_hf
    for problem in stack_problems(engine, environ, sft=job.stage == "sft", bridge=bridge, local_impl=local):
        yield error("megatron", problem.what, problem.fix)
