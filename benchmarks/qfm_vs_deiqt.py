"""QFM-IQM against its own DEIQT teacher, paired over splits (issue 13, "Does it help at all?").

For every split this trains DEIQT, then QFM-IQM with that DEIQT run pinned as its teacher,
both with the same recipe (``--set``; ``--qfm-set`` adds QFM-only keys such as a preset). Runs
that already exist under ``--results`` are reused by their config hash, so an interrupted
comparison continues where it stopped. It prints, per split, both test metrics under one
selection rule (validation-selected by default) and their difference QFM − DEIQT, then the
median and mean difference, the wins and a two-sided Wilcoxon signed-rank p-value
(``benchmark.report.aggregate.paired_tests``, scipy.stats.wilcoxon). With 5 splits the smallest
possible p is 0.0625: five splits can show a consistent sign, not significance.

Example (CPU, offline Lite0 backbone)::

    python benchmarks/qfm_vs_deiqt.py --dataset livec --root data/livec --splits 0-4 \\
        --set backbone=tf_efficientnet_lite0 --set pretrained=offline-lite0 --set epochs=3 \\
        --set warmup_epochs=0.5 --set train_crops=1 --set batch_size=16 --set lr=2e-3 \\
        --set schedule=cosine --qfm-set preset=full

``--presets A1,A2,A3,A4,A5,A6`` runs the ablation instead: every preset paired against the
same DEIQT runs, one summary line each (median and mean difference, wins, Wilcoxon p), so the
component that carries a gain or a loss shows as the preset whose line moves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click
import pandas as pd

from benchmark.cli.options import BenchError, user_errors
from benchmark.cli.run import make_run_config, parse_sets

__all__ = ["train_pairs", "paired_comparison", "format_comparison", "format_ablation", "main"]


def train_pairs(dataset: str, root: Path, splits: tuple[int, ...], recipe: dict,
                qfm_only: dict, run, results: Path,
                log: Callable[[str], None] = print) -> list[tuple[dict, dict]]:
    """(DEIQT record, QFM-IQM record) per split; each student that distils is pinned to its
    split's DEIQT (a preset without a teacher, A2 or A4, trains alone)."""
    from benchmark.runner import resolve_config, run_one

    cls, config = resolve_config("qfm", dataset, {**recipe, **qfm_only})
    needs_teacher = "deiqt" in cls.prerequisites(config)
    pairs = []
    for split in splits:
        teacher = run_one("deiqt", dataset, split, root, recipe, run, results, log=log)
        pins = {"deiqt": teacher["config_hash"]} if needs_teacher else {}
        student = run_one("qfm", dataset, split, root, {**recipe, **qfm_only}, run, results,
                          log=log, pins=pins)
        pairs.append((teacher, student))
    return pairs


def paired_comparison(pairs: list[tuple[dict, dict]], rule: str = "val",
                      metric: str = "srcc") -> tuple[pd.DataFrame, dict]:
    """Per-split metrics and differences (QFM − DEIQT), and the summary with a Wilcoxon p."""
    from benchmark.report.aggregate import paired_tests, runs_table

    runs = runs_table([record for pair in pairs for record in pair])
    runs = runs[runs["rule"] == rule]
    by_model = {model: group.set_index("split")[metric] for model, group in runs.groupby("model")}
    table = pd.DataFrame({"deiqt": by_model["deiqt"], "qfm": by_model["qfm"]}).dropna()
    table["diff"] = table["qfm"] - table["deiqt"]
    test = paired_tests(runs, metrics=(metric,)).iloc[0]  # one pair of cells: deiqt vs qfm
    diff = table["diff"]
    summary = {"rule": rule, "metric": metric, "n": int(len(diff)),
               "median_diff": float(diff.median()), "mean_diff": float(diff.mean()),
               "qfm_wins": int((diff > 0).sum()), "ties": int((diff == 0).sum()),
               "p_value": float(test["p_value"])}
    return table.rename_axis("split").reset_index(), summary


