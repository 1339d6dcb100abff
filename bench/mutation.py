"""`make mutation`: mutmut over the core modules, each against the fast unit tests that cover it.

Every module runs in a work folder of its own (bench/.work/mutation/<module>/, outside git) that links the repository
and carries a pyproject.toml whose `[tool.mutmut]` table is the repository's plus this module's `only_mutate` and test
selection: one mutant then runs the tests of its module that reach the mutated function (mutmut's own per-function
mapping), never the suite. bench/results/mutation.json holds every module's latest result, each with the commit it
ran at (a run replaces the results of its own modules only). Surviving mutants judged equivalent (no observable
change) are read from bench/mutation_equivalent.yaml, keyed by module, function and the changed code, so the list
survives line drift.

    .venv/bin/python -m bench.mutation                       # every module, smallest first
    .venv/bin/python -m bench.mutation factory_cli/runs.py   # one module (merged into the existing result file)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / ".work" / "mutation"
RESULT = REPO / "bench" / "results" / "mutation.json"
EQUIVALENT = REPO / "bench" / "mutation_equivalent.yaml"
# What a test run reads besides factory_cli/ and tests/ (factory_cli/paths.py finds these next to the package).
LINKED = ("factory_cli", "tests", "templates", "model_registry", "datasets_registry", "examples")
# .venv-verl (make setup-verl), where present, is what the verl plan tests probe.
ENVIRONMENTS = (".venv-verl",)

U = "tests/unit/"
# module (a file, or a package folder) -> the unit test files that exercise it; mutmut maps each mutated function to
# the tests among these that reach it.
MODULES: dict[str, tuple[str, ...]] = {
    "factory_cli/config/checks.py": (
        U + "test_validate.py",
        U + "test_error_corpus.py",
        U + "test_bad_input_corpus.py",
        U + "test_config_checks_edges.py",
        U + "test_mix_checks.py",
        U + "test_check_data_rate.py",
    ),
    "factory_cli/backends/deepspeed/checks.py": (U + "test_error_corpus.py", U + "test_backend_checks_edges.py"),
    "factory_cli/backends/megatron/checks.py": (
        U + "test_error_corpus.py",
        U + "test_megatron_stack.py",
        U + "test_backend_checks_edges.py",
    ),
    "factory_cli/backends/verl/checks.py": (
        U + "test_error_corpus.py",
        U + "test_verl_checks.py",
        U + "test_backend_checks_edges.py",
    ),
    "factory_cli/backends/common/plan.py": (
        U + "test_megatron_plan.py",
        U + "test_deepspeed_plan.py",
        U + "test_plan_common_edges.py",
    ),
    "factory_cli/backends/deepspeed/plan.py": (
        U + "test_deepspeed_plan.py",
        U + "test_golden.py",
        U + "test_deepspeed_plan_edges.py",
    ),
    "factory_cli/backends/megatron/plan.py": (
        U + "test_megatron_plan.py",
        U + "test_megatron_argv.py",
        U + "test_golden.py",
        U + "test_megatron_plan_edges.py",
    ),
    "factory_cli/backends/verl/plan.py": (U + "test_verl_plan.py", U + "test_golden.py", U + "test_verl_plan_edges.py"),
    "factory_cli/runs.py": (U + "test_run_dir.py", U + "test_runs_edges.py"),
    "factory_cli/rewards": (U + "test_bad_input_corpus.py", U + "test_rewards_edges.py"),
    "factory_cli/data/masking.py": (U + "test_masking.py", U + "test_chat_templates.py", U + "test_masking_edges.py"),
    "factory_cli/data/formats.py": (U + "test_formats.py", U + "test_readers.py", U + "test_formats_edges.py"),
    "factory_cli/export/verify.py": (U + "test_inference.py", U + "test_export_verify_edges.py"),
}

# Modules whose tests run torch: mutmut's default forks each mutant from the process that already ran the tests, and
# torch's thread pool does not survive a fork (the child hangs in its first matmul); a fork server that never ran
# them gives clean children.
MODULE_SETTINGS: dict[str, dict[str, Any]] = {"factory_cli/export/verify.py": {"process_isolation": "forkserver"}}

TABLE = ("killed", "total", "score", "score_without_equivalent")
RUN_FACTS = "run.json"  # in a module's work folder: the commit it ran at and how long it took
COUNTED = ("killed", "survived", "timeout", "no tests", "suspicious", "segfault", "skipped", "not checked")
_RESULT_LINE = re.compile(r"^\s+(\S+__mutmut_\d+): (.+)$")


@dataclass(frozen=True)
class Mutant:
    name: str  # mutmut's name, e.g. factory_cli.runs.xǁRunDirǁcheckpoints__mutmut_3
    status: str  # killed / survived / timeout / no tests / ...
    function: str = ""  # Class.method or function
    change: str = ""  # the changed lines, "- old | + new"


def module_pattern(module: str) -> str:
    """mutmut's `only_mutate` glob for a module: the file itself, or every .py file of a package folder."""
    return module if module.endswith(".py") else module.rstrip("/") + "/*.py"


