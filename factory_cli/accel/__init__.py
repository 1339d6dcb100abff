"""Opt-in speed-ups that patch the engines for one kind of device; `cpu/` is the only one.

Nothing outside a package here imports it except the worker that applies it, and only for its device
(factory_cli/backends/deepspeed/worker.py): a run on another device never loads it.
"""
