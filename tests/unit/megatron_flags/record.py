"""Record an engine's command-line flags (name, arity, choices) as JSON, for tests/unit/test_megatron_argv.py.

The train scripts' parser lives in Megatron-LM's megatron/training/arguments.py, which the megatron-core wheel does
not ship, so the tests parse planned argv against this record instead. Made from a checkout of the engine:

    git -C Megatron-LM archive core_v0.17.0 megatron | tar -x -C /tmp/mlm
    PYTHONPATH=/tmp/mlm python -m tests.unit.megatron_flags.record megatron-lm core_v0.17.0 <commit> \
        > tests/unit/megatron_flags/megatron_lm_core_v0.17.0.json

megatron/core/transformer/custom_layers/batch_invariant_kernels.py imports triton, which a CPU machine lacks; the
parser does not use it, so that one module is replaced by an empty stand-in while the parser is built.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import sys
import types
from typing import Any

STUBBED = "batch_invariant_kernels"


class _Anything(types.ModuleType):
    """A module whose every attribute is a callable no-op (a stand-in for a kernel module)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.machinery.ModuleSpec(name, self) if name.endswith(STUBBED) else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _Anything(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def describe(parser: argparse.ArgumentParser) -> dict[str, dict[str, Any]]:
    """Every --flag: how many values it takes (0, 1, "+", "*" or a count) and its choices, if any."""
    flags: dict[str, dict[str, Any]] = {}
    for action in parser._actions:
        nargs = action.nargs if action.nargs is not None else 1
        entry: dict[str, Any] = {"nargs": nargs}
        if action.choices is not None:
            entry["choices"] = sorted(str(getattr(c, "name", c)) for c in action.choices)
        for option in action.option_strings:
            if option.startswith("--"):
                flags[option] = entry
    return dict(sorted(flags.items()))


def megatron_lm_parser() -> argparse.ArgumentParser:
    sys.meta_path.insert(0, _StubFinder())
    from megatron.training.arguments import add_megatron_arguments  # type: ignore[import-not-found]

    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_megatron_arguments(parser)
    return parser


def main(argv: list[str]) -> int:
    engine, version, commit = argv
    assert engine == "megatron-lm", "only Megatron-LM's parser is recorded this way"
    record = {"engine": engine, "version": version, "commit": commit, "flags": describe(megatron_lm_parser())}
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
