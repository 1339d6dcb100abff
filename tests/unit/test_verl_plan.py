"""The verl planner: hydra overrides per GRPO variant, SFT, the reward adapter, parquet rows, golden plans.

Golden files live in tests/unit/golden/; regenerate them after an intended change with
    python -m tests.unit.plan_helpers --update-golden
and review the diff. No test needs verl installed.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from factory_cli.backends import get_backend
from factory_cli.backends.base import Plan
from factory_cli.backends.verl import backend as verl_backend
from factory_cli.backends.verl.plan import hydra_value, plan_verl
from factory_cli.backends.verl.reward_adapter import reward_keys, reward_module_source
from factory_cli.config.defaults import DeviceFacts, resolve_device_defaults
from factory_cli.config.errors import UsageError
from factory_cli.config.schema import VerlJob
from factory_cli.config.validate import load_and_validate
from tests.unit.plan_helpers import EXAMPLES, GoldenCheck, Recorder, all_installed

MATH = {"name": "math_answer", "function": None, "weight": 1.0, "kwargs": {}, "label": "math_answer"}


def job_of(example: str, device: str = "cuda", overrides: tuple[str, ...] = ()) -> VerlJob:
    job = load_and_validate(EXAMPLES / example, list(overrides)).job
    resolved = resolve_device_defaults(job, DeviceFacts(device, bf16=True))
    assert isinstance(resolved, VerlJob)
    return resolved


def plan_of(example: str, device: str = "cuda", overrides: tuple[str, ...] = ()) -> Plan:
    return get_backend("verl").plan(job_of(example, device, overrides), device)


def overrides_of(plan: Plan) -> dict[str, str]:
    """key -> value of the plan's hydra overrides (the last one wins, as in hydra)."""
    pairs = (o.split("=", 1) for o in plan.engine_config["overrides"])
    return {key: value for key, value in pairs}


# ------------------------------------------------------------------------------------------------ golden


@pytest.mark.parametrize("example", ["verl_grpo.yaml", "verl_sft.yaml"])
def test_golden_plans(example: str, golden: GoldenCheck) -> None:
    golden(f"{Path(example).stem}.cuda", plan_of(example).to_dict())


def test_every_verl_example_plans() -> None:
    examples = sorted(EXAMPLES.glob("verl_*.yaml"))
    assert examples
    for path in examples:
        assert plan_of(path.name).steps[0].name == "train"


# ------------------------------------------------------------------------------------------------ grpo variants


def test_grpo_overrides() -> None:
    o = overrides_of(plan_of("verl_grpo.yaml", overrides=("grpo.loss=grpo", "grpo.overlong.buffer_length=0")))
    assert o["algorithm.adv_estimator"] == "grpo"
    assert o["algorithm.norm_adv_by_std_in_grpo"] == "True"
    assert o["algorithm.use_kl_in_reward"] == "False"
    assert o["actor_rollout_ref.actor.loss_agg_mode"] == "seq-mean-token-mean"
    assert o["actor_rollout_ref.actor.policy_loss.loss_mode"] == "vanilla"
    assert o["actor_rollout_ref.actor.use_kl_loss"] == "True"
    assert o["actor_rollout_ref.actor.kl_loss_coef"] == "0.04"
    assert o["actor_rollout_ref.actor.kl_loss_type"] == "low_var_kl"
    assert (
        o["actor_rollout_ref.actor.clip_ratio_low"] == "0.2" and o["actor_rollout_ref.actor.clip_ratio_high"] == "0.2"
    )
    assert "algorithm.filter_groups.enable" not in o and "reward.reward_manager.name" not in o
    assert o["actor_rollout_ref.actor.entropy_coeff"] == "0"


def test_dapo_overrides() -> None:
    o = overrides_of(plan_of("verl_grpo.yaml"))
    assert o["actor_rollout_ref.actor.loss_agg_mode"] == "token-mean"
    assert o["actor_rollout_ref.actor.clip_ratio_high"] == "0.28"
    assert o["actor_rollout_ref.actor.use_kl_loss"] == "False"
    assert o["algorithm.filter_groups.enable"] == "True" and o["algorithm.filter_groups.metric"] == "score"
    assert o["reward.reward_manager.name"] == "dapo"
    assert o["+reward.reward_kwargs.overlong_buffer_cfg.enable"] == "True"
    assert o["+reward.reward_kwargs.overlong_buffer_cfg.len"] == "256"
    assert o["+reward.reward_kwargs.max_resp_len"] == "1024"
    assert o["data.max_response_length"] == "1024" and o["data.train_batch_size"] == "32"
    # 32 samples per update = 4 prompts of 8; 256 samples per step = 8 updates, so 40 iterations = 5 steps.
    assert o["actor_rollout_ref.actor.ppo_mini_batch_size"] == "4"
    assert o["trainer.save_freq"] == "5"


