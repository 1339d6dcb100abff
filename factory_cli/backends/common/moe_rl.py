"""RL on a mixture-of-experts model: which GRPO losses stay stable, as one check every RL backend can call. No torch.

A token-level importance ratio pi_theta(y_t) / pi_old(y_t) compares two forward passes; on an MoE model the router may
send the same token to other experts in each of them (routing drift between the rollout policy and the trained
policy), so single-token ratios jump and clipping stops bounding the update. GSPO's ratio is one per sequence (the
geometric mean over its tokens), which averages that noise out; routing replay removes it by training on the routes
the old policy took.
"""

from __future__ import annotations

from collections.abc import Iterator

from factory_cli.config.checks import warning
from factory_cli.config.errors import Issue
from factory_cli.registry.models import Architecture

TOKEN_LEVEL_LOSSES = ("grpo", "dapo", "dr_grpo")
SEQUENCE_LEVEL_LOSS = "gspo"


def token_level_loss_on_moe(loss: str, arch: Architecture | None, alternatives: list[str]) -> Iterator[Issue]:
    """A warning at grpo.loss when a token-level loss trains an MoE model; `alternatives` are the other remedies the
    backend offers, each a short imperative ("set ..."), after the loss change that every backend has."""
    if loss not in TOKEN_LEVEL_LOSSES or arch is None or arch.num_experts is None:
        return
    ways = [f"use grpo.loss: {SEQUENCE_LEVEL_LOSS} (one importance ratio per sequence)", *alternatives]
    yield warning(
        "grpo.loss",
        f"grpo.loss {loss} weighs each token by its own importance ratio; on this mixture-of-experts model "
        f"({arch.num_experts} experts) the router can pick other experts for a token in the rollout policy than in "
        "the trained policy (routing drift), which makes token-level ratios unstable",
        "; or ".join(ways),
    )
