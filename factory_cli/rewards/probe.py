"""Call a loaded reward once on a few dataset rows, with a time limit: what `factory check` does before a GRPO run.

The completion scored is the row's own `answer` (a correct completion for answer-checking rewards, plain text for
the others): the call proves the reward runs on this data and returns one finite number per completion.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from factory_cli.rewards.builtin import BUILTIN_REWARDS
from factory_cli.rewards.loader import LoadedReward, RewardCallError

PROBE_SECONDS = 10.0


def probe_reward(
    reward: LoadedReward, rows: Sequence[dict[str, Any]], seconds: float = PROBE_SECONDS, trl_calls: bool = False
) -> None:
    """Score `rows` (canonical grpo rows: `prompt` plus the other columns) once; raise RewardCallError with the
    reason when the reward raises, returns something unusable, or takes longer than `seconds`.

    `trl_calls`: the reward will be called by TRL's GRPOTrainer (LoadedReward.trl_function), which gives a
    TRL-signature function each completion of a conversational prompt as a list of one assistant message; the probe
    gives it the same."""
    if not rows:
        return
    builtin = next((b for b in BUILTIN_REWARDS.values() if b.function is reward.function), None)
    if builtin is not None and builtin.needs_answer and all(row.get("answer") is None for row in rows):
        raise RewardCallError(
            f"reward `{reward.label}` compares with each row's `answer`, and the first {len(rows)} rows have none",
            "add an `answer` column, or map yours with columns: {answer: <your column>}",
        )
    prompts = [row.get("prompt") for row in rows]
    completions: list[Any] = ["" if row.get("answer") is None else str(row["answer"]) for row in rows]
    if trl_calls and reward.kind == "trl":
        completions = [
            [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text
            for text, prompt in zip(completions, prompts, strict=True)
        ]
    columns: dict[str, Sequence[Any]] = {
        key: [row.get(key) for row in rows] for key in {k for row in rows for k in row} if key != "prompt"
    }
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            reward.score(completions, prompts, columns)
            outcome.append(None)
        except BaseException as exc:  # carried to the caller's thread; SystemExit included
            outcome.append(exc)

    # A daemon thread: a reward that never returns cannot keep `factory check` from exiting.
    worker = threading.Thread(target=call, name=f"reward-probe-{reward.label}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise RewardCallError(
            f"reward `{reward.label}` did not return within {seconds:g} s on {len(rows)} rows",
            "a reward is called for every completion of every step: make it fast (no network, no model loading)",
        )
    error = outcome[0] if outcome else None
    if isinstance(error, RewardCallError):
        raise error
    if error is not None:
        raise RewardCallError(
            f"reward `{reward.label}` stopped with {type(error).__name__}: {error}",
            "a reward must return a number, never exit",
        )
