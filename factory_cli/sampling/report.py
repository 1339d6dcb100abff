"""The summary of a sampling run on the terminal."""

from __future__ import annotations

from factory_cli.sampling.run import SampleSummary


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({part / whole:.0%})" if whole else "0/0"


def print_summary(summary: SampleSummary) -> None:
    """A table of what was generated and kept; the prompts left without an accepted answer are named."""
    from factory_cli.ui import console, print_table

    speed = summary.samples_per_second
    rows = [
        ("model", f"{summary.model} ({summary.engine})"),
        (
            "prompts",
            str(summary.prompts)
            + (f"  ({summary.invalid_rows} unusable rows left out)" if summary.invalid_rows else ""),
        ),
        ("answers generated", str(summary.samples)),
        ("answers accepted", _share(summary.accepted_samples, summary.samples)),
        ("prompts with an accepted answer", _share(summary.groups_accepted, summary.prompts)),
        ("prompts without one", str(summary.groups_without)),
        ("mean score", f"{summary.mean_score:.3f}"),
        *((f"  {label}", f"{value:.3f}") for label, value in summary.reward_means.items()),
        ("rows written", f"{summary.rows} ({'DPO pairs' if summary.rows_kind == 'dpo' else 'SFT messages'})"),
        (
            "samples/s",
            f"{speed:.2f} over {summary.generation_seconds:.1f}s of generation" if speed else "- (nothing generated)",
        ),
        ("wall time", f"{summary.seconds:.1f}s"),
    ]
    after_rows = [label for label, _ in rows].index("rows written") + 1
    if summary.pairs_output is not None:
        rows.insert(after_rows, ("pairs written", f"{summary.pair_rows} to {summary.pairs_output} (DPO pairs)"))
    if summary.rows_kind == "dpo" or summary.pairs_output is not None:
        rows.insert(after_rows, ("prompts without a pair", str(summary.groups_without_pair)))
    if summary.resumed_batches:
        rows.append(("continued", f"after {summary.resumed_batches} batches a stopped run had written"))
    print_table(f"sampled {summary.output}", ["", ""], rows)
    if summary.groups_without:
        shown = ", ".join(summary.without_examples)
        more = " ..." if summary.groups_without > len(summary.without_examples) else ""
        console.print(f"no accepted answer for {summary.groups_without} prompt(s): {shown}{more}")
    console.print(f"summary: {summary.summary_file}")
