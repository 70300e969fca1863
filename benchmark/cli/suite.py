"""``bench suite``: list, check and switch the suites of params.yaml; run one DVC stage."""

from __future__ import annotations

from pathlib import Path

import click

from benchmark.cli.options import BenchError, user_errors
from benchmark.cli.sweep import params_option

__all__ = ["suite"]


@click.group()
def suite() -> None:
    """The suites of params.yaml: what `dvc repro` and `bench sweep` run.

    \b
    Examples:
      bench suite list
      bench suite check
      bench suite use paper && dvc repro
    """


@suite.command("list")
@params_option
@user_errors
def list_(params_path: Path) -> None:
    """Each suite with its datasets, entries and run count; * marks the active one."""
    from benchmark.grid.suite import load_params

    params = load_params(params_path)
    width = max(map(len, params.suites))
    for name, raw in params.suites.items():
        entries = [*(raw["models"] or {}), *(raw["students"] or {})]
        runs = len(entries) * len(raw["datasets"]) * len(raw["splits"])
        mark = "*" if name == params.active else " "
        click.echo(f"{mark} {name:<{width}} {runs:>5} runs  {len(raw['splits'])} splits  "
                   f"datasets: {', '.join(raw['datasets'])}  entries: {', '.join(entries)}")


@suite.command()
@params_option
@click.option("--prune", is_flag=True,
              help="Remove the exported records of cells no longer in the active suite.")