def test_dr_grpo_overrides() -> None:
    o = overrides_of(plan_of("verl_grpo.yaml", overrides=("grpo.loss=dr_grpo",)))
    assert o["actor_rollout_ref.actor.loss_agg_mode"] == "seq-mean-token-sum-norm"
    assert o["algorithm.norm_adv_by_std_in_grpo"] == "False"
    assert o["actor_rollout_ref.actor.use_kl_loss"] == "False"
    assert o["actor_rollout_ref.actor.policy_loss.loss_mode"] == "vanilla"


def test_gspo_overrides() -> None:
    o = overrides_of(plan_of("verl_grpo.yaml", overrides=("grpo.loss=gspo",)))
    assert o["actor_rollout_ref.actor.policy_loss.loss_mode"] == "gspo"
    assert o["actor_rollout_ref.actor.loss_agg_mode"] == "seq-mean-token-mean"
    assert o["actor_rollout_ref.actor.clip_ratio_low"] == "0.0003"
    assert o["actor_rollout_ref.actor.clip_ratio_high"] == "0.0004"


def test_schedule_and_length_from_dataset_sizes() -> None:
    job = job_of("verl_grpo.yaml")
    plan = plan_verl(job, "cuda", "Qwen/Qwen2.5-7B-Instruct", dataset_sizes=[2048, 6973])
    o = overrides_of(plan)
    assert o["trainer.total_training_steps"] == "281" and o["trainer.total_epochs"] == "1"
    schedule = plan.engine_config["schedule"]
    assert schedule["rollout_steps_per_epoch"] == 281 and schedule["train_iterations_per_epoch"] == 2248
    assert schedule["save_every_iterations"] == 40
    assert any(n.startswith("schedule: 8992 prompts/epoch -> 281 rollout steps") for n in plan.notes)
    steps = overrides_of(plan_of("verl_grpo.yaml", overrides=("train.max_steps=80", "train.epochs=null")))
    assert steps["trainer.total_training_steps"] == "10" and steps["trainer.total_epochs"] == "10"


def test_strategy_offload_lora_and_extras() -> None:
    extra = ("rollout.extra_overrides=[trainer.val_before_train=True,+ray_kwargs.ray_init.num_cpus=8]",)
    o = overrides_of(plan_of("verl_grpo.yaml", overrides=("parallel.param_offload=true", "method.type=lora", *extra)))
    assert o["actor_rollout_ref.actor.fsdp_config.param_offload"] == "True"
    assert (
        o["actor_rollout_ref.model.lora_rank"] == "16" and o["actor_rollout_ref.model.target_modules"] == "all-linear"
    )
    assert o["actor_rollout_ref.rollout.load_format"] == "safetensors"
    assert o["trainer.val_before_train"] == "True"  # extra overrides come last and win
    plan = plan_of("verl_grpo.yaml", overrides=extra)
    assert plan.steps[0].argv[-2:] == ["trainer.val_before_train=True", "+ray_kwargs.ray_init.num_cpus=8"]
    megatron = overrides_of(plan_of("verl_grpo.yaml", overrides=("parallel.strategy=megatron",)))
    assert megatron["model_engine"] == "megatron" and "actor_rollout_ref.actor.strategy" not in megatron
    assert megatron["actor_rollout_ref.actor.megatron.param_offload"] == "False"


def test_npu_plan() -> None:
    plan = plan_of("verl_grpo.yaml", device="npu")
    step = plan.steps[0]
    assert step.argv[:2] == ["bash", "-c"] and "set_env.sh" in step.argv[2]
    inner = shlex.split(step.argv[2].split(" && exec ", 1)[1])
    assert inner[:3] == ["python", "-m", "verl.trainer.main_ppo"] and "trainer.device=npu" in inner
    assert "hccl" in " ".join(plan.notes) and "ASCEND_RT_VISIBLE_DEVICES" in " ".join(plan.notes)


def test_refusals() -> None:
    job = job_of("verl_sft.yaml")
    qlora = job.model_copy(update={"method": job.method.model_copy(update={"type": "qlora"})})
    with pytest.raises(UsageError, match="qlora"):  # checks refuse it first; the planner does too
        plan_verl(qlora, "cuda", "x")
    with pytest.raises(UsageError, match="hf"):
        plan_of("verl_grpo.yaml", overrides=("rollout.engine=hf",))
    with pytest.raises(UsageError, match="GPUs or NPUs"):
        plan_verl(job_of("verl_grpo.yaml"), "cpu", "x")


