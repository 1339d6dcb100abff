"""The post-training chain on the embedded SmolLM2-135M-Instruct, every link a factory command run in this process:

    SFT (LoRA) -> GRPO (LoRA, a few steps) -> factory sample (accepted answers + best/worst pairs)
    -> SFT on the accepted answers (RFT) -> DPO on the pairs -> factory export --quant -> factory eval of each stage

A LoRA stage trains on the merged model of the stage before it (`factory export` without --quant merges); each stage
is measured on the same tasks (ppl on demo-sft-alpaca, which no stage trains on, and gsm8k_demo on demo-eval-math,
held out from demo-grpo-math) and the deltas come from the function `factory eval --compare` uses. A link with
nothing to train on (no accepted answer, no pair) is reported as skipped, never faked.

    python -m bench.chain [--quick] [--workdir runs/chain]     (make chain)

On a CPU that other jobs share, pin it to one core (`taskset -c 1 make chain`): torch starts a thread per core, and
threads that wait on each other's busy cores made generation and evaluation several times slower.

Writes <workdir>/jobs/*.yaml (the jobs as a user would write them), <workdir>/chain.md (the table) and
bench/results/chain.json (or chain_quick.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

MODEL = "smollm2-135m-instruct-gguf"
PPL_DATA = "demo-sft-alpaca"
TASKS = ["ppl", "gsm8k_demo"]
Say = Callable[[str], None]


@dataclass(frozen=True)
class ChainSettings:
    """How long each link runs. FULL is `make chain`, sized for a shared 2-core CPU (about 21 min pinned to one core,
    bench/results/chain.json; a GPU affords far more); QUICK the e2e test's fewer steps."""

    sft_steps: int = 8
    max_length: int = 256
    micro_batch_size: int = 2
    accumulation: int = 1
    grpo_steps: int = 3
    grpo_generations: int = 4
    grpo_completion_tokens: int = 96
    sample_prompts: int = 24  # ~3 % of the answers are right at 135M: 8 prompts x 8 answers gave no row at all
    sample_n: int = 8
    sample_tokens: int = 128  # a worded problem's working and answer; at 64 tokens most answers are cut off
    sample_temperature: float = 0.7
    min_score: float = 1.0  # accepted: the final answer is right (math_answer 1, plus up to 0.1 for brevity)
    short_answer_chars: int = 200  # the length reward's full marks (GRPO and sampling)
    rft_steps: int = 4
    dpo_steps: int = 4
    quant: str = "int8"
    eval_limit: int = 20
    eval_tokens: int = 64
    warmup_ratio: float | None = None  # None: the stage's default; a link of one or two steps needs 0 to learn at all
    device: str = "auto"
    seed: int = 42


FULL = ChainSettings()
# Fewer steps and shorter answers; every answer is accepted (min_score 0), so the RFT and DPO links get rows to train
# on even when the model answers none of the few problems right.
QUICK = ChainSettings(
    sft_steps=2,
    max_length=128,
    micro_batch_size=1,
    accumulation=1,
    grpo_steps=1,
    grpo_generations=2,
    grpo_completion_tokens=16,
    sample_prompts=2,
    sample_n=3,
    sample_tokens=16,
    min_score=0.0,
    short_answer_chars=40,
    rft_steps=1,
    dpo_steps=1,
    eval_limit=2,
    eval_tokens=16,
    warmup_ratio=0.0,
)


def rewards(settings: ChainSettings) -> list[Any]:
    """GRPO's and sampling's rewards: the right final answer, and a little for a short one."""
    length = {"name": "length", "weight": 0.1, "kwargs": {"target_chars": settings.short_answer_chars}}
    return ["math_answer", length]


@dataclass
class Stage:
    """One link: what it made, how long it took, what it measured (empty when skipped)."""

    name: str
    what: str
    model: str | None
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    eval_seconds: float = 0.0
    deltas: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class ChainResult:
    settings: ChainSettings
    stages: list[Stage]
    sampling: dict[str, Any]
    seconds: float


def grpo_extra(settings: ChainSettings) -> dict[str, Any]:
    """The GRPO link's train and grpo sections: one prompt's group per step."""
    return {
        "train": {
            "learning_rate": 5e-5,
            "micro_batch_size": settings.grpo_generations,
            "gradient_accumulation_steps": 1,
        },
        "grpo": {
            "num_generations": settings.grpo_generations,
            "max_prompt_length": 256,
            "max_completion_length": settings.grpo_completion_tokens,
            "rewards": rewards(settings),
        },
    }