@click.option("--stamp", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write this file once the check passes (DVC stages depend on it, so the "
                   "check runs before them; its content never changes).")
@user_errors
def check(params_path: Path, prune: bool, stamp: Path | None) -> None:
    """Validate params.yaml completely: names, every cell's config, teacher order."""
    from benchmark.files import atomic_write_text
    from benchmark.grid.cells import check_params
    from benchmark.grid.suite import load_params
    from benchmark.grid.sweep import prune_exports

    params = load_params(params_path)
    counts = check_params(params)
    click.echo(f"{params_path}: {len(counts)} suites valid ("
               + ", ".join(f"{name} {count} runs" for name, count in counts.items())
               + f"); active: {params.active}")
    for name in params.suites:
        for train, test in params.suite(name).cross:
            if train == test:
                click.echo(f"note: suites.{name}.cross: {train} -> {test} scores each split "
                           f"model on its own training images too: a pipeline check, not a "
                           f"cross-dataset result")
    if prune:
        for path in prune_exports(params.paths, params.suite().cells()):
            click.echo(f"removed {path} (no longer in suite {params.active})")
    if stamp is not None:
        atomic_write_text(stamp, "params.yaml passed `bench suite check`\n")


@suite.command()
@click.argument("name")
@params_option
@user_errors
def use(name: str, params_path: Path) -> None:
    """Make suite NAME the active one (rewrites the `suite:` line of params.yaml)."""
    from benchmark.grid.suite import switch_suite

    params = switch_suite(params_path, name)
    raw = params.suites[name]
    click.echo(f"active suite: {name} ({len(raw['datasets'])} datasets, "
               f"{len(raw['splits'])} splits); next: dvc repro")


@suite.command()
@click.argument("entry")
@click.argument("dataset")
@click.argument("split", type=int)
@params_option
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder that receives the run's record.json and predictions.csv.")
@click.option("--metrics", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON file that receives the test metrics per selection rule.")
@click.option("--teacher", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The teacher's --out folder (a student must use exactly that run).")
@user_errors
def run(entry: str, dataset: str, split: int, params_path: Path, out: Path, metrics: Path,
        teacher: Path | None) -> None:
    """Run one cell of the active suite and copy its record to --out (a DVC stage)."""
    from benchmark.grid.suite import load_params
    from benchmark.grid.sweep import export_run, plan_sweep, wrong_teacher

    params = load_params(params_path)
    active = params.suite()
    if entry not in {e.name for e in active.entries}:
        raise BenchError(f"{entry!r} is not an entry of the active suite {active.name}")
    cell = params.suite(active.name, [entry], [dataset], [split])
    job = plan_sweep(params, cell)[0]
    if teacher is not None:
        problem = wrong_teacher(job.plan(), teacher / "record.json")
        if problem:
            raise BenchError(problem)
    record = job.execute(click.echo)
    export_run(record, out, metrics)
    test = record["metrics"]["val"]["test"]
    click.echo(f"{entry} {dataset} split {split}: test SRCC {test['srcc']:.4f} "
               f"PLCC {test['plcc']:.4f} (val-selected); copied to {out}")


def _threads(params) -> None:
    """The suite's CPU thread count (run.threads), as its runs use it."""
    threads = params.suite().run.get("threads")
    if threads:
        import torch

        torch.set_num_threads(threads)


@suite.command()
@click.argument("student")
@click.argument("dataset")
@params_option
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder that receives summary.csv, metrics.json and splits/split<k>/.")
@click.option("--boot", type=int, default=200, show_default=True,
              help="Bootstrap resamples of images for the rank-correlation CIs.")
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def features(student: str, dataset: str, params_path: Path, out: Path, boot: int,
             seed: int) -> None:
    """Feature distance vs quality of the active suite's runs (a DVC stage).

    \b
    On the test part of every split: F0, the frozen backbone the teacher (DEIQT) started
    from; the trained teacher; the trained STUDENT (QFM-IQM). Writes each split's
    statistics and figures to OUT/splits/split<k>/, their median over splits to
    OUT/summary.csv and the headline statistics to OUT/metrics.json.

    \b
    Example:
      bench suite features qfm demo --out results/dvc/features/qfm/demo
    """
    from benchmark.analyses import feature_distance_stage
    from benchmark.report.features import format_summary
    from benchmark.grid.suite import load_params

    params = load_params(params_path)
    _threads(params)
    summary = feature_distance_stage(params, student, dataset, out,
                                     n_boot=boot, seed=seed,
                                     log=lambda text: click.echo(text, err=True))
    shown = summary[(summary["relation"] == "all") & (summary["distance"] == "cosine")]
    click.echo(format_summary(shown))
    click.echo(f"median over {int(summary['n_splits'].max())} splits; wrote summary.csv, "
               f"metrics.json and splits/ to {out}")


@suite.command()
@click.argument("entry")
@click.argument("train")
@click.argument("test")
@params_option
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder that receives one cross record (.json + .csv) per split.")
@user_errors
def cross(entry: str, train: str, test: str, params_path: Path, out: Path) -> None:
    """Score ENTRY's split models of TRAIN on all images of TEST (a DVC stage).

    \b
    TRAIN -> TEST must be one of the active suite's `cross` pairs; the weights are those of
    the validation-selected epoch. `bench report` turns the records into the cross tables.

    \b
    Example:
      bench suite cross deiqt koniq livec --out results/dvc/cross/deiqt/koniq__livec
    """
    from benchmark.analyses import cross_stage
    from benchmark.grid.suite import load_params

    params = load_params(params_path)
    _threads(params)
    written = cross_stage(params, entry, train, test, out, log=click.echo)
    click.echo(f"wrote {len(written)} cross records to {out}")


@suite.command()
@params_option
@click.option("--suite", "name", default=None, help="The suite to cost (default: the active one).")
@click.option("--profile", "profiles", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A `bench profile --json` file; its model's throughput replaces the "
                   "built-in estimate (repeatable).")
@user_errors
def estimate(params_path: Path, name: str | None, profiles: tuple[Path, ...]) -> None:
    """Crop-steps and GPU-hours of every run of a suite, before any image is read.

    \b
    Example:
      bench profile --model deiqt --device cuda --amp bf16 --json deiqt.json
      bench suite estimate --suite paper --profile deiqt.json
    """
    from benchmark.estimate import estimate_suite, load_throughputs
    from benchmark.grid.suite import load_params

    params = load_params(params_path)
    suite_ = params.suite(name)
    rows = estimate_suite(suite_, params.protocol,
                          load_throughputs(list(profiles)))
    click.echo(f"{'entry':<10} {'dataset':<8} {'runs':>4} {'train crops/run':>16} "
               f"{'eval crops/run':>15} {'GPU-h':>9}  throughput")
    per_entry: dict[str, float] = {}
    for row in rows:
        hours = "-" if row.gpu_hours is None else f"{row.gpu_hours:.2f}"
        click.echo(f"{row.entry:<10} {row.dataset:<8} {row.runs:>4} {row.train_crops:>16,} "
                   f"{row.eval_crops:>15,} {hours:>9}  {row.source}")
        per_entry[row.entry] = per_entry.get(row.entry, 0.0) + (row.gpu_hours or 0.0)
    for entry, hours in per_entry.items():
        click.echo(f"total {entry:<10} {hours:>10.1f} GPU-hours")
    click.echo(f"total suite {suite_.name}: {sum(per_entry.values()):.1f} GPU-hours "
               f"({len(suite_.cells())} runs; 'estimate' rows use the built-in table, not a "
               f"measurement)")