def test_hydra_values() -> None:
    assert hydra_value(True) == "True" and hydra_value(None) == "null"
    assert hydra_value([0.9, 0.999]) == "[0.9,0.999]" and hydra_value(1e-6) == "1e-06"
    assert hydra_value("runs/a-b/c.parquet") == "runs/a-b/c.parquet"
    assert hydra_value("my runs/x,y") == "'my runs/x,y'"
    assert hydra_value("${oops}") == "'${oops}'"


# ------------------------------------------------------------------------------------------------ sft


def test_sft_overrides() -> None:
    plan = plan_of("verl_sft.yaml")
    argv = plan.steps[0].argv
    assert argv[:3] == ["python", "-m", "torch.distributed.run"]
    assert argv[argv.index("-m", 3) + 1] == "verl.trainer.sft_trainer"
    o = overrides_of(plan)
    assert o["data.messages_key"] == "messages" and o["data.train_batch_size"] == "16"
    assert o["data.micro_batch_size_per_gpu"] == "4" and o["model.lora_rank"] == "32"
    assert o["engine.strategy"] == "fsdp2" and o["optim.lr"] == "0.0001"
    assert "data.val_files" not in o and o["trainer.test_freq"] == "-1"
    sized = plan_verl(job_of("verl_sft.yaml"), "cuda", "x", dataset_sizes=[300])
    assert overrides_of(sized)["trainer.total_training_steps"] == "36"  # 300 // 16 = 18 steps per epoch, 2 epochs


# ------------------------------------------------------------------------------------------------ rewards


def test_reward_module_scores_math() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(reward_module_source([MATH]), "verl_reward.py", "exec"), namespace)
    compute_score = namespace["compute_score"]
    right = compute_score("demo_math", "12 + 79 = 91, so the answer is \\boxed{91}", "91", {"index": 0})
    wrong = compute_score("demo_math", "The answer is 92.", "91", None)
    assert right == {"score": 1.0, "math_answer": 1.0}
    assert wrong == {"score": 0.0, "math_answer": 0.0}


def test_reward_module_weights_user_rewards(tmp_path: Path) -> None:
    (tmp_path / "my_reward.py").write_text(
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
        "    return {'score': float(len(solution_str) > 3 and extra_info['bonus'])}\n",
        encoding="utf-8",
    )
    rewards = [
        {**MATH, "weight": 0.5},
        {"name": None, "function": "my_reward.py:compute_score", "weight": 2.0, "kwargs": {}, "label": "score"},
    ]
    namespace: dict[str, Any] = {}
    exec(reward_module_source(rewards, [str(tmp_path)]), namespace)
    result = namespace["compute_score"]("src", "<answer>4</answer>", "4", {"bonus": 1})
    assert result == {"score": 2.5, "math_answer": 1.0, "reward_score": 1.0}


def test_reward_keys_are_unique() -> None:
    assert reward_keys(["format", "format", "score", "acc"]) == ["format", "format_2", "reward_score", "reward_acc"]


# ------------------------------------------------------------------------------------------------ data


def test_demo_grpo_rows_write_parquet(tmp_path: Path) -> None:
    from factory_cli.data.pipeline import read_canonical_rows

    job = job_of("verl_grpo.yaml")
    rows = read_canonical_rows(job, job.data.train, [EXAMPLES])
    train, held = verl_backend.split_rows(job, rows)
    assert train == rows and len(held) == min(64, len(rows))
    path = tmp_path / "train.parquet"
    verl_backend.write_parquet(path, verl_backend.verl_rows(job, train, "train"))
    table = pq.read_table(path).to_pylist()
    assert len(table) == len(rows)
    assert table[0]["reward_model"]["ground_truth"] == rows[0]["answer"]
    assert json.loads(table[0]["prompt"][0])["role"] == "user"
    split = verl_backend.split_rows(
        job.model_copy(update={"data": job.data.model_copy(update={"eval_ratio": 0.1})}), rows
    )
    assert len(split[1]) == round(len(rows) * 0.1) and len(split[0]) + len(split[1]) == len(rows)


