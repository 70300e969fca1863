"""The README's "Measured results" table, made by running what it states.

Trains each CPU recipe below on split 0 of a prepared LIVEC copy (the project's CI has a
partial one) and prints the table with everything that decides its numbers: recipe, selection
rule, CPU threads, seed and split. ``--write README.md`` replaces the table between the
README's ``measured-results`` markers; ``--check README.md`` exits non-zero when a fresh run
differs from the README by more than ``--tolerance`` SRCC (the slow test runs it). Runs are
reused by config hash under ``--results``, so a second call only re-reads them.

The runs use AVX2 kernels whatever the CPU offers (:data:`PINNED_KERNELS`, set before torch
loads): these three-epoch recipes are chaotic, and the kernels a CPU picks change their float
order (DEIQT's split-0 SRCC was 0.475 with AVX-512 kernels and 0.574 with AVX2 on the same
machine), so only pinned kernels make the table hold on another machine.

Example::

    python benchmarks/readme_results.py --root data/livec --threads 2 --write README.md
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click

from benchmark.cli.options import BenchError, user_errors
from benchmark.cli.run import make_run_config

__all__ = ["PINNED_KERNELS", "RECIPES", "measure", "table", "compare", "main"]

#: one instruction set for MKL (conditional numerical reproducibility), oneDNN and ATen's
#: own vector kernels, on every x86-64 CPU that has AVX2; read when torch loads, so the
#: script sets them before anything imports torch (this module does not)
PINNED_KERNELS = {"MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}

START, END = "<!-- measured-results:start -->", "<!-- measured-results:end -->"
_LITE0 = {"backbone": "tf_efficientnet_lite0", "pretrained": "offline-lite0"}
_DEIQT = {**_LITE0, "epochs": 3, "train_crops": 1, "test_crops": 2, "batch_size": 16,
          "lr": 2e-3, "warmup_epochs": 0.25, "schedule": "cosine"}
#: model → (what the table says about the recipe, the config overrides)
RECIPES = {
    "probe": ("Lite0 + linear (ridge-started head); 3 epochs, 2 crops of 224 px, batch 32, "
              "lr 1e-4", {**_LITE0, "img_size": 224, "epochs": 3, "train_crops": 2,
                          "test_crops": 4, "batch_size": 32, "lr": 1e-4,
                          "backbone_lr_scale": 1.0, "warmup_epochs": 0.25}),
    "deiqt": ("Lite0 tokens → attention-panel decoder; 3 epochs, 1 crop, batch 16, lr 2e-3, "
              "cosine", _DEIQT),
    "qfm": ("QFM-IQM `full`, teacher: the DEIQT row; same recipe", _DEIQT),
    "brisque": ("36 NSS features + RBF SVR, C and γ chosen on val", {}),
}
RULE = "val"


def measure(root: Path, threads: int, seed: int, results: Path, split: int = 0,
            log=print) -> list[dict]:
    """One row per recipe: the run's test SRCC/PLCC under :data:`RULE` and its wall time."""
    from benchmark.runner import run_one

    run = make_run_config(seed=seed, device="cpu", amp="off", workers=0, threads=threads,
                          quiet=True)
    rows = []
    for model, (text, overrides) in RECIPES.items():
        record = run_one(model, "livec", split, root, dict(overrides), run, results,
                         log=log)
        chosen = record["metrics"][RULE]
        rows.append({"model": model, "recipe": text, "rule": RULE,
                     "threads": record["run_config"]["threads"], "seed": record["seed"],
                     "split": split, "n_train": record["data"]["n_train"],
                     "srcc": chosen["test"]["srcc"], "plcc": chosen["test"]["plcc"],
                     "epoch": chosen["epoch"], "seconds": record["timings"]["total_s"],
                     "record_dir": record["_dir"]})
    return rows


def table(rows: list[dict]) -> str:
    # no wall times: on a shared machine they say more about the load than about the recipe
    lines = ["| model | recipe (CPU-sized) | selection | threads | seed | split | test SRCC "
             "| test PLCC |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['recipe']} | {row['rule']} (epoch {row['epoch']}) "
                     f"| {row['threads']} | {row['seed']} | {row['split']} | {row['srcc']:.3f} "
                     f"| {row['plcc']:.3f} |")
    return "\n".join(lines)


def _block(readme: str) -> tuple[int, int]:
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise BenchError(f"the README has no {START} … {END} block")
    return start + len(START), end


def compare(readme: str, rows: list[dict], tolerance: float) -> list[str]:
    """Lines naming each model whose README SRCC differs from ``rows`` by more than
    ``tolerance`` (or that the README lacks)."""
    start, end = _block(readme)
    stated = {match.group(1): float(match.group(2)) for match in
              re.finditer(r"^\| (\w+) \|(?:[^|]*\|){5} ([0-9.]+) \|", readme[start:end], re.M)}
    problems = []
    for row in rows:
        if row["model"] not in stated:
            problems.append(f"{row['model']}: not in the README's table")
        elif abs(stated[row["model"]] - row["srcc"]) > tolerance:
            problems.append(f"{row['model']}: README says {stated[row['model']]:.3f}, a fresh run "
                            f"gives {row['srcc']:.3f} (tolerance {tolerance})")
    return problems


@click.command()
@click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A prepared LIVEC folder (bench data prepare livec --allow-missing).")
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--results", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results"), show_default=True)
@click.option("--write", "write", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Replace the table in this README.")
@click.option("--check", "check", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Fail when this README's table differs from the fresh run.")
@click.option("--tolerance", type=float, default=0.03, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the rows (with each run's folder) here.")
@user_errors
def main(root, threads, seed, results, write, check, tolerance, json_out) -> None:
    """Run the README's CPU recipes and print (or write, or check) its results table."""
    missing = {k: v for k, v in PINNED_KERNELS.items() if os.environ.get(k) != v}
    if missing:  # called in a process that did not start as this script: too late to pin
        raise BenchError(f"run this file as a script: the kernel pins {missing} must be set "
                         f"before torch loads")
    rows = measure(root, threads, seed, results, log=lambda _: None)
    text = table(rows)
    click.echo(text)
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1))
    if write:
        readme = write.read_text()
        start, end = _block(readme)
        write.write_text(readme[:start] + "\n" + text + "\n" + readme[end:])
    if check:
        problems = compare(check.read_text(), rows, tolerance)
        if problems:
            raise BenchError("; ".join(problems))


if __name__ == "__main__":
    os.environ.update(PINNED_KERNELS)
    main()