def lora_job(
    settings: ChainSettings, stage: str, model: str, data: list[Any], steps: int, run: Path, extra: dict[str, Any]
) -> dict[str, Any]:
    job: dict[str, Any] = {
        "backend": "deepspeed",
        "stage": stage,
        "model": {"name_or_path": model},
        "method": {"type": "lora", "lora": {"rank": 16, "alpha": 32, "target": "all"}},
        "data": {"train": data, "max_length": settings.max_length},
        "train": {
            "max_steps": steps,
            "micro_batch_size": settings.micro_batch_size,
            "gradient_accumulation_steps": settings.accumulation,
        },
        "output": {"dir": str(run), "save_steps": max(steps, 1)},
        "logging": {"steps": 1, "sample_after_training": False},
    }
    if settings.warmup_ratio is not None:
        job["train"]["warmup_ratio"] = settings.warmup_ratio
    for key, value in extra.items():
        job[key] = {**job.get(key, {}), **value} if isinstance(value, dict) else value
    return job


class Chain:
    def __init__(self, workdir: Path, settings: ChainSettings, say: Say) -> None:
        self.workdir, self.settings, self.say = workdir, settings, say
        self.stages: list[Stage] = []
        self.sampling: dict[str, Any] = {}

    def _train(self, name: str, job: dict[str, Any]) -> float:
        from factory_cli.train import train_job

        path = self.workdir / "jobs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        job = {**job, "device": self.settings.device}
        path.write_text(yaml.safe_dump(job, sort_keys=False))
        self.say(f"== {name}: factory train {path}")
        started = time.perf_counter()
        if train_job(path, []) != 0:
            raise RuntimeError(f"factory train {path} failed")
        return time.perf_counter() - started

    def _merge(self, run: Path) -> tuple[str, float]:
        """The run's adapter merged into its base: the next link's model."""
        from factory_cli.export import ExportRequest, run_export

        output = run.parent / f"{run.name}-merged"
        self.say(f"== merge: factory export --model {run} -o {output}")
        started = time.perf_counter()
        run_export(ExportRequest(model=str(run), output=output, device=self.settings.device, overwrite=True))
        return str(output), time.perf_counter() - started

    def _sample(self, model: str, output: Path, pairs: bool) -> Any:
        from factory_cli.config.schema import DatasetSpec, RewardSpec
        from factory_cli.sampling import SampleRequest, run_sample

        s = self.settings
        request = SampleRequest(
            model=model,
            datasets=(DatasetSpec(path="demo-grpo-math"),),
            rewards=tuple(RewardSpec.model_validate(r) for r in rewards(s)),
            output=output,
            n=s.sample_n,
            temperature=s.sample_temperature,
            max_new_tokens=s.sample_tokens,
            keep="best",
            min_score=s.min_score,
            pairs=pairs,
            limit=s.sample_prompts,
            batch_size=4,
            seed=s.seed,
            device=s.device,
            force=True,
        )
        self.say(f"== sample: factory sample --model {model} ... {'--pairs ' if pairs else ''}-o {output}")
        return run_sample(request, say=self.say, show_progress=False)

    def _train_and_merge(self, name: str, what: str, job: dict[str, Any], merge: bool = True) -> str:
        """Train a LoRA link; its row's time includes merging it for the next link. Returns the next link's model."""
        run = Path(job["output"]["dir"])
        seconds = self._train(name, job)
        model, merge_s = self._merge(run) if merge else (str(run), 0.0)
        self.stages.append(Stage(name, what, str(run), seconds + merge_s))
        return model

    def run(self) -> list[Stage]:
        s, work = self.settings, self.workdir
        self.stages.append(Stage("base", "SmolLM2-135M-Instruct", MODEL, 0.0))
        sft_data = ["demo-sft-messages", "demo-sft-sharegpt"]
        sft = lora_job(s, "sft", MODEL, sft_data, s.sft_steps, work / "sft", {"train": {"learning_rate": 5e-4}})
        model = self._train_and_merge("sft", f"LoRA SFT, {s.sft_steps} steps", sft)

        job = lora_job(s, "grpo", model, ["demo-grpo-math"], s.grpo_steps, work / "grpo", grpo_extra(s))
        model = self._train_and_merge("grpo", f"LoRA GRPO, {s.grpo_steps} steps", job)

        rft = self._sample(model, work / "data" / "rft.jsonl", pairs=False)
        pairs = self._sample(model, work / "data" / "pairs.jsonl", pairs=True)
        self.sampling = {"rft": rft.to_dict(), "pairs": pairs.to_dict()}
        what = (
            f"factory sample: {rft.samples} answers, {rft.accepted_samples} accepted, "
            f"{rft.rows} SFT rows, {pairs.rows} pairs"
        )
        self.stages.append(Stage("sample", what, None, rft.seconds + pairs.seconds))

        if rft.rows:
            extra = {"train": {"learning_rate": 2e-4}}
            job = lora_job(s, "sft", model, [str(rft.output)], s.rft_steps, work / "rft", extra)
            model = self._train_and_merge("rft", f"SFT on the accepted answers, {s.rft_steps} steps", job)
        else:
            self.stages.append(Stage("rft", "SFT on the accepted answers", None, 0.0, note="skipped: none accepted"))
        last = model
        if pairs.rows:
            extra = {"train": {"learning_rate": 5e-5}, "dpo": {"beta": 0.1}}
            job = lora_job(s, "dpo", model, [str(pairs.output)], s.dpo_steps, work / "dpo", extra)
            last = self._train_and_merge("dpo", f"DPO on the pairs, {s.dpo_steps} steps", job, merge=False)
        else:
            self.stages.append(Stage("dpo", "DPO on the pairs", None, 0.0, note="skipped: no pair"))

        from factory_cli.export import ExportRequest, run_export

        output = work / f"export-{s.quant}"
        self.say(f"== export: factory export --model {last} --quant {s.quant} -o {output}")
        started = time.perf_counter()
        run_export(ExportRequest(model=last, output=output, quant=s.quant, device=s.device, overwrite=True))
        what = f"factory export --quant {s.quant} (merged)"
        self.stages.append(Stage(s.quant, what, str(output), time.perf_counter() - started))
        self._evaluate()
        return self.stages

    def _evaluate(self) -> None:
        from factory_cli.evaluation import EvalRequest
        from factory_cli.evaluation.report import compute_deltas
        from factory_cli.evaluation.run import evaluate_model, ppl_source, validate_request

        s = self.settings
        request = EvalRequest(
            model=MODEL,
            tasks=TASKS,
            limit=s.eval_limit,
            max_new_tokens=s.eval_tokens,
            dataset=PPL_DATA,
            device=s.device,
        )
        specs = validate_request(request)
        source = ppl_source(request, [])
        base_results = None
        for stage in self.stages:
            if stage.model is None:
                continue
            self.say(f"== eval: factory eval --model {stage.model} --tasks {','.join(TASKS)} --limit {s.eval_limit}")
            started = time.perf_counter()
            results = evaluate_model(stage.model, specs, request, source)
            stage.eval_seconds = time.perf_counter() - started
            stage.metrics = {r.task: r.value for r in results.results}
            base_results = base_results or results
            stage.deltas = {d["task"]: d["delta"] for d in compute_deltas(results, base_results)}


