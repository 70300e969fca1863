"""``bench aggregate``, ``bench report``, ``bench analyze feature-distance`` and ``bench cross``.

Every import of pandas, matplotlib or torch happens inside a command body, so resolving
these commands for ``--help`` stays light.
"""

from __future__ import annotations

from pathlib import Path

import click

from benchmark.cli.options import BenchError, root_option, user_errors

__all__ = ["aggregate", "report", "analyze", "cross"]

results_option = click.option(
    "--results", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
    show_default=True, help="Results folder holding runs/ (and cross/).")
expect_option = click.option(
    "--expect-splits", "expect", multiple=True, metavar="N|DATASET=N",
    help="Splits a complete cell has (default 10); repeat as DATASET=N for one dataset "
         "(e.g. koniq=1 for an official split).")


def _expected(values: tuple[str, ...]) -> dict[str, int]:
    from benchmark.report.aggregate import parse_expected

    try:
        return parse_expected(values)
    except ValueError as error:
        raise BenchError(str(error)) from None


def _has_records(results: Path) -> None:
    from benchmark.records import record_paths

    if not record_paths(results):
        raise BenchError(f"no finished run records under {results / 'runs'}")


@click.command()
@results_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the tables go (default: RESULTS/aggregate).")
@expect_option
@user_errors
def aggregate(results: Path, out: Path | None, expect: tuple[str, ...]) -> None:
    """Collect every run record into tidy tables (CSV + Parquet).

    \b
    Writes runs (one row per record × selection rule), summary (median, mean, std,
    bootstrap 95 % CI of the median and split counts per model × dataset × config ×
    rule × metric) and wilcoxon (paired tests between cells over shared splits).

    \b
    Example:
      bench aggregate --results results --expect-splits 10 --expect-splits koniq=1
    """
    from benchmark.report.aggregate import aggregate as run_aggregate
    from benchmark.report.aggregate import format_summary

    expected = _expected(expect)
    _has_records(results)
    out = out or results / "aggregate"
    try:
        tables = run_aggregate(results, out, expected)
    except ValueError as error:
        raise BenchError(str(error)) from None
    click.echo(format_summary(tables["summary"]))
    click.echo(f"wrote {', '.join(sorted(tables))} tables (.csv, .parquet) to {out}")


@click.command()
@results_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Tables go to OUT/tables, figures to OUT/figures.")
@expect_option
@click.option("--published", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="Published-numbers CSV [default: the package's reference file].")
@click.option("--no-figures", is_flag=True, help="Write the tables only.")
@user_errors
def report(results: Path, out: Path, expect: tuple[str, ...], published: Path | None,
           no_figures: bool) -> None:
    """LaTeX tables, figures and one PDF from every run, cross and feature-distance record.

    \b
    Tables: main (models × datasets, SRCC/PLCC medians), published (ours beside the
    published numbers), protocol (validation- vs test-selected epoch), ablation (by
    config preset, when present), cross_srcc/cross_plcc (when cross records exist),
    features (the feature-distance statistics under RESULTS/features, when present).
    Figures: predicted-vs-MOS scatter and training curves per model and dataset,
    per-split SRCC boxes, and the feature-distance figures. OUT/report.tex holds every
    table and figure, one page each, compiled to OUT/report.pdf when pdflatex exists.

    \b
    Example:
      bench report --results results --out results
    """
    from benchmark.report.build import build_report

    expected = _expected(expect)
    _has_records(results)
    try:
        written, pdf = build_report(results, out, expected, published, figures=not no_figures)
    except ValueError as error:
        raise BenchError(str(error)) from None
    for kind in ("tables", "figures"):
        click.echo(f"wrote {len(written[kind])} files to {out / kind}")
    click.echo(pdf)
    click.echo((out / "tables" / "summary.txt").read_text().rstrip())


@click.group()
def analyze() -> None:
    """Analyses of trained models' representations."""


