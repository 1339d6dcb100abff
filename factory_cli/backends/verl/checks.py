"""verl-only checks: rollout TP fits the devices, batches split evenly into groups and updates, the data gives
optimizer steps, the megatron engine's TP/PP/EP fit the model and the devices, and the MoE settings (expert parallel,
routing replay, the loss) fit the model. No torch."""

from __future__ import annotations

from collections.abc import Iterator

from factory_cli.config.checks import CheckContext, data_scan, divides, error, job_architecture, warning
from factory_cli.config.errors import Issue
from factory_cli.config.moe_checks import token_level_loss_on_moe
from factory_cli.config.schema import JobBase, VerlJob
from factory_cli.registry.models import Architecture


def check_verl(job: JobBase, ctx: CheckContext) -> Iterator[Issue]:
    """Rollout tensor parallel, the rollout/update batch arithmetic, and steps from the data."""
    if not isinstance(job, VerlJob):
        return
    yield from check_steps(job, ctx)
    p, r = job.parallel, job.rollout
    world = p.world_size
    if world % r.tp:
        yield error("rollout.tp", f"rollout tp {r.tp} does not divide the {world} devices", "use a divisor of it")
    arch = job_architecture(job, ctx)
    if arch is not None:
        yield from divides("rollout.tp", "rollout tp", r.tp, arch.num_attention_heads, "attention heads")
    yield from check_megatron_layout(job, arch)
    if job.stage != "grpo" or job.grpo is None:
        return
    yield from check_moe_rollout(job, arch)
    if r.routing_replay == "disabled":
        replay = "set rollout.routing_replay: R2 or R3 (verl's router replay)"
        if p.strategy != "megatron":
            replay = "set parallel.strategy: megatron and rollout.routing_replay: R2 or R3 (verl's router replay)"
        yield from token_level_loss_on_moe(job.grpo.loss, arch, [replay])
    n = job.grpo.num_generations
    samples = r.prompts_per_step * n
    update = r.update_batch_size or samples
    if update % n:
        yield error(
            "rollout.update_batch_size",
            f"{update} samples per update is not a whole number of groups of {n}",
            f"use a multiple of grpo.num_generations ({n})",
        )
    elif samples % update:
        yield error(
            "rollout.update_batch_size",
            f"{samples} samples per rollout step ({r.prompts_per_step} prompts x {n}) do not split into updates "
            f"of {update}",
            f"use a divisor of {samples}",
        )
    if samples % world:
        yield error(
            "rollout.prompts_per_step",
            f"{samples} samples per step do not spread evenly over {world} devices",
            "make prompts_per_step x num_generations a multiple of the device count",
        )


def _dense(arch: Architecture | None) -> bool:
    """Known to have no experts (a model whose config.json is not here is not judged)."""
    return arch is not None and not arch.is_moe


def check_megatron_layout(job: VerlJob, arch: Architecture | None) -> Iterator[Issue]:
    """parallel.tp / pp / ep: for verl's megatron engine only; devices a multiple of TP x PP (verl's validate_config)
    and of TP x EP x PP (Megatron's expert grid, whose expert TP is the TP); heads, layers and experts split evenly."""
    p = job.parallel
    sizes = {"tp": p.tp, "pp": p.pp, "ep": p.ep}
    if p.strategy != "megatron":
        for name, size in sizes.items():
            if size > 1:
                yield error(
                    f"parallel.{name}",
                    f"parallel.{name} {size} is a setting of verl's megatron engine; strategy {p.strategy} shards "
                    "the model with FSDP",
                    f"set parallel.strategy: megatron, or remove parallel.{name}",
                )
        return
    world = p.world_size
    if world % (p.tp * p.pp):
        yield error(
            "parallel.tp",
            f"TP {p.tp} x PP {p.pp} does not divide the {world} devices",
            "pick TP and PP whose product divides nnodes x nproc_per_node",
        )
    elif world % (p.tp * p.ep * p.pp):
        fits = [e for e in range(1, world + 1) if world % (p.tp * e * p.pp) == 0]
        yield error(
            "parallel.ep",
            f"TP {p.tp} x EP {p.ep} x PP {p.pp} does not divide the {world} devices: Megatron lays the experts out "
            "on a TP x EP x PP grid (expert tensor parallel = TP) repeated over the rest",
            f"EP sizes that fit: {fits}",
        )
    if arch is None:
        return
    yield from divides("parallel.tp", "tensor parallel size", p.tp, arch.num_attention_heads, "attention heads")
    yield from divides("parallel.pp", "pipeline parallel size", p.pp, arch.num_hidden_layers, "layers")
    if p.ep > 1 and _dense(arch):
        yield error(
            "parallel.ep",
            f"expert parallel size {p.ep} needs a mixture-of-experts model; {job.model.name_or_path} has no experts",
            "remove parallel.ep",
        )
    elif arch.num_experts is not None:
        yield from divides("parallel.ep", "expert parallel size", p.ep, arch.num_experts, "experts")