def table(stages: list[Stage]) -> list[list[str]]:
    rows = []
    for stage in stages:
        ppl, acc = stage.metrics.get("ppl"), stage.metrics.get("gsm8k_demo")
        rows.append(
            [
                stage.name,
                stage.what + (f" ({stage.note})" if stage.note else ""),
                f"{stage.seconds:.0f}",
                "-" if ppl is None else f"{ppl:.2f} ({stage.deltas.get('ppl', 0.0):+.2f})",
                "-" if acc is None else f"{acc:.1%} ({stage.deltas.get('gsm8k_demo', 0.0):+.1%})",
                f"{stage.eval_seconds:.0f}",
            ]
        )
    return rows


COLUMNS = ["stage", "what", "time s", "ppl (vs base)", "gsm8k_demo (vs base)", "eval s"]


def markdown(result: ChainResult) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table(result.stages)]
    rft, pairs = result.sampling.get("rft", {}), result.sampling.get("pairs", {})
    if rft:
        lines.append("")
        lines.append(
            f"sampling: {rft['prompts']} prompts x {rft['samples'] // max(1, rft['prompts'])} answers, "
            f"{rft['accepted_samples']}/{rft['samples']} answers accepted, {rft['groups_accepted']}/{rft['prompts']} "
            f"prompts with one, {pairs.get('rows', 0)} pairs, {rft['samples_per_second'] or 0:.2f} samples/s"
        )
    lines.append(f"total wall time {result.seconds:.0f} s")
    return "\n".join(lines) + "\n"


def run_chain(workdir: Path, settings: ChainSettings = FULL, say: Say = print) -> ChainResult:
    """Every link, from a fresh `workdir`; the table of each stage's numbers and time."""
    started = time.perf_counter()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    chain = Chain(workdir, settings, say)
    stages = chain.run()
    result = ChainResult(settings, stages, chain.sampling, time.perf_counter() - started)
    (workdir / "chain.md").write_text(markdown(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the e2e test's fewer steps (saved as chain_quick)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/chain"), help="where the runs go (replaced)")
    parser.add_argument("--device", default="auto", help="auto | cuda | npu | cpu")
    options = parser.parse_args()
    settings = replace(QUICK if options.quick else FULL, device=options.device)
    result = run_chain(options.workdir, settings)
    from bench.harness import RESULTS, git_sha, machine, versions
    from factory_cli.ui import print_table

    print_table("the post-training chain", COLUMNS, table(result.stages))
    print(markdown(result).split("\n\n", 1)[-1])
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"chain{'_quick' if options.quick else ''}.json"
    record = {
        "settings": asdict(result.settings),
        "stages": [asdict(stage) for stage in result.stages],
        "sampling": result.sampling,
        "seconds": result.seconds,
        "machine": machine(),
        "versions": versions(),
        "git_sha": git_sha(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"-> {path}, {options.workdir / 'chain.md'}")


if __name__ == "__main__":
    main()