def format_comparison(table: pd.DataFrame, summary: dict) -> str:
    lines = [f"test {summary['metric'].upper()} ({summary['rule']}-selected), QFM-IQM − DEIQT",
             table.to_string(index=False, formatters={
                 "deiqt": "{:.4f}".format, "qfm": "{:.4f}".format, "diff": "{:+.4f}".format}),
             f"median diff {summary['median_diff']:+.4f}  mean diff {summary['mean_diff']:+.4f}  "
             f"QFM-IQM better on {summary['qfm_wins']} of {summary['n']} splits "
             f"({summary['ties']} ties)  Wilcoxon p = {summary['p_value']:.4g}"]
    return "\n".join(lines)


def format_ablation(rows: list[tuple[str, pd.DataFrame, dict]]) -> str:
    """One line per preset: its per-split differences against DEIQT and their summary."""
    first = rows[0][2]
    lines = [f"test {first['metric'].upper()} ({first['rule']}-selected), preset − DEIQT, "
             f"per split and summarised"]
    for preset, table, summary in rows:
        per_split = " ".join(f"{value:+.3f}" for value in table["diff"])
        lines.append(f"{preset:>4}  {per_split}  median {summary['median_diff']:+.4f}  "
                     f"mean {summary['mean_diff']:+.4f}  wins {summary['qfm_wins']}/"
                     f"{summary['n']}  p = {summary['p_value']:.4g}")
    return "\n".join(lines)


@click.command()
@click.option("--dataset", required=True, help="Registered dataset name.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Prepared dataset folder.")
@click.option("--splits", default="0-4", show_default=True, help="Split indices, e.g. 0-4.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Recipe override for both models (repeatable).")
@click.option("--qfm-set", "qfm_sets", multiple=True, metavar="KEY=VALUE",
              help="Override for QFM-IQM only, e.g. preset=A3 (repeatable).")
@click.option("--presets", default="", metavar="ID,ID,...",
              help="Ablation: pair each QFM-IQM preset (A1…A6, C1…, V1…) with DEIQT.")
@click.option("--rule", type=click.Choice(["val", "last", "test_oracle"]), default="val",
              show_default=True)
@click.option("--metric", type=click.Choice(["srcc", "plcc", "krcc"]), default="srcc",
              show_default=True)
@click.option("--results", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results"), show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, default=0, show_default=True,
              help="CPU threads per run (0: torch's default).")
@click.option("--max-steps", type=int, default=0, help="Cap steps per epoch (smoke tests).")
@click.option("--quiet", is_flag=True, help="No progress bars or training log.")
@user_errors
def main(dataset, root, splits, sets, qfm_sets, presets, rule, metric, results, seed, device,
         threads, max_steps, quiet) -> None:
    """Train DEIQT and QFM-IQM on each split and print their paired differences."""
    from benchmark.grid.suite import SuiteError, parse_indices

    try:
        indices = parse_indices(splits, "--splits")
    except SuiteError as error:
        raise BenchError(str(error)) from None
    run = make_run_config(seed=seed, device=device, workers=0, threads=threads, quiet=quiet,
                          max_steps=max_steps)
    log = (lambda _: None) if quiet else click.echo
    if not presets:
        pairs = train_pairs(dataset, root, indices, parse_sets(sets),
                            parse_sets(qfm_sets), run, results, log=log)
        click.echo(format_comparison(*paired_comparison(pairs, rule, metric)))
        return
    rows = []
    for preset in presets.split(","):
        qfm_only = {**parse_sets(qfm_sets), "preset": preset.strip()}
        pairs = train_pairs(dataset, root, indices, parse_sets(sets), qfm_only, run,
                            results, log=log)
        rows.append((preset.strip(), *paired_comparison(pairs, rule, metric)))
    click.echo(format_ablation(rows))


if __name__ == "__main__":
    main()