def _source_split(checkpoints: tuple[Path, ...], dataset: str) -> tuple[int | None, list[dict]]:
    """The split shared by the checkpoints' runs (their records sit beside the weights)."""
    from benchmark.records import load_record

    records = []
    for path in checkpoints:
        record_path = (path if path.is_dir() else path.parent) / "record.json"
        if not record_path.is_file():
            raise BenchError(f"no record.json beside checkpoint {path}")
        record = load_record(record_path)
        if record["dataset"] != dataset:
            raise BenchError(f"{path} was trained on {record['dataset']}, not {dataset}")
        records.append(record)
    splits = sorted({r["split"] for r in records})
    if len(splits) > 1:
        raise BenchError(f"the checkpoints come from different splits {splits}: analyse one "
                         f"split at a time so every source sees the same images")
    return (splits[0] if splits else None), records


@analyze.command("feature-distance")
@click.option("--dataset", required=True, help="Registered dataset name.")
@root_option
@click.option("--checkpoint", "checkpoints", multiple=True,
              type=click.Path(exists=True, path_type=Path),
              help="Run directory (last-epoch weights) or .pt file of a trained model; repeat.")
@click.option("--backbone", default=None,
              help="A frozen timm backbone as source F0, e.g. deit3_small_patch16_224.fb_in1k.")
@click.option("--pretrained", default="true", show_default=True,
              help="Backbone weights: true (hub), false, offline-lite0 or a local file.")
@click.option("--part", type=click.Choice(["test", "train", "val", "all"]), default=None,
              help="Images analysed [default: test with checkpoints, else all].")
@click.option("--split", type=int, default=None,
              help="Split whose part is analysed [default: the checkpoints' split].")
@click.option("--crop", type=int, default=224, show_default=True, help="Backbone crop side.")
@click.option("--crops", type=int, default=10, show_default=True, help="Backbone crops per image.")
@click.option("--boot", type=int, default=200, show_default=True,
              help="Bootstrap resamples of images for the rank-correlation CIs.")