def existing_tests(tests: Iterable[str], root: Path = REPO) -> list[str]:
    """The mapped test files that exist (a mapped file may not have been written yet)."""
    return [t for t in tests if (root / t).is_file()]


def mutmut_table(base: Mapping[str, Any], module: str, tests: Sequence[str]) -> str:
    """The `[tool.mutmut]` TOML table of one module's run: the repository's settings, this module and its tests."""
    table = dict(base)
    table["source_paths"] = ["factory_cli"]
    table["only_mutate"] = [module_pattern(module)]
    table["pytest_add_cli_args_test_selection"] = list(tests)
    table.update(MODULE_SETTINGS.get(module, {}))
    # JSON strings, numbers and arrays of them are valid TOML values.
    return "[tool.mutmut]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items())


def pyproject_for(module: str, tests: Sequence[str], pyproject: str) -> str:
    """The repository's pyproject.toml with its `[tool.mutmut]` table replaced by this module's."""
    base = tomllib.loads(pyproject).get("tool", {}).get("mutmut", {})
    kept = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", pyproject)
    return kept.rstrip("\n") + "\n\n" + mutmut_table(base, module, tests)


def slug(module: str) -> str:
    return module.removeprefix("factory_cli/").removesuffix(".py").replace("/", ".")


def prepare_workdir(module: str, tests: Sequence[str]) -> Path:
    """A fresh work folder: links to what the tests read, and the module's pyproject.toml."""
    work = WORK / slug(module)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in LINKED:
        if (REPO / name).exists():
            (work / name).symlink_to(REPO / name, target_is_directory=True)
    # mutmut copies the rest into mutants/, where the tests run; an environment is linked, never copied.
    for name in ENVIRONMENTS:
        if (REPO / name).exists():
            (work / "mutants").mkdir(exist_ok=True)
            (work / "mutants" / name).symlink_to(REPO / name, target_is_directory=True)
    (work / "pyproject.toml").write_text(pyproject_for(module, tests, (REPO / "pyproject.toml").read_text()))
    return work


def parse_results(text: str) -> dict[str, str]:
    """`mutmut results --all true` -> {mutant name: status}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        match = _RESULT_LINE.match(line)
        if match:
            out[match.group(1)] = match.group(2).strip()
    return out


def function_of(name: str, dotted_module: str) -> str:
    """The function a mutant lives in: `factory_cli.runs.xǁRunDirǁcheckpoints__mutmut_3` -> `RunDir.checkpoints`."""
    local = name.removeprefix(dotted_module + ".").rsplit("__mutmut_", 1)[0]
    if local.startswith("xǁ"):
        return ".".join(part for part in local.removeprefix("xǁ").split("ǁ") if part)
    return local.removeprefix("x_")


def change_of(diff: str) -> str:
    """The changed lines of `mutmut show`'s unified diff, stripped: `- old | + new`."""
    lines = [
        f"{line[0]} {line[1:].strip()}"
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---")) and line[1:].strip()
    ]
    return " | ".join(lines)