def test_metrics_records() -> None:
    lines = [
        json.dumps({"step": 1, "data": {"critic/score/mean": 0.25, "actor/pg_loss": 0.1, "actor/lr": 1e-6}}),
        "",
        json.dumps({"step": 2, "data": {"train/loss": 1.5}}),
    ]
    records = list(verl_backend.metrics_records(lines))
    assert records[0]["reward"] == 0.25 and records[0]["loss"] == 0.1 and records[0]["learning_rate"] == 1e-6
    assert records[1] == {"step": 2, "train/loss": 1.5, "loss": 1.5}


# ------------------------------------------------------------------------------------------------ run


def test_run_refuses_an_interpreter_without_verl(tmp_path: Path) -> None:
    """engine.python without verl (this interpreter: the project keeps verl out of it): one message, before
    anything is written or launched."""
    from factory_cli.config.dump import job_to_yaml

    for example in ("verl_grpo.yaml", "verl_sft.yaml"):
        run_dir = tmp_path / example
        overrides = (f"output.dir={run_dir}", f"engine.python={sys.executable}")
        job = job_of(example, "cuda", overrides)
        run_dir.mkdir()
        (run_dir / "job.yaml").write_text(job_to_yaml(job), encoding="utf-8")
        with pytest.raises(UsageError) as refused:
            get_backend("verl").run(get_backend("verl").plan(job, "cuda"), Recorder())
        assert refused.value.message.startswith(f"verl's interpreter {sys.executable} (engine.python) has no verl")
        assert "lacks: verl, " in refused.value.message
        assert refused.value.hint is not None and "make setup-verl" in refused.value.hint
        assert sorted(p.name for p in run_dir.iterdir()) == ["job.yaml"]


