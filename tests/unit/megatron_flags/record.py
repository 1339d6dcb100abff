"""Record an engine's command-line flags (name, arity, choices) as JSON, for tests/unit/test_megatron_argv.py.

The train scripts' parser lives in Megatron-LM's megatron/training/arguments.py, which the megatron-core wheel does
not ship, so the tests parse planned argv against this record instead. Made from a checkout of the engine:

    git -C Megatron-LM archive core_v0.17.0 megatron | tar -x -C /tmp/mlm
    PYTHONPATH=/tmp/mlm python -m tests.unit.megatron_flags.record megatron-lm core_v0.17.0 <commit> \
        > tests/unit/megatron_flags/megatron_lm_core_v0.17.0.json

megatron/core/transformer/custom_layers/batch_invariant_kernels.py imports triton, which a CPU machine lacks; the
parser does not use it, so that one module is replaced by an empty stand-in while the parser is built.

Megatron Bridge's scripts/conversion/arguments.py builds its parser with argparse alone; its import and export
subcommands are recorded from that parser:

    git -C Megatron-Bridge show v0.6.0:scripts/conversion/arguments.py > /tmp/bridge/arguments.py
    python -m tests.unit.megatron_flags.record bridge v0.6.0 <commit> /tmp/bridge/arguments.py \
        > tests/unit/megatron_flags/megatron_bridge_v0.6.0.json

MindSpeed-LLM's parser is assembled at import time from Megatron-LM core_v0.12.1, MindSpeed's features and its own
(and needs torch_npu), so its flags are read from the sources instead: every `add_argument("--flag", ...)` call,
with its action / nargs / choices when they are literals (a flag defined in several places keeps every arity):

    python -m tests.unit.megatron_flags.record static mindspeed-llm 26.1.0 \
        --source Megatron-LM core_v0.12.1 <commit> /tmp/npu/mlm012 \
        --source MindSpeed 26.1.0_core_r0.12.1 <commit> /tmp/npu/ms \
        --source MindSpeed-LLM v26.1.0 <commit> /tmp/npu/msllm > tests/unit/megatron_flags/mindspeed_llm_26.1.0.json
"""

from __future__ import annotations

import argparse
import ast
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
import types
from pathlib import Path
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


SWITCH_ACTIONS = {"store_true", "store_false", "store_const", "count", "help", "version"}


def _literal(node: ast.expr | None) -> Any:
    try:
        return ast.literal_eval(node) if node is not None else None
    except ValueError:
        return ...


def static_flags(files: list[Path]) -> dict[str, dict[str, Any]]:
    """Every --flag of `add_argument` calls in the files: its arities ("any" when not a literal) and choices."""
    flags: dict[str, dict[str, Any]] = {}
    for file in files:
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"):
                continue
            names = [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")]
            if not names:
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            action, nargs = _literal(keywords.get("action")), _literal(keywords.get("nargs"))
            if action is ... or nargs is ...:
                arity: Any = "any"
            elif action in SWITCH_ACTIONS:
                arity = 0
            else:
                arity = 1 if nargs is None else nargs
            choices = _literal(keywords.get("choices"))
            for name in names:
                entry = flags.setdefault(name, {"nargs": [], "choices": []})
                if arity not in entry["nargs"]:
                    entry["nargs"].append(arity)
                if isinstance(choices, (list, tuple)) and entry["choices"] is not None:
                    entry["choices"] = sorted({*entry["choices"], *map(str, choices)})
                else:
                    entry["choices"] = None  # some definition accepts any value
    return dict(sorted(flags.items()))


def bridge_commands(arguments_py: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The flags of each subcommand of Megatron Bridge's conversion parser (build_parser(include_execution=False))."""
    spec = importlib.util.spec_from_file_location("bridge_conversion_arguments", arguments_py)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser = module.build_parser(include_execution=False)
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: describe(sub) for name, sub in sorted(subparsers.choices.items())}


def main(argv: list[str]) -> int:
    if argv[0] == "bridge":
        _, version, commit, arguments_py = argv
        record = {
            "engine": "megatron-bridge",
            "version": version,
            "commit": commit,
            "commands": bridge_commands(Path(arguments_py)),
        }
        print(json.dumps(record, indent=1))
        return 0
    if argv[0] == "static":
        parser = argparse.ArgumentParser()
        parser.add_argument("engine")
        parser.add_argument("version")
        parser.add_argument("--source", nargs=4, action="append", metavar=("NAME", "REF", "COMMIT", "DIR"))
        args = parser.parse_args(argv[1:])
        sources = [{"name": n, "ref": r, "commit": c} for n, r, c, _ in args.source]
        files = sorted(f for *_, folder in args.source for f in Path(folder).rglob("*.py"))
        record = {"engine": args.engine, "version": args.version, "sources": sources, "flags": static_flags(files)}
    else:
        engine, version, commit = argv
        assert engine == "megatron-lm", "the parser is built only for Megatron-LM"
        record = {"engine": engine, "version": version, "commit": commit, "flags": describe(megatron_lm_parser())}
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