def _mutmut(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m mutmut <args>` in a module's work folder; stopping this runner stops mutmut and its workers."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    argv = [sys.executable, "-m", "mutmut", *args]
    with subprocess.Popen(
        argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            out, err = process.communicate()
        except BaseException:
            os.killpg(process.pid, signal.SIGTERM)
            raise
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def run_module(module: str, tests: Sequence[str], max_children: int, log: Path, rerun: bool = True) -> list[Mutant]:
    """One mutmut run over `module` (or, with rerun=False, the results its last run left in the work folder); every
    mutant with its status, and the change of those not killed."""
    work = WORK / slug(module)
    if rerun:
        started, sha = time.monotonic(), git_sha()  # the commit whose tests are copied now
        work = prepare_workdir(module, tests)
        # written first, so a run stopped half-way still says where it ran (its unreached mutants: not checked)
        (work / RUN_FACTS).write_text(json.dumps({"git_sha": sha, "seconds": None, "finished": False}))
        run = _mutmut(work, "run", "--max-children", str(max_children))
        log.write_text(run.stdout + "\n--- stderr ---\n" + run.stderr)
        if run.returncode != 0:
            raise RuntimeError(f"mutmut run over {module} failed ({run.returncode}); its output is in {log}")
        facts = {"git_sha": sha, "seconds": round(time.monotonic() - started, 1), "finished": True}
        (work / RUN_FACTS).write_text(json.dumps(facts))
    elif not (work / "mutants").is_dir():
        raise RuntimeError(f"{module} has no earlier run in {work}")
    statuses = parse_results(_mutmut(work, "results", "--all", "true").stdout)
    diffs = _diffs(work, [name for name, status in statuses.items() if status != "killed"])
    return [
        Mutant(name, status, mutant_function(name, module), change_of(diffs.get(name, "")))
        for name, status in sorted(statuses.items())
    ]


# `mutmut show` of many mutants in one process (one interpreter start instead of one per survivor).
_SHOW_ALL = (
    "import sys; from mutmut.__main__ import cli; [cli.main(['show', n], standalone_mode=False) for n in sys.argv[1:]]"
)


def _diffs(work: Path, names: Sequence[str]) -> dict[str, str]:
    """{mutant: its diff} from `mutmut show`, whose output starts each mutant with `# <name>: <status>`."""
    if not names:
        return {}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", _SHOW_ALL, *names], cwd=work, env=env, capture_output=True, text=True, check=False
    )
    return split_shows(done.stdout)


def split_shows(text: str) -> dict[str, str]:
    """The output of several `mutmut show` calls, split per mutant."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = re.match(r"^# (\S+__mutmut_\d+): ", line)
        if match:
            current = out.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in out.items()}


def _package_modules(module: str) -> list[str]:
    if module.endswith(".py"):
        return []
    return [f"{module.rstrip('/')}/{p.stem}".replace("/", ".") for p in sorted((REPO / module).glob("*.py"))]


def mutant_function(name: str, module: str) -> str:
    """The function a mutant of `module` lives in; in a package, named with its file: `loader.LoadedReward.score`."""
    for sub in _package_modules(module):
        if name.startswith(sub + "."):
            return sub.rsplit(".", 1)[1] + "." + function_of(name, sub)
    return function_of(name, module.removesuffix(".py").replace("/", "."))


def load_equivalent(path: Path = EQUIVALENT) -> list[dict[str, str]]:
    """The judged-equivalent mutants: module, function, change (as `change_of` writes it) and the reason."""
    if not path.is_file():
        return []
    entries = yaml.safe_load(path.read_text()) or []
    for entry in entries:
        missing = {"module", "function", "change", "reason"} - set(entry)
        if missing:
            raise ValueError(f"{path}: an entry lacks {sorted(missing)}: {entry}")
    return list(entries)


def module_summary(mutants: Sequence[Mutant], equivalent: Sequence[dict[str, str]], module: str) -> dict[str, Any]:
    """Counts by status, the score (killed / total) and the survivors: equivalent ones with their reason. A mutant a
    stopped run never reached ("not checked") has no verdict: it is counted as such, outside the total."""
    counts = {status.replace(" ", "_"): sum(m.status == status for m in mutants) for status in COUNTED}
    checked = [m for m in mutants if m.status != "not checked"]
    total = len(checked)
    judged = {(e["function"], e["change"]): e["reason"] for e in equivalent if e["module"] == module}
    alive = [m for m in checked if m.status not in ("killed", "timeout")]
    equivalent_here = [m for m in alive if (m.function, m.change) in judged]
    killed = counts["killed"]
    return {
        **counts,
        "total": total,
        "score": round(killed / total, 4) if total else None,
        "equivalent": len(equivalent_here),
        "score_without_equivalent": round(killed / (total - len(equivalent_here)), 4)
        if total > len(equivalent_here)
        else None,
        "not_killed": [
            {"mutant": m.name, "status": m.status, "function": m.function, "change": m.change}
            for m in alive
            if (m.function, m.change) not in judged
        ],
        "equivalent_mutants": [
            {"mutant": m.name, "function": m.function, "change": m.change, "reason": judged[(m.function, m.change)]}
            for m in equivalent_here
        ],
    }


def overall(modules: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The score over every module that ran: killed / total, and the judged-equivalent list."""
    killed = sum(int(m["killed"]) for m in modules.values())
    total = sum(int(m["total"]) for m in modules.values())
    equivalent = [
        {"module": name, "mutant": e["mutant"], "function": e["function"], "change": e["change"], "reason": e["reason"]}
        for name, m in modules.items()
        for e in m["equivalent_mutants"]
    ]
    return {
        "score": round(killed / total, 4) if total else None,
        "killed": killed,
        "total": total,
        "score_without_equivalent": round(killed / (total - len(equivalent)), 4) if total > len(equivalent) else None,
        "equivalent": equivalent,
    }


