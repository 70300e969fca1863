"""The analysis stages of dvc.yaml, over the active suite's trained runs: the feature-distance
analysis (method.md §5) and the cross-dataset evaluation.

Both start from the runs the train and student stages exported (``Paths.export_dir``). An
exported record names, by its config hash, the run folder under ``paths.results`` that holds
the weights, so an analysis uses exactly the grid's runs, never a newer run of another
config. torch and the models are imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from benchmark.errors import UserError
from benchmark.files import atomic_write_json, atomic_write_text
from benchmark.records import RunKey, load_record, run_dir
from benchmark.grid.suite import Cell, Params, Suite

__all__ = ["AnalysisError", "grid_record", "feature_distance_stage", "cross_stage",
           "HEADLINE"]

#: the §5 statistics `dvc metrics show` lists per source (all pairs, cosine distance)
HEADLINE = ("S1_0.2", "R1_0.2", "gap_ratio_1", "rho", "knn_srcc")


class AnalysisError(UserError, ValueError):
    """An analysis stage that cannot run (a run missing, a name not in the suite)."""


def _cell(suite: Suite, entry: str, dataset: str, split: int) -> Cell:
    models = {e.name: e.model for e in suite.entries}
    return Cell(entry, models[entry], dataset, split)


def grid_record(params: Params, cell: Cell) -> dict:
    """The exported record of ``cell``, its ``_dir`` pointing at the folder with its weights."""
    export = params.paths.export_dir(cell) / "record.json"
    if not export.is_file():
        raise AnalysisError(f"no run of {cell.id} exported at {export}: run its stage first "
                            f"(dvc repro, or bench suite run {cell.entry} {cell.dataset} "
                            f"{cell.split})")
    record = load_record(export)
    weights = run_dir(params.paths.results, RunKey(record["model"], record["dataset"],
                                                   record["split"]), record["config_hash"])
    if not (weights / "checkpoint.pt").is_file():
        raise AnalysisError(f"{export} is the run {weights}, which holds no checkpoint.pt")
    return {**record, "_dir": str(weights)}


def _entry(suite: Suite, entry: str, students: bool) -> None:
    names = [e.name for e in suite.entries if e.student or not students]
    if entry not in names:
        role = "students" if students else "entries"
        raise AnalysisError(f"{entry!r} is not one of the {role} of the active suite "
                            f"{suite.name} ({', '.join(names)})")


def feature_distance_stage(params: Params, student: str, dataset: str, out: Path,
                           n_boot: int = 200, seed: int = 0,
                           log: Callable[[str], None] = print) -> pd.DataFrame:
    """F0 (the teacher's frozen starting backbone), the trained teacher (DEIQT) and
    ``student`` (QFM-IQM) on the test part of every split of the suite.

    Writes ``out``/splits/split<k>/{summary.csv, distance_gap, gap_share} per split,
    ``out``/summary.csv (the median over splits) and ``out``/metrics.json (its headline
    statistics per source, for ``dvc metrics show``); returns the median table."""
    from benchmark.datasets.prepare import load_prepared
    from benchmark.models import eval_crop
    from benchmark.registry import dataset_registry
    from benchmark.report.features import (backbone_features, checkpoint_features,
                                           distance_report, median_over_splits, select_images)
    from benchmark.datasets.splits import load_split_file

    suite = params.suite()
    _entry(suite, student, students=True)
    prepared = load_prepared(params.paths.dataset_root(dataset), dataset)
    splits_sha = load_split_file(prepared.split_path)["sha256"]
    synthetic = dataset_registry().get(dataset).kind == "synthetic"
    device = suite.run.get("device", "auto")
    frames = []
    for split in suite.splits:
        runs = [grid_record(params, _cell(suite, entry, dataset, split))
                for entry in (suite.teacher, student)]
        for record in runs:
            if record["data"]["splits_sha256"] != splits_sha:
                raise AnalysisError(f"{record['_dir']} was trained on another split file "
                                    f"than {prepared.split_path}")
        selection = select_images(prepared, "test", split)
        teacher, config = checkpoint_features(Path(runs[0]["_dir"]), selection, device)
        trained, _ = checkpoint_features(Path(runs[1]["_dir"]), selection, device)
        sources = {"F0": backbone_features(config, selection, eval_crop(config),
                                           config.test_crops, device),
                   suite.teacher: teacher, student: trained}
        log(f"{dataset} split {split}: {len(selection.images)} test images, F0 = "
            f"{config.backbone} (pretrained={config.pretrained}, frozen)")
        frames.append(distance_report(
            sources, selection, synthetic, Path(out) / "splits" / f"split{split}",
            {"dataset": dataset, "backbone": config.backbone}, n_boot=n_boot, seed=seed,
            log=log))
    summary = median_over_splits(pd.concat(frames, ignore_index=True))
    atomic_write_text(Path(out) / "summary.csv",
                      summary.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    main = summary[(summary["relation"] == "all") & (summary["distance"] == "cosine")]
    atomic_write_json(Path(out) / "metrics.json", {
        row["source"]: {"n_splits": int(row["n_splits"]),
                        **{k: _finite(row[k]) for k in HEADLINE}}
        for row in main.to_dict("records")})
    return summary


def _finite(value: float) -> float | None:
    """JSON has no NaN: an undefined statistic is null."""
    return None if value != value else round(float(value), 6)


def cross_stage(params: Params, entry: str, train: str, test: str, out: Path,
                log: Callable[[str], None] = print) -> list[Path]:
    """Every split model of ``entry`` on ``train`` scored on all images of ``test``, one
    cross record per split in ``out`` (weights of the validation-selected epoch)."""
    from benchmark.report.cross import score_runs

    suite = params.suite()
    _entry(suite, entry, students=False)
    if (train, test) not in suite.cross:
        pairs = ", ".join(f"{a}->{b}" for a, b in suite.cross) or "none"
        raise AnalysisError(f"{train}->{test} is not a cross pair of the active suite "
                            f"{suite.name} (its pairs: {pairs})")
    records = [grid_record(params, _cell(suite, entry, train, split)) for split in suite.splits]
    return score_runs(records, test, params.paths.dataset_root(test), out,
                      device=suite.run.get("device", "auto"), log=log)
