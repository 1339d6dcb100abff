"""Rewards at their edges: the built-ins' numbers on both sides of each boundary, what each accepted user signature
receives, and the exact messages of a reward that fails, returns the wrong thing or never returns."""

from __future__ import annotations

import math
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from factory_cli.rewards.builtin import (
    BUILTIN_REWARDS,
    answers_match,
    extract_final_answer,
    format_reward,
    length_reward,
    math_answer,
    regex_reward,
)
from factory_cli.rewards.loader import (
    LoadedReward,
    RewardCallError,
    RewardLoadError,
    classify_signature,
    find_reward_file,
    load_reward,
    split_reference,
)
from factory_cli.rewards.probe import probe_reward

# ------------------------------------------------------------------------------------------------ built-ins


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("<answer> 4 </answer> then <answer>5</answer>", "5"),
        ("so \\boxed{1} and finally \\boxed{ \\frac{1}{2} }", "\\frac{1}{2}"),
        ("<answer>7</answer> \\boxed{8}", "7"),
        ("work\n#### 42 \nmore text", "42"),
        ("#### \n", None),
        ("it is 1,234.5 or -3/4", "-3/4"),
        ("first 12 then 1,000", "1000"),
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_final_answer(text: str, answer: str | None) -> None:
    assert extract_final_answer(text) == answer


def test_extract_final_answer_prefers_tag_then_box_then_hashes() -> None:
    assert extract_final_answer("\\boxed{3} #### 4 and 5") == "3"
    assert extract_final_answer("#### 4\n5") == "4"
    assert extract_final_answer("#### x 9") == "x 9"


def test_answers_match() -> None:
    assert answers_match("1,000", "1000")
    assert answers_match("0.5", "1/2")
    assert answers_match("\\frac{1}{2}", "0.5")
    assert not answers_match("3", "4")
    assert not answers_match("cat", "dog")
    assert not answers_match("", "4")


def test_math_answer() -> None:
    assert math_answer("the answer is <answer>12</answer>", answer="12") == 1.0
    assert math_answer("the answer is <answer>12</answer>", answer="#### 12") == 1.0
    assert math_answer("the answer is <answer>12</answer>", answer=" 12 ") == 1.0
    assert math_answer("the answer is <answer>13</answer>", answer="12") == 0.0
    assert math_answer("no number", answer="12") == 0.0
    assert math_answer("<answer>12</answer>", answer=None) == 0.0
    assert math_answer("<answer>12</answer>", answer=12) == 1.0


def test_format_reward_matches_the_whole_completion() -> None:
    good = "<think>a\nb</think>\n<answer>4</answer>\n"
    assert format_reward(good) == 1.0
    assert format_reward("  " + good) == 1.0
    assert format_reward("so: " + good) == 0.0  # match anchors at the start, search would not
    assert format_reward(good + " trailing") == 0.0
    assert format_reward("<answer>4</answer>") == 0.0
    assert format_reward("x42", pattern=r"x\d+") == 1.0
    assert format_reward("ax42", pattern=r"x\d+") == 0.0


def test_regex_reward() -> None:
    assert regex_reward("abc\nx42", pattern=r"x\d+") == 1.0
    assert regex_reward("a\nb", pattern=r"a.b") == 1.0  # DOTALL
    assert regex_reward("abc", pattern=r"x\d+") == 0.0
    assert regex_reward("abc", pattern="") == 0.0
    assert regex_reward("abc") == 0.0


@pytest.mark.parametrize(
    ("size", "target", "reward"),
    [(0, 10, 1.0), (10, 10, 1.0), (11, 10, 0.9), (15, 10, 0.5), (19, 10, 0.1), (20, 10, 0.0), (30, 10, 0.0)],
)
def test_length_reward_falls_to_zero_at_twice_the_target(size: int, target: int, reward: float) -> None:
    assert length_reward("x" * size, target_chars=target) == pytest.approx(reward)