def test_run_writes_parquet_reward_module_and_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run() with verl faked: parquet data, the reward module, the re-planned length, metrics.jsonl."""
    from factory_cli import launching
    from factory_cli.backends.common import engine_env
    from factory_cli.config.dump import job_to_yaml

    model = tmp_path / "tiny"
    model.mkdir()
    config = {
        "model_type": "qwen2",
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1000,
        "max_position_embeddings": 4096,
    }
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    run_dir = tmp_path / "run"
    job = job_of(
        "verl_grpo.yaml",
        "cuda",
        (f"model.name_or_path={model}", f"output.dir={run_dir}", "env.FACTORY_JOB_PROBE=from the job"),
    )
    run_dir.mkdir()
    (run_dir / "job.yaml").write_text(job_to_yaml(job), encoding="utf-8")
    plan = get_backend("verl").plan(job, "cuda")
    plan.base_dirs = [str(EXAMPLES)]
    launched: list[list[str]] = []
    envs: list[dict[str, str]] = []

    def fake_run_child(argv: list[str], env: dict[str, str], cwd: str | None = None) -> int:
        launched.append(list(argv))
        envs.append(dict(env))
        if "verl.model_merger" in argv:  # the merger writes the model where --target_dir says
            target = Path(argv[argv.index("--target_dir") + 1])
            target.mkdir()
            (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
            return 0
        line = {"step": 1, "data": {"critic/score/mean": 0.5, "actor/pg_loss": 0.01}}
        Path(env["VERL_FILE_LOGGER_PATH"]).write_text(json.dumps(line) + "\n", encoding="utf-8")
        total = next(a.split("=")[1] for a in argv if a.startswith("trainer.total_training_steps="))
        (run_dir / "checkpoints" / f"global_step_{total}" / "actor").mkdir(parents=True)
        (run_dir / "checkpoints" / "latest_checkpointed_iteration.txt").write_text(total, encoding="utf-8")
        return 0

    monkeypatch.setattr(engine_env, "probe_engine", all_installed)
    monkeypatch.setattr(launching, "run_child", fake_run_child)
    result = get_backend("verl").run(plan, Recorder())

    assert result.ok and len(launched) == 2
    merge = launched[1]
    total = json.loads((run_dir / "plan.json").read_text())["engine_config"]["total_training_steps"]
    assert merge[merge.index("--local_dir") + 1] == str(run_dir / "checkpoints" / f"global_step_{total}" / "actor")
    assert json.loads((run_dir / "final" / "factory_complete.json").read_text(encoding="utf-8"))["step"] == total
    assert envs[0]["FACTORY_JOB_PROBE"] == "from the job"  # the job's env: on top of what verl's launch needs
    assert (run_dir / "data" / "train.parquet").is_file() and (run_dir / "data" / "val.parquet").is_file()
    assert "def compute_score" in (run_dir / "verl_reward.py").read_text(encoding="utf-8")
    written = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    rows = written["engine_config"]["dataset_sizes"][0]
    assert f"trainer.total_training_steps={rows // 32}" in launched[0]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert metrics[0]["reward"] == 0.5 and metrics[0]["loss"] == 0.01


def test_check_probes_verls_interpreter() -> None:
    """`factory check` names the interpreter verl would run from, and warns (the job stays valid: it may train on
    another machine) with the missing packages and the fix when that interpreter cannot run the job."""
    from tests.unit.test_cli import run_cli

    example = str(EXAMPLES / "verl_sft_cpu.yaml")
    code, out, _ = run_cli(["check", example, f"engine.python={sys.executable}"])
    flat = " ".join(out.split())
    assert code == 0 and "is valid" in flat
    assert f"this machine cannot run it: verl's interpreter {sys.executable} (engine.python) has no verl" in flat
    assert "make setup-verl" in flat
    code, out, _ = run_cli(["check", example])
    assert code == 0 and "engine: verl from" in " ".join(out.split()), out


def test_run_reports_a_run_verl_stopped_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """verl exits 0 but its last checkpoint is before the planned end: the run is stopped, no final/ is written."""
    from factory_cli import launching
    from factory_cli.backends.common import engine_env
    from factory_cli.config.dump import job_to_yaml

    run_dir = tmp_path / "run"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    job = job_of("verl_sft_cpu.yaml", "cpu", (f"output.dir={run_dir}", f"model.name_or_path={model}"))
    run_dir.mkdir()
    (run_dir / "job.yaml").write_text(job_to_yaml(job), encoding="utf-8")
    launched: list[list[str]] = []

    def stops_after_one_step(argv: list[str], env: dict[str, str], cwd: str | None = None) -> int:
        launched.append(argv)
        (run_dir / "checkpoints" / "global_step_1").mkdir(parents=True)
        (run_dir / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("1", encoding="utf-8")
        return 0

    monkeypatch.setattr(engine_env, "probe_engine", all_installed)
    monkeypatch.setattr(launching, "run_child", stops_after_one_step)
    recorder = Recorder()
    result = get_backend("verl").run(get_backend("verl").plan(job, "cpu"), recorder)
    assert not result.ok and result.summary["stopped_at"] == 1 and len(launched) == 1
    assert any("verl stopped at step 1 of 6" in line for line in recorder.lines)
    assert not (run_dir / "final").exists()


def test_only_cpu_runs_load_the_cpu_platform() -> None:
    """backends/verl/cpu_platform.py is for CPU tests and demos: GPU and NPU plans never name it."""
    from factory_cli.backends.verl.plan import CPU_PLATFORM_MODULE

    cpu = get_backend("verl").plan(job_of("verl_sft_cpu.yaml", "cpu"), "cpu")
    assert cpu.steps[0].env["VERL_USE_EXTERNAL_MODULES"] == CPU_PLATFORM_MODULE
    assert "trainer.device=cpu" in cpu.engine_config["overrides"]
    for device in ("cuda", "npu"):
        plan = get_backend("verl").plan(job_of("verl_sft.yaml", device), device)
        assert not any("cpu_platform" in value for value in plan.steps[0].env.values())
        assert "VERL_PLATFORM" not in plan.steps[0].env and "trainer.device=cpu" not in plan.engine_config["overrides"]


def test_grpo_on_the_cpu_is_refused_with_the_way_out() -> None:
    with pytest.raises(UsageError) as refused:
        get_backend("verl").plan(job_of("verl_grpo.yaml", "cpu"), "cpu")
    assert "vLLM / SGLang" in refused.value.message and "backend: deepspeed" in str(refused.value.hint)


def test_model_tokenizer_reaches_verl_resolved_against_the_job_folder(tmp_path: Path) -> None:
    """model.tokenizer was ignored by verl; a relative folder is found beside the job file, whatever the working
    directory, and a Hub id passes as given."""
    from factory_cli.backends.verl.plan import plan_verl

    (tmp_path / "tok").mkdir()
    for example, key in (
        ("verl_sft.yaml", "model.tokenizer_path"),
        ("verl_grpo.yaml", "actor_rollout_ref.model.tokenizer_path"),
    ):
        job = job_of(example, "cuda", ("model.tokenizer=tok",))
        plan = plan_verl(job, "cuda", "m", base_dirs=[str(tmp_path)])
        assert overrides_of(plan)[key] == str(tmp_path / "tok")
        hub = plan_verl(job_of(example, "cuda", ("model.tokenizer=org/tokenizer",)), "cuda", "m")
        assert overrides_of(hub)[key] == "org/tokenizer"
        assert not any("tokenizer_path" in o for o in plan_of(example).engine_config["overrides"])