def git_sha() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "factory_cli", "tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def changed_since(module: str, sha: str, root: Path = REPO) -> bool | None:
    """Whether `module`'s source differs now from the commit its result ran at (None where git cannot tell: a commit
    unknown here). A `-dirty` commit is compared as the commit itself."""
    target = sha.removesuffix("-dirty")
    done = subprocess.run(
        ["git", "diff", "--quiet", target, "--", module], cwd=root, capture_output=True, text=True, check=False
    )
    return {0: False, 1: True}.get(done.returncode)


def write_result(modules: Mapping[str, Mapping[str, Any]], path: Path = RESULT) -> dict[str, Any]:
    """bench/results/mutation.json: every mapped module's latest result. The modules of this invocation replace their
    earlier result; every other module keeps the one it has, with the commit it ran at (its `git_sha`) and its
    `seconds`, so one module can be run at a time at whatever commit. The top-level `git_sha` is the commit of this
    invocation's modules; `changed_since_run` lists the modules whose source changed after their result's commit."""
    from bench.harness import machine

    earlier: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    merged: dict[str, Any] = {name: m for name, m in earlier.get("modules", {}).items() if name in MODULES}
    merged.update(modules)
    summary = overall(merged)
    result = {
        "name": "mutation",
        "description": "mutants killed by the unit tests mapped to each core module (mutmut; `make mutation`)",
        "time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": machine(),
        # bench/report.py renders this as the table: one row per module
        "metrics": {
            **{m: {k: merged[m][k] for k in TABLE} for m in sorted(merged)},
            "all": {k: summary.get(k) for k in TABLE},
        },
        **summary,
        "modules": dict(sorted(merged.items())),
        "modules_run": sorted(merged),
        "modules_not_run": sorted(set(MODULES) - set(merged)),
        "git_sha": " ".join(sorted({str(m["git_sha"]) for m in modules.values()})),
        "changed_since_run": sorted(m for m in merged if changed_since(m, str(merged[m]["git_sha"])) is not False),
        "tool": f"mutmut {mutmut_version()}",
        "tests": {m: list(MODULES[m]) for m in sorted(merged) if m in MODULES},
    }
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result


def module_size(module: str) -> int:
    target = REPO / module
    files = [target] if target.is_file() else sorted(target.glob("*.py"))
    return sum(len(f.read_text().splitlines()) for f in files)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="modules to run (default: all, smallest first)")
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="no new mutmut run: the results the last run of each module left (e.g. after editing the equivalent list)",
    )
    parser.add_argument("--output", type=Path, default=RESULT, help=f"result file (default {RESULT.relative_to(REPO)})")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a stopped runner stops mutmut too
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"not a mapped module: {', '.join(unknown)}; mapped: {', '.join(MODULES)}")
    chosen = args.modules or sorted(MODULES, key=module_size)
    equivalent = load_equivalent()
    results: dict[str, Any] = {}
    for module in chosen:
        tests = existing_tests(MODULES[module])
        print(f"mutation: {module} against {len(tests)} test files", flush=True)
        WORK.mkdir(parents=True, exist_ok=True)
        log = WORK / f"{slug(module)}.log"
        try:
            mutants = run_module(module, tests, args.max_children, log, rerun=not args.report_only)
        except RuntimeError as exc:  # one module's failure (its clean test run failed) does not stop the others
            print(f"  not run: {exc}", flush=True)
            continue
        facts = json.loads((WORK / slug(module) / RUN_FACTS).read_text())
        summary = results[module] = {**module_summary(mutants, equivalent, module), **facts}
        counts = f"{summary['killed']}/{summary['total']} killed ({summary['score']})"
        print(f"  {counts}, mutmut ran {summary['seconds']} s", flush=True)
        write_result(results, args.output)
    final = json.loads(args.output.read_text())
    print(f"mutation score {final['score']} ({final['killed']}/{final['total']}) -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