def test_length_reward_default_target_and_zero_target() -> None:
    assert length_reward("x" * 400) == 1.0
    assert length_reward("x" * 600) == pytest.approx(0.5)
    assert length_reward("", target_chars=0) == 1.0
    assert length_reward("x", target_chars=0) == 0.0


def test_builtin_table() -> None:
    assert list(BUILTIN_REWARDS) == ["math_answer", "format", "regex", "length"]
    assert [b.needs_answer for b in BUILTIN_REWARDS.values()] == [True, False, False, False]
    assert BUILTIN_REWARDS["length"].function is length_reward
    assert BUILTIN_REWARDS["format"].function is format_reward
    assert BUILTIN_REWARDS["regex"].function is regex_reward
    assert BUILTIN_REWARDS["math_answer"].function is math_answer


# ------------------------------------------------------------------------------------------------ loading


def reward_file(tmp_path: Path, body: str, name: str = "rewards.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_split_reference() -> None:
    assert split_reference("dir/file.py:fn") == ("dir/file.py", "fn")
    assert split_reference("c:/dir/file.py:fn") == ("c:/dir/file.py", "fn")
    assert split_reference("file.py") == ("file.py", "compute_score")


def test_find_reward_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = reward_file(tmp_path, "def f(completion): return 1.0\n")
    monkeypatch.chdir(tmp_path.parent)
    assert find_reward_file(str(path), ()) == path
    assert find_reward_file(str(tmp_path / "none.py"), ()) is None
    assert find_reward_file("rewards.py", (tmp_path,)) == path.resolve()
    assert find_reward_file(f"{tmp_path.name}/rewards.py", ()) == path.resolve()
    assert find_reward_file("none.py", (tmp_path,)) is None


def test_classify_signature() -> None:
    def verl(data_source: Any, solution_str: Any, ground_truth: Any, extra_info: Any = None) -> float:
        return 0.0

    def trl(completions: Any, **kwargs: Any) -> list[float]:
        return []

    def trl_prompts(prompts: Any, completions: Any, **kwargs: Any) -> list[float]:
        return []

    def single(completion: str, answer: Any = None, **kwargs: Any) -> float:
        return 0.0

    def single_other_name(text: str, **kwargs: Any) -> float:
        return 0.0

    def two_required(a: Any, b: Any) -> float:
        return 0.0

    def nothing() -> float:
        return 0.0

    assert classify_signature(verl) == "verl"
    assert classify_signature(trl) == "trl"
    assert classify_signature(trl_prompts) == "trl"
    assert classify_signature(single) == "single"
    assert classify_signature(single_other_name) == "single"
    assert classify_signature(two_required) is None
    assert classify_signature(nothing) is None
    assert classify_signature(len) == "single"


def test_load_builtin_and_unknown() -> None:
    loaded = load_reward("length", None, 0.5, {"target_chars": 3})
    assert (loaded.label, loaded.kind, loaded.function, loaded.weight, loaded.kwargs) == (
        "length",
        "single",
        length_reward,
        0.5,
        {"target_chars": 3},
    )
    assert loaded.score(["abc", "abcd", "abcdef"], [None] * 3, {}) == pytest.approx([1.0, 2 / 3, 0.0])
    with pytest.raises(RewardLoadError) as info:
        load_reward("lenght", None)
    assert info.value.message == "no built-in reward named `lenght`"
    assert info.value.hint == (
        "built-ins: math_answer, format, regex, length; or give your own as function: path/to/file.py:function"
    )


def test_load_user_rewards_of_each_kind(tmp_path: Path) -> None:
    path = reward_file(
        tmp_path,
        """
        def compute_score(data_source, solution_str, ground_truth, extra_info=None):
            return float(solution_str == ground_truth)

        def batch(prompts, completions, **kwargs):
            return [float(p == "p0") + len(c) for p, c in zip(prompts, completions)]

        def single(completion, answer=None, bonus=0.0, **kwargs):
            return len(completion) + bonus + (answer == "a")
        """,
    )
    verl = load_reward(None, str(path), 2.0)
    assert (verl.label, verl.kind, verl.weight) == ("compute_score", "verl", 2.0)
    assert verl.score(["a", "b"], ["p0", "p1"], {"answer": ["a", "a"]}) == [1.0, 0.0]
    trl = load_reward(None, f"{path}:batch")
    assert (trl.label, trl.kind) == ("batch", "trl")
    # prompts and completions arrive by name, not swapped
    assert trl.score(["xy", "xyz"], ["p0", "p1"], {"answer": ["a", "b"]}) == [3.0, 3.0]
    single = load_reward(None, f"{path}:single", kwargs={"bonus": 10})
    assert single.kind == "single"
    assert single.score(["xy", "xyz"], ["p0", "p1"], {"answer": ["a", "b"]}) == [13.0, 13.0]


def test_load_user_reward_errors(tmp_path: Path) -> None:
    with pytest.raises(RewardLoadError) as info:
        load_reward(None, str(tmp_path / "none.py:f"))
    assert info.value.message == f"reward file not found: {tmp_path / 'none.py'}"
    assert info.value.hint == "paths are relative to where you run factory"

    path = reward_file(tmp_path, "def two(a, b):\n    return 0.0\n\ndef other(completion):\n    return 0.0\n")
    with pytest.raises(RewardLoadError) as info:
        load_reward(None, f"{path}:two")
    assert info.value.message == "`two` in rewards.py has an unsupported signature (a, b)"
    assert info.value.hint is not None and info.value.hint.startswith("accepted: compute_score(data_source")
    with pytest.raises(RewardLoadError) as info:
        load_reward(None, f"{path}:missing")
    assert info.value.message == f"{path} has no function `missing`"
    assert info.value.hint == "functions found there: other, two"

    broken = reward_file(tmp_path, "raise KeyError('boom')\n", "broken.py")
    with pytest.raises(RewardLoadError) as info:
        load_reward(None, f"{broken}:f")
    assert info.value.message == f"importing {broken} failed: KeyError: 'boom'"
    exits = reward_file(tmp_path, "import sys\nsys.exit(3)\n", "exits.py")
    with pytest.raises(RewardLoadError) as info:
        load_reward(None, f"{exits}:f")
    assert info.value.message == f"importing {exits} called sys.exit(3)"


# ------------------------------------------------------------------------------------------------ scoring errors


def loaded(kind: str, function: Any, label: str = "r") -> LoadedReward:
    return LoadedReward(label, kind, function)  # type: ignore[arg-type]


def test_score_rejects_what_is_not_a_finite_number() -> None:
    cols = {"answer": ["7", "8"]}
    with pytest.raises(RewardCallError) as info:
        loaded("single", lambda completion, **_: "1").score(["a", "b"], ["p", "q"], cols)
    assert info.value.message == "reward `r` returned str '1' on row 0 of the batch (answer='7')"
    assert info.value.hint == "a reward returns a float (an int or a 0-d numpy/torch number is fine)"
    with pytest.raises(RewardCallError) as info:
        loaded("single", lambda completion, **_: True).score(["a"], ["p"], {})
    assert info.value.message == "reward `r` returned bool True on row 0 of the batch (no columns)"
    with pytest.raises(RewardCallError) as info:
        loaded("single", lambda completion, **_: float("inf") if completion == "b" else 1).score(
            ["a", "b"], [1, 2], cols
        )
    assert info.value.message == "reward `r` returned inf on row 1 of the batch (answer='8')"
    assert info.value.hint == "a reward must be a finite number; guard divisions and logs in your function"
    with pytest.raises(RewardCallError) as info:
        loaded("single", lambda completion, **_: None).score(["a"], ["p"], {})
    assert info.value.message == "reward `r` returned NoneType None on row 0 of the batch (no columns)"


def test_score_accepts_numbers() -> None:
    import numpy as np

    scores = loaded("single", lambda completion, **_: np.float32(0.25)).score(["a", "b"], ["p", "q"], {})
    assert scores == [0.25, 0.25]
    assert loaded("single", lambda completion, **_: 3).score(["a"], ["p"], {}) == [3.0]


def test_batch_reward_length_and_none() -> None:
    cols = {"answer": ["1", "2", "3"]}
    with pytest.raises(RewardCallError) as info:
        loaded("trl", lambda completions, **_: [1.0]).score(["a", "b", "c"], [1, 2, 3], cols)
    assert info.value.message == "reward `r` returned a list of 1 for a batch of 3 completions"
    assert info.value.hint == "a batch reward returns one float per completion (None for 'not applicable' is allowed)"
    with pytest.raises(RewardCallError) as info:
        loaded("trl", lambda completions, **_: 1.0).score(["a"], [1], {})
    assert info.value.message == "reward `r` returned float 1.0 for a batch of 1 completions"
    scores = loaded("trl", lambda completions, **_: [None, 2, 0.5]).score(["a", "b", "c"], [1, 2, 3], cols)
    assert math.isnan(scores[0]) and scores[1:] == [2.0, 0.5]
    with pytest.raises(RewardCallError) as info:
        loaded("trl", lambda completions, **_: [1.0, 1.0, float("nan")]).score(["a", "b", "c"], [1, 2, 3], cols)
    assert info.value.message == "reward `r` returned nan on row 2 of the batch (answer='3')"


def test_a_raising_reward_names_the_row_and_the_batch() -> None:
    def boom(completion: str, **_: Any) -> float:
        raise ValueError("bad " + completion)

    with pytest.raises(RewardCallError) as info:
        loaded("single", boom).score(["x"], ["p"], {"answer": ["1"], "id": [9]})
    assert info.value.message == "reward `r` raised ValueError: bad x on row 0 of the batch (answer='1', id=9)"
    assert info.value.hint is not None and info.value.hint.startswith(f"at {__file__}:")
    assert info.value.hint.endswith('in boom: raise ValueError("bad " + completion)')

    def batch_boom(completions: Any, **_: Any) -> list[float]:
        raise KeyError("k")

    with pytest.raises(RewardCallError) as info:
        loaded("trl", batch_boom).score(["x", "y"], ["p", "q"], {"answer": ["1", "2"]})
    assert info.value.message == "reward `r` raised KeyError: 'k' on a batch of 2 rows"


def test_row_text_is_cut_at_160_characters() -> None:
    with pytest.raises(RewardCallError) as info:
        loaded("single", lambda completion, **_: "no").score(["a"], ["p"], {"text": ["z" * 300]})
    message = info.value.message
    assert message.endswith("...)")
    assert len(message.split("(", 1)[1]) == 160 + len("...)")


def test_verl_dict_scores() -> None:
    def as_dict(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None) -> dict[str, Any]:
        return {"score": 0.5, "acc": 1} if solution_str else {"acc": 0}

    reward = loaded("verl", as_dict)
    assert reward.score(["a"], ["p"], {"answer": ["1"]}) == [0.5]
    with pytest.raises(RewardCallError) as info:
        reward.score([""], ["p"], {"answer": ["1"]})
    assert (
        info.value.message
        == "reward `r` returned a dict without `score` (keys: ['acc']) on row 0 of the batch (answer='1')"
    )
    assert info.value.hint == 'return a float, or a dict {"score": float, ...} as verl does'


def test_verl_reward_gets_each_field() -> None:
    seen: list[tuple[Any, ...]] = []

    def record(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None) -> float:
        seen.append((data_source, solution_str, ground_truth, extra_info))
        return 1.0

    loaded("verl", record).score(["c"], ["p"], {"data_source": ["gsm8k"], "answer": ["4"], "extra_info": [{"i": 1}]})
    assert seen == [("gsm8k", "c", "4", {"i": 1})]


# ------------------------------------------------------------------------------------------------ probe


def test_probe_needs_answers_for_math() -> None:
    reward = load_reward("math_answer", None)
    with pytest.raises(RewardCallError) as info:
        probe_reward(reward, [{"prompt": "q"}, {"prompt": "r", "answer": None}])
    assert (
        info.value.message == "reward `math_answer` compares with each row's `answer`, and the first 2 rows have none"
    )
    assert info.value.hint == "add an `answer` column, or map yours with columns: {answer: <your column>}"
    probe_reward(reward, [{"prompt": "q"}, {"prompt": "r", "answer": "4"}])
    probe_reward(load_reward("length", None), [{"prompt": "q"}])
    probe_reward(reward, [])


def test_probe_scores_the_answer_as_completion() -> None:
    seen: list[tuple[Any, Any, Any]] = []

    def record(prompts: Any, completions: Any, **columns: Any) -> list[float]:
        seen.append((prompts, completions, columns))
        return [1.0] * len(completions)

    probe_reward(loaded("trl", record), [{"prompt": "q1", "answer": 4, "k": "v"}, {"prompt": "q2"}])
    assert seen == [(["q1", "q2"], ["4", ""], {"answer": [4, None], "k": ["v", None]})]


def test_probe_time_limit_and_exit() -> None:
    def slow(completion: str, **_: Any) -> float:
        time.sleep(2)
        return 0.0

    with pytest.raises(RewardCallError) as info:
        probe_reward(loaded("single", slow, "slow"), [{"prompt": "q"}], seconds=0.05)
    assert info.value.message == "reward `slow` did not return within 0.05 s on 1 rows"
    assert info.value.hint == (
        "a reward is called for every completion of every step: make it fast (no network, no model loading)"
    )

    def exits(completion: str, **_: Any) -> float:
        raise SystemExit(2)

    with pytest.raises(RewardCallError) as info:
        probe_reward(loaded("single", exits, "exits"), [{"prompt": "q"}])
    assert info.value.message == "reward `exits` stopped with SystemExit: 2"
    assert info.value.hint == "a reward must return a number, never exit"

    with pytest.raises(RewardCallError) as info:
        probe_reward(loaded("single", lambda completion, **_: "x", "text"), [{"prompt": "q", "answer": "a"}])
    assert info.value.message == "reward `text` returned str 'x' on row 0 of the batch (answer='a')"


def test_a_returned_value_is_shown_cut_at_60_characters() -> None:
    with pytest.raises(RewardCallError) as info:
        loaded("single", lambda completion, **_: "x" * 58).score(["a"], ["p"], {})
    assert info.value.message == f"reward `r` returned str '{'x' * 58}' on row 0 of the batch (no columns)"
    with pytest.raises(RewardCallError) as info:
        loaded("single", lambda completion, **_: "x" * 59).score(["a"], ["p"], {})
    assert info.value.message == f"reward `r` returned str '{'x' * 59}... on row 0 of the batch (no columns)"


def test_the_hint_names_the_users_own_frame(tmp_path: Path) -> None:
    path = reward_file(
        tmp_path,
        """
        import json

        import yaml

        from factory_cli.rewards.builtin import length_reward


        def stdlib(completion):
            return json.loads(completion)


        def package(completion):
            return yaml.safe_load(completion)


        def ours(completion):
            return length_reward(None)
        """,
    )
    lines = {"stdlib": 10, "package": 14, "ours": 18}
    code = {"stdlib": "return json.loads(completion)", "package": "return yaml.safe_load(completion)"}
    code["ours"] = "return length_reward(None)"
    for name, line in lines.items():
        with pytest.raises(RewardCallError) as info:
            load_reward(None, f"{path}:{name}").score(["{"], ["p"], {})
        assert info.value.hint == f"at {path}:{line} in {name}: {code[name]}", name


def test_the_hint_of_code_without_source(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {}
    exec(compile("def generated(completion):\n    raise ValueError('no')\n", "<generated>", "exec"), namespace)
    with pytest.raises(RewardCallError) as info:
        loaded("single", namespace["generated"], "g").score(["a"], ["p"], {})
    assert info.value.message == "reward `g` raised ValueError: no on row 0 of the batch (no columns)"
    assert info.value.hint == "at <generated>:2 in generated: "


def test_a_reward_that_never_returns_cannot_hold_the_process() -> None:
    import threading

    release = threading.Event()

    def hangs(completion: str, **_: Any) -> float:
        release.wait(5)
        return 0.0

    with pytest.raises(RewardCallError):
        probe_reward(loaded("single", hangs, "hangs"), [{"prompt": "q"}], seconds=0.05)
    (worker,) = [t for t in threading.enumerate() if t.name == "reward-probe-hangs"]
    assert worker.daemon
    release.set()
    worker.join(5)


def test_probe_of_a_user_reward_needs_no_answers() -> None:
    seen: list[Any] = []

    def record(completion: str, **row: Any) -> float:
        seen.append((completion, row))
        return 0.5

    probe_reward(loaded("single", record), [{"prompt": "q", "id": 3}])
    assert seen == [("", {"id": 3})]


def test_the_last_hashes_give_the_answer() -> None:
    assert extract_final_answer("#### 1\nthen\n#### 2") == "2"
    assert extract_final_answer("a #### b #### 3 \nnext") == "3"


def test_a_completion_first_function_is_single_even_with_more_required_arguments() -> None:
    def two(completion: str, answer: Any) -> float:
        return 0.0

    assert classify_signature(two) == "single"


def test_import_errors_say_how_to_fix_them(tmp_path: Path) -> None:
    import sys

    before = {k for k in sys.modules if k.startswith("factory_user_reward_")}
    not_python = tmp_path / "rewards.txt"
    not_python.write_text("def f(completion): return 1.0\n")
    with pytest.raises(RewardLoadError) as info:
        load_reward(None, f"{not_python}:f")
    assert (info.value.message, info.value.hint) == (f"cannot import {not_python}", "give a .py file")

    broken = reward_file(tmp_path, "raise KeyError('boom')\n", "broken.py")
    with pytest.raises(RewardLoadError) as info:
        load_reward(None, f"{broken}:f")
    assert info.value.hint == "run `python <file>` to see the full error"
    exits = reward_file(tmp_path, "import sys\nsys.exit(3)\n", "exits.py")
    with pytest.raises(RewardLoadError) as info:
        load_reward(None, f"{exits}:f")
    assert info.value.hint == 'a reward file is imported, not run: put script code under `if __name__ == "__main__":`'
    assert {k for k in sys.modules if k.startswith("factory_user_reward_")} == before  # nothing half-imported kept

    values = reward_file(tmp_path, "x = 3\n_hidden = 4\n\ndef _private(completion):\n    return 0.0\n", "values.py")
    with pytest.raises(RewardLoadError) as info:
        load_reward(None, f"{values}:x")
    assert (info.value.message, info.value.hint) == (f"{values} has no function `x`", "functions found there: none")


def test_a_reward_file_may_define_dataclasses(tmp_path: Path) -> None:
    path = reward_file(
        tmp_path,
        """
        from dataclasses import dataclass


        @dataclass
        class Score:
            value: float


        def reward(completion):
            return Score(len(completion)).value
        """,
    )
    assert load_reward(None, f"{path}:reward").score(["abc"], ["p"], {}) == [3.0]


def test_load_reward_defaults_and_base_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_reward("length", None).weight == 1.0
    reward_file(tmp_path, "def f(completion):\n    return 2.0\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_reward(None, "rewards.py:f", base_dirs=(tmp_path,)).score(["a"], ["p"], {}) == [2.0]


def test_unsupported_signature_lists_the_accepted_ones(tmp_path: Path) -> None:
    path = reward_file(tmp_path, "def two(a, b):\n    return 0.0\n")
    with pytest.raises(RewardLoadError) as info:
        load_reward(None, f"{path}:two")
    assert info.value.hint == (
        "accepted: compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float  (verl) | "
        "fn(completions, **kwargs) -> list[float]  or  fn(prompts, completions, **kwargs)  (TRL, batch) | "
        "fn(completion, **kwargs) -> float  (one completion; row fields such as answer arrive as keywords)"
    )


def test_a_failure_inside_a_library_gives_the_generic_hint() -> None:
    with pytest.raises(RewardCallError) as info:
        loaded("single", int, "int").score(["x"], ["p"], {})
    assert info.value.message == (
        "reward `int` raised ValueError: invalid literal for int() with base 10: 'x' on row 0 of the batch (no columns)"
    )
    assert info.value.hint == "run the reward on that row by hand to see the full error"


def test_row_text_at_160_characters_and_an_empty_batch() -> None:
    # "text='...'" is 160 characters when the value has 153
    with pytest.raises(RewardCallError) as info:
        loaded("single", lambda completion, **_: "no").score(["a"], ["p"], {"text": ["z" * 153]})
    assert info.value.message.endswith(f"(text='{'z' * 153}')")
    with pytest.raises(RewardCallError) as info:
        loaded("single", lambda completion, **_: "no").score(["a"], ["p"], {"text": ["z" * 154]})
    assert info.value.message.endswith(f"(text='{'z' * 154}...)")

    def fails(completions: Any, **_: Any) -> list[float]:
        raise ValueError("x")

    with pytest.raises(RewardCallError) as info:
        loaded("trl", fails).score(["a"], ["p"], {})
    assert info.value.message == "reward `r` raised ValueError: x on a batch of 0 rows"


def test_kwargs_reach_every_signature_and_a_verl_failure_names_its_row() -> None:
    def verl(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None, scale: float = 0) -> float:
        if solution_str == "bad":
            raise ValueError("bad")
        return scale

    def trl(completions: Any, scale: float = 0, **_: Any) -> list[float]:
        return [scale] * len(completions)

    assert LoadedReward("v", "verl", verl, kwargs={"scale": 2.0}).score(["a"], ["p"], {"answer": ["1"]}) == [2.0]
    assert LoadedReward("t", "trl", trl, kwargs={"scale": 3.0}).score(["a", "b"], ["p", "q"], {}) == [3.0, 3.0]
    with pytest.raises(RewardCallError) as info:
        LoadedReward("v", "verl", verl).score(["ok", "bad"], ["p", "q"], {"answer": ["1", "2"]})
    assert info.value.message == "reward `v` raised ValueError: bad on row 1 of the batch (answer='2')"


def test_several_numbers_for_one_completion_are_refused() -> None:
    import numpy as np

    with pytest.raises(RewardCallError) as info:
        loaded("single", lambda completion, **_: np.array([1.0, 2.0])).score(["a"], ["p"], {})
    assert info.value.message == "reward `r` returned ndarray array([1., 2.]) on row 0 of the batch (no columns)"


def test_a_batch_value_past_a_short_column_names_the_row_alone() -> None:
    with pytest.raises(RewardCallError) as info:
        loaded("trl", lambda completions, **_: [1.0, "x"]).score(["a", "b"], ["p", "q"], {"answer": ["1"]})
    assert info.value.message == "reward `r` returned str 'x' on row 1 of the batch (no columns)"


def test_reward_files_stay_apart_and_picklable(tmp_path: Path) -> None:
    import pickle

    first = reward_file(tmp_path, "def reward(completion):\n    return 1.0\n", "first.py")
    second = reward_file(tmp_path, "def reward(completion):\n    return 2.0\n", "second.py")
    one = load_reward(None, f"{first}:reward").function
    two = load_reward(None, f"{second}:reward").function
    assert pickle.loads(pickle.dumps(one)) is one and pickle.loads(pickle.dumps(two)) is two
    assert (one("a"), two("a")) == (1.0, 2.0)