def check_moe_rollout(job: VerlJob, arch: Architecture | None) -> Iterator[Issue]:
    """rollout.expert_parallel and rollout.routing_replay: MoE models only; replay on the megatron engine only."""
    r, name = job.rollout, job.model.name_or_path
    if r.expert_parallel and _dense(arch):
        yield error(
            "rollout.expert_parallel",
            f"expert parallel needs a mixture-of-experts model; {name} has no experts",
            "remove rollout.expert_parallel",
        )
    elif r.expert_parallel and r.tp == 1:
        yield warning(
            "rollout.expert_parallel",
            "the rollout splits the experts over its tp devices, and rollout.tp is 1: nothing is split",
            "set rollout.tp to the devices one rollout engine should span (e.g. 2, 4 or 8)",
        )
    if r.routing_replay == "disabled":
        return
    if job.parallel.strategy != "megatron":
        yield error(
            "rollout.routing_replay",
            f"routing replay runs on verl's megatron engine; strategy {job.parallel.strategy} does not replay routes",
            "set parallel.strategy: megatron, or rollout.routing_replay: disabled with grpo.loss: gspo",
        )
    elif _dense(arch):
        yield error(
            "rollout.routing_replay",
            f"routing replay needs a mixture-of-experts model; {name} has no experts",
            "set rollout.routing_replay: disabled",
        )


def training_rows(job: VerlJob, rows: int) -> int:
    """The rows verl trains on out of `rows`: data.eval_ratio holds some out unless data.eval is given (as
    backend.split_rows does)."""
    from factory_cli.config.errors import UsageError
    from factory_cli.data.pipeline import held_out_rows

    if job.data.eval or job.data.eval_ratio <= 0:
        return rows
    try:
        return rows - len(held_out_rows(rows, job.data.eval_ratio, job.data.seed))
    except UsageError:  # the ratio leaves no rows
        return 0


def check_steps(job: VerlJob, ctx: CheckContext) -> Iterator[Issue]:
    """verl's SFT and RL trainers drop the last partial batch (their dataloaders use drop_last), so data smaller
    than one global batch (sft) or one rollout step (grpo) gives zero optimizer steps: verl stops with a
    ZeroDivisionError (sft) or "Train dataloader is empty!" (grpo). The rows are check_data's count."""
    scan = data_scan(job, ctx)
    if not scan.train_rows:  # unknown (a Hub dataset) or reported by check_data
        return
    rows = training_rows(job, scan.train_rows)
    held = f" ({scan.train_rows - rows} held out by data.eval_ratio)" if rows < scan.train_rows else ""
    if job.stage == "grpo":
        yield from _grpo_steps(job, rows, held)
        return
    batch = job.train.global_batch_size
    assert batch is not None, "resolve_defaults fills train.global_batch_size"
    per_step = job.train.micro_batch_size * job.parallel.world_size
    if rows // batch == 0:
        fit = rows // per_step * per_step
        fix = (
            f"set train.global_batch_size: {fit} or less (a multiple of micro {job.train.micro_batch_size} x "
            f"{job.parallel.world_size} devices), or add rows"
            if fit
            else f"lower train.micro_batch_size to {max(1, rows // job.parallel.world_size)} and the global batch "
            f"to {rows} or less, or add rows"
        )
        yield error(
            "train.global_batch_size",
            f"{rows} training rows{held} fill no global batch of {batch}: verl drops the last partial batch, so "
            "the job would run 0 optimizer steps",
            fix,
        )
    evals = _eval_rows(job, scan.train_rows, scan.eval_rows)
    if evals is not None and evals // batch == 0:
        yield warning(
            "data.eval" if job.data.eval else "data.eval_ratio",
            f"{evals} eval rows fill no global batch of {batch}: verl validates whole batches only, so val/loss "
            "would be NaN",
            f"hold out at least {batch} rows",
        )


def _eval_rows(job: VerlJob, train_rows: int, eval_rows: int | None) -> int | None:
    if job.data.eval:
        return eval_rows
    return train_rows - training_rows(job, train_rows) if job.data.eval_ratio > 0 else None


def _grpo_steps(job: VerlJob, prompts: int, held: str) -> Iterator[Issue]:
    grpo, rollout = job.grpo, job.rollout
    assert grpo is not None
    if prompts >= rollout.prompts_per_step:
        return
    n, world = grpo.num_generations, job.parallel.world_size
    # An update batch of the whole step (the default) shrinks with it; a set one must still split the step.
    update = rollout.update_batch_size or rollout.prompts_per_step * n
    whole_step = update == rollout.prompts_per_step * n
    fits = [p for p in range(prompts, 0, -1) if (p * n) % world == 0 and (whole_step or (p * n) % update == 0)]
    fix = f"set rollout.prompts_per_step: {fits[0]} or less, or add prompts" if fits else "add prompts"
    yield error(
        "rollout.prompts_per_step",
        f"{prompts} training prompts{held} fill no rollout step of {rollout.prompts_per_step} prompts: verl drops "
        "the last partial batch, so the job would run 0 optimizer steps",
        fix,
    )
