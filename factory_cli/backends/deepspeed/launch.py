"""Launch argv for one worker per device: torchrun, the deepspeed launcher or accelerate. Always a list. Pure."""

from __future__ import annotations

import sys
from typing import Literal

from factory_cli.config.schema import DeepSpeedParallel

WORKER_MODULE = "factory_cli.backends.deepspeed.worker"
Launcher = Literal["inprocess", "torchrun", "deepspeed", "accelerate"]


def choose_launcher(parallel: DeepSpeedParallel) -> Launcher:
    """One plain process runs in-process; several processes, several nodes or ZeRO go through a launcher."""
    if parallel.launcher != "auto":
        return parallel.launcher
    if parallel.world_size == 1 and parallel.zero_stage == 0:
        return "inprocess"
    return "torchrun"


def launch_argv(parallel: DeepSpeedParallel, plan_path: str, device_kind: str, python: str | None = None) -> list[str]:
    """The exact command that starts the workers on this node."""
    py = python or sys.executable
    launcher = choose_launcher(parallel)
    worker = [WORKER_MODULE, plan_path]
    if launcher == "inprocess":
        return [py, "-m", *worker]
    if launcher == "torchrun":
        return [
            py, "-m", "torch.distributed.run",
            f"--nnodes={parallel.nnodes}",
            f"--nproc_per_node={parallel.nproc_per_node}",
            f"--node_rank={parallel.node_rank}",
            f"--master_addr={parallel.master_addr}",
            f"--master_port={parallel.master_port}",
            "-m", *worker,
        ]  # fmt: skip
    if launcher == "deepspeed":
        return [
            py, "-m", "deepspeed.launcher.runner",
            f"--num_nodes={parallel.nnodes}",
            f"--num_gpus={parallel.nproc_per_node}",
            f"--node_rank={parallel.node_rank}",
            f"--master_addr={parallel.master_addr}",
            f"--master_port={parallel.master_port}",
            "--no_local_rank",
            *(["--no_ssh"] if parallel.nnodes > 1 else []),
            "--module", *worker,
        ]  # fmt: skip
    argv = [
        py, "-m", "accelerate.commands.launch",
        f"--num_machines={parallel.nnodes}",
        f"--num_processes={parallel.world_size}",
        f"--machine_rank={parallel.node_rank}",
        f"--main_process_ip={parallel.master_addr}",
        f"--main_process_port={parallel.master_port}",
    ]  # fmt: skip
    if parallel.world_size > 1:
        # accelerate only starts several processes on a machine without GPUs when told it is multi-GPU.
        argv.append("--multi_gpu")
    if device_kind == "cpu":
        argv.append("--cpu")
    return [*argv, "-m", *worker]