@click.option("--max-pairs", type=int, default=1_000_000, show_default=True,
              help="Pairs sampled when there are more.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="[default: results/analysis/feature_distance/DATASET-PART[-splitK]]")
@user_errors
def feature_distance(dataset: str, root: Path, checkpoints: tuple[Path, ...],
                     backbone: str | None, pretrained: str, part: str | None, split: int | None,
                     crop: int, crops: int, boot: int, max_pairs: int, seed: int, device: str,
                     out: Path | None) -> None:
    """Are images close in feature space close in quality? (docs/method.md §5)

    \b
    Writes summary.csv (one row per source × pair relation × distance), distance_gap
    (Δ against distance percentile, one panel per source) and gap_share (S1(θ) with the
    random-pair baseline), and prints the main statistics.

    \b
    Example:
      bench analyze feature-distance --dataset livec --root data/livec \\
        --backbone deit3_small_patch16_224.fb_in1k \\
        --checkpoint results/runs/deiqt/livec/split0-<hash> \\
        --checkpoint results/runs/qfm/livec/split0-<hash>
    """
    from benchmark.datasets.prepare import load_prepared
    from benchmark.models import ModelConfig
    from benchmark.registry import dataset_registry
    from benchmark.report.features import (backbone_features, checkpoint_features,
                                           distance_report, format_summary, select_images)
    from benchmark.datasets.splits import load_split_file

    if not checkpoints and backbone is None:
        raise BenchError("nothing to analyse: pass --backbone and/or --checkpoint")
    registry = dataset_registry()
    name = registry.canonical(dataset)
    prepared = load_prepared(root, name)
    checkpoint_split, records = _source_split(checkpoints, name)
    split = checkpoint_split if split is None else split
    if checkpoint_split is not None and split != checkpoint_split:
        raise BenchError(f"--split {split} differs from the checkpoints' split {checkpoint_split}")
    part = part or ("test" if checkpoints else "all")
    splits_sha = load_split_file(prepared.split_path)["sha256"]
    for path, record in zip(checkpoints, records):
        if part != "all" and record["data"]["splits_sha256"] != splits_sha:
            raise BenchError(f"{path} was trained on another split file than {root}'s: its "
                             f"{part} images are not this split's")
    try:
        selection = select_images(prepared, part, split)
        sources = {}
        if backbone is not None:
            frozen = ModelConfig(backbone=backbone, pretrained=pretrained, img_size=crop)
            sources[f"F0 {backbone}"] = backbone_features(frozen, selection, crop, crops, device)
        for path, record in zip(checkpoints, records):
            label = record["model"]
            if label in sources:  # two configurations of one model: tell them apart
                label = f"{label} {record['config_hash'][:6]}"
            sources[label], _ = checkpoint_features(path, selection, device)
        out = out or Path("results/analysis/feature_distance") / (
            f"{name}-{part}" + (f"-split{split}" if part != "all" else ""))
        summary = distance_report(sources, selection, registry.get(name).kind == "synthetic",
                                  out, {"dataset": name}, n_boot=boot, max_pairs=max_pairs,
                                  seed=seed, log=lambda text: click.echo(text, err=True))
    except ValueError as error:
        raise BenchError(str(error)) from None
    click.echo(format_summary(summary))
    click.echo(f"wrote summary.csv, distance_gap and gap_share (.png, .pdf) to {out}")


@click.command()
@click.option("--train", "train", required=True, help="Dataset the models were trained on.")
@click.option("--test", "test", required=True, help="Dataset to evaluate on (all its images).")
@click.option("--root-test", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Prepared folder of the test dataset.")
@click.option("--model", "models", multiple=True,
              help="Model(s) to evaluate; repeat [default: every model with runs on TRAIN].")
@click.option("--checkpoint", default=None, metavar="pyiqa:MODEL:FILE",
              help="Evaluate pyiqa's released checkpoint (trained on TRAIN) instead of runs.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Config value of the checkpoint's model (repeatable), as in bench score.")
@results_option
@click.option("--rule", type=click.Choice(["val", "last"]), default=None,
              help="Weights: the validation-selected epoch [default] or the last one.")
@click.option("--config", default=None, help="Config id prefix when a model has several.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--force", is_flag=True, help="Re-evaluate splits that already have a record.")
@user_errors
def cross(train: str, test: str, root_test: Path, models: tuple[str, ...],
          checkpoint: str | None, sets: tuple[str, ...], results: Path, rule: str | None,
          config: str | None, device: str, force: bool) -> None:
    """Evaluate every split's model trained on TRAIN on all images of TEST.

    \b
    Writes RESULTS/cross/<model>/<train>__<test>/split<k>-<key>.json, the key naming the
    source run, the rule, the test folder and its table's checksum (a record is reused only
    under the same key); `bench report` turns them into the cross-dataset tables.
    --checkpoint pyiqa:MODEL:FILE scores pyiqa's released model instead, with bench score's
    protocol, into RESULTS/cross/pyiqa-<model>/ (keyed by the file's sha256); the tables
    label its row "(pyiqa release)".

    \b
    Examples:
      bench cross --train koniq --test livec --root-test data/livec --model deiqt
      bench cross --train koniq --test livec --root-test data/livec \\
        --checkpoint pyiqa:dbcnn:DBCNN_KonIQ.pth
    """
    from benchmark.cli.run import parse_sets
    from benchmark.records import iter_records
    from benchmark.registry import dataset_registry
    from benchmark.report.cross import evaluate_cross, score_release

    train = dataset_registry().canonical(train)
    if checkpoint is None and sets:
        raise BenchError("--set applies to a --checkpoint; runs carry their own config")
    if checkpoint is not None:
        given = [f"--{name}" for name, value in (("model", models), ("rule", rule),
                                                  ("config", config)) if value]
        if given:
            raise BenchError(f"{' and '.join(given)} select runs: a --checkpoint is one model "
                             "with one set of weights")
    else:
        models = models or tuple(sorted({r["model"] for r in iter_records(results)
                                         if r["dataset"] == train}))
        if not models:
            raise BenchError(f"no finished runs on {train} under {results / 'runs'}")
    decoded: dict = {}  # the test images, decoded once for every model and split
    try:
        if checkpoint is not None:
            score_release(checkpoint, train, test, root_test, results, parse_sets(sets),
                          device, force, log=click.echo)
        for model in models:
            evaluate_cross(model, train, test, root_test, results, rule or "val", device,
                           config, force, log=click.echo, decoded=decoded)
    except (ValueError, FileNotFoundError) as error:
        raise BenchError(str(error).splitlines()[0]) from None
