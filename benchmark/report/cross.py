"""Cross-dataset evaluation: each split's model trained on one set, scored on all of another.

A cross record (``results/cross/<model>/<train>__<test>/split<k>-<key10>.json``; the DVC
pipeline's folders are named by grid entry instead of model) holds the
metrics of one trained split model against the target set's unit score; the CSV of the same
name beside it holds the per-image predictions on the model's scale and on the unit scale. The
key hashes what the record was made from (the source run's config hash, the rule whose
weights were used, the test set's folder and the checksum of its table), so a record is reused
only for the same inputs and records of another rule or test copy sit beside it. Predictions
are first put on the source's unit scale with the affine map the source run itself used (read
from its predictions.csv), so a model trained on DMOS and tested on MOS keeps a positive SRCC
when it orders quality right.

A released checkpoint (pyiqa's, ``pyiqa:MODEL:FILE``) is scored by :func:`score_release`
into ``results/cross/pyiqa-<model>/<train>__<test>/split0-<key10>.json``: one model, keyed by
the file's sha256, with rule ``release`` and ``release: pyiqa`` in the record; its rows are
the model ``pyiqa:<model>``, a cell of its own that one record completes. Reading and
summarising cross records needs no torch; evaluating does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from benchmark.report.aggregate import config_identity, main_rank, runs_frame, summarize
from benchmark.files import atomic_write_json, atomic_write_text
from benchmark.metrics import HIGHER_IS_BETTER, all_metrics
from benchmark.records import config_hash, git_state, iter_records, package_versions

__all__ = ["CROSS_SCHEMA", "RELEASE_RULE", "RELEASED_BY", "cross_dir", "cross_key",
           "iter_cross", "cross_runs", "cross_summary", "released_model", "unit_map",
           "select_runs", "evaluate_cross", "score_runs", "score_release"]

CROSS_SCHEMA = "bench-cross/2"
#: bench-cross/1 records numbered epochs from 0 and carried no key in their name
_OLD_SCHEMA = "bench-cross/1"
#: the rule of a released checkpoint's record: its publisher chose the weights, not a rule of ours
RELEASE_RULE = "release"
#: who released the checkpoints :func:`score_release` scores (the ``pyiqa:`` of their rows)
RELEASED_BY = "pyiqa"


def released_model(name: str) -> str | None:
    """The model of a released checkpoint's rows (``pyiqa:dbcnn``), else None."""
    who, sep, model = name.partition(":")
    return model if sep and who == RELEASED_BY else None


def cross_dir(results: Path, name: str, train: str, test: str) -> Path:
    """Where the cross records of ``name`` (a model; a grid entry in the pipeline) go."""
    return Path(results) / "cross" / name / f"{train}__{test}"


def iter_cross(results: Path) -> Iterator[dict[str, Any]]:
    for path in sorted((Path(results) / "cross").glob("*/*__*/split*.json")):
        record = json.loads(path.read_text())
        if record.get("schema") == _OLD_SCHEMA:
            record = {**record, "schema": CROSS_SCHEMA, "epoch": record["epoch"] + 1}
        if record.get("schema") != CROSS_SCHEMA:
            raise ValueError(f"{path} is not a {CROSS_SCHEMA} record")
        record["_path"] = str(path)
        yield record


def cross_runs(results: Path) -> pd.DataFrame:
    """Cross records in the aggregate's per-split layout, ``dataset`` spelled ``train->test``."""
    rows = []
    for record in iter_cross(results):
        data = record["data"]
        # one cell per source configuration and test copy: two folders of one test set differ
        test_copy = {"root": data.get("root"), "table_sha256": data.get("table_sha256")}
        # a release is not a model trained here: its rows never join our runs' cells
        model = f"{record['release']}:{record['model']}" if record.get("release") \
            else record["model"]
        rows.append({"model": model, "dataset": f"{record['train']}->{record['test']}",
                     "config_id": config_hash({"source": record["config_id"],
                                               "test": test_copy})[:12],
                     "rule": record["rule"],
                     "split": int(record["split"]), "epoch": record.get("epoch"),
                     "preset": record.get("preset"), "suite_tag": record.get("suite_tag"),
                     "n_test": data["n_images"], "config_hash": record.get("config_hash"),
                     "dir": record["_path"], **record["metrics"]})
    return runs_frame(rows)


def cross_summary(results: Path, expected: dict[str, int] | int = 10) -> pd.DataFrame:
    runs = cross_runs(results)
    if isinstance(expected, dict):
        # a cross cell is complete when every split of its source was evaluated
        expected = {**expected, **{d: expected.get(d.split("->")[0], expected.get("*", 10))
                                   for d in runs["dataset"].unique()}}
    summary = summarize(runs, expected)
    released = summary["model"].map(released_model).notna()
    summary.loc[released, "expected"] = 1  # one released model, not one per split
    summary.loc[released, "complete"] = summary.loc[released, "n"] >= 1
    return summary


def unit_map(predictions: pd.DataFrame, rule: str) -> tuple[float, float]:
    """(a, b) with pred_unit = a·pred + b, as the source run mapped its own predictions."""
    pred = predictions[f"pred_{rule}"].to_numpy(float)
    unit = predictions[f"pred_unit_{rule}"].to_numpy(float)
    if np.ptp(pred) == 0:
        raise ValueError("constant predictions in the source run: cannot recover its unit map")
    a, b = np.polyfit(pred, unit, 1)
    return float(a), float(b)


def select_runs(results: Path, model: str, train: str, config: str | None = None) -> list[dict]:
    """The records of one configuration of ``model`` on ``train``: the one given by id prefix,
    else the main-table one (:func:`benchmark.report.aggregate.main_rank`)."""
    records = [r for r in iter_records(results) if r["model"] == model and r["dataset"] == train]
    if not records:
        raise ValueError(f"no finished {model} runs on {train} under {Path(results) / 'runs'}")
    by_config: dict[str, list[dict]] = {}
    for record in records:
        by_config.setdefault(config_identity(record), []).append(record)
    if config is not None:
        matches = [c for c in by_config if c.startswith(config)]
        if len(matches) != 1:
            raise ValueError(f"config id {config!r} matches {len(matches)} configurations of "
                             f"{model} on {train} (known: {', '.join(sorted(by_config))})")
        return sorted(by_config[matches[0]], key=lambda r: r["split"])
    chosen = min(by_config, key=lambda c: main_rank(
        len(by_config[c]), by_config[c][0]["config"].get("preset"), c))
    return sorted(by_config[chosen], key=lambda r: r["split"])


def cross_key(record: dict, rule: str, root: Path, table_sha256: str | None) -> str:
    """What a cross record was made from: the source run, the weights' rule, the test set's
    folder and table. Records are reused only under the same key."""
    return config_hash({"config_hash": record["config_hash"], "rule": rule,
                        "root": str(Path(root).resolve()), "table_sha256": table_sha256})


def _made_from(path: Path, key: str) -> bool:
    if not path.is_file():
        return False
    found = json.loads(path.read_text())
    if "key" in found:
        return found["key"] == key
    # a bench-cross/1 record, named without a key, is reused only if made from the same things
    data = found.get("data", {})
    return cross_key(found, found.get("rule"), data.get("root", ""),
                     data.get("table_sha256")) == key


def _decoded(store: dict, paths: list[Path], spec) -> Any:
    from benchmark.loader import ImageCache

    if spec not in store:
        store.clear()  # one decoded copy at a time: a test set can be large
        store[spec] = ImageCache(paths, spec)
    return store[spec]


def evaluate_cross(model: str, train: str, test: str, root_test: Path, results: Path,
                   rule: str = "val", device: str = "cpu", config: str | None = None,
                   force: bool = False, log: Callable[[str], None] = print,
                   decoded: dict | None = None) -> list[Path]:
    """Score every split model of ``model`` trained on ``train`` (one configuration, see
    :func:`select_runs`) on all images of ``test``."""
    return score_runs(select_runs(results, model, train, config), test, root_test,
                      cross_dir(results, model, train, test), rule, device, force, log, decoded)


def score_runs(records: list[dict], test: str, root_test: Path, out: Path, rule: str = "val",
               device: str = "cpu", force: bool = False, log: Callable[[str], None] = print,
               decoded: dict | None = None) -> list[Path]:
    """Score the runs of ``records`` (each ``_dir`` holding its weights) on all images of
    ``test``; one record per split goes to ``out``.

    The test images are decoded once and reused for every split (and, through ``decoded``,
    for the next model with the same decode settings)."""
    from benchmark.loader import DecodeSpec
    from benchmark.datasets.prepare import load_prepared
    from benchmark.engine import predict, resolve_device
    from benchmark.models import eval_crop
    from benchmark.registry import dataset_registry
    from benchmark.trained import RULE_CHECKPOINTS, load_trained

    if rule not in RULE_CHECKPOINTS:
        raise ValueError(f"cross evaluation uses rule val or last, not {rule!r}")
    test = dataset_registry().canonical(test)
    prepared = load_prepared(Path(root_test), test)
    table_sha256 = prepared.meta.get("table_sha256")
    paths = [prepared.image_path(image) for image in prepared.table["image"]]
    units = prepared.table["score_unit"].to_numpy(float)
    torch_device = resolve_device(device)
    decoded = {} if decoded is None else decoded
    written = []
    for record in records:
        model, train = record["model"], record["dataset"]
        key = cross_key(record, rule, prepared.root, table_sha256)
        out_path = Path(out) / f"split{record['split']}-{key[:10]}.json"
        legacy = out_path.with_name(f"split{record['split']}.json")
        done = next((p for p in (out_path, legacy) if _made_from(p, key)), None)
        if done is not None and not force:
            log(f"already done: {done}")
            written.append(done)
            continue
        tic = time.perf_counter()
        source = Path(record["_dir"])
        trained = load_trained(source, rule)
        crop, n_crops = eval_crop(trained.model.config), trained.model.config.test_crops
        images = _decoded(decoded, paths, DecodeSpec(trained.model.config.resize_hw, crop))
        pred = predict(trained.model.to(torch_device), images, crop, n_crops, 0, torch_device,
                       batch_size=32)
        a, b = unit_map(pd.read_csv(source / "predictions.csv"), rule)
        pred = np.asarray(pred, dtype=np.float64)
        metrics = all_metrics(a * pred + b, units)
        per_image = prepared.table[["image", "score", "score_unit"]].assign(
            pred=pred, pred_unit=a * pred + b)
        _write_record(out_path, per_image, metrics, tic, {
            "key": key, "model": model, "train": train, "test": test,
            "split": int(record["split"]), "rule": rule, "epoch": trained.epoch,
            "config_id": config_identity(record), "config_hash": record["config_hash"],
            "preset": record["config"].get("preset"), "suite_tag": record.get("suite_tag"),
            "source_dir": str(source), "checkpoint": trained.path.name,
            "data": _test_data(prepared), "device": str(torch_device)})
        if _made_from(legacy, key):  # replaced under --force: one record per key
            legacy.unlink()
            legacy.with_suffix(".csv").unlink(missing_ok=True)
        log(f"{model} {train}->{test} split {record['split']}: srcc {metrics['srcc']:.4f}")
        written.append(out_path)
    return written


def _test_data(prepared) -> dict[str, Any]:
    return {"root": str(Path(prepared.root).resolve()),
            "table_sha256": prepared.meta.get("table_sha256"), "n_images": len(prepared.table)}


def _write_record(out_path: Path, per_image: pd.DataFrame, metrics: dict[str, float],
                  tic: float, fields: dict[str, Any]) -> None:
    """The per-image CSV, then the record beside it (its presence means the pair is whole)."""
    atomic_write_text(out_path.with_suffix(".csv"), per_image.to_csv(
        index=False, float_format="%.8g", lineterminator="\n"))
    atomic_write_json(out_path, {
        "schema": CROSS_SCHEMA, **fields, "metrics": metrics,
        "higher_is_better": HIGHER_IS_BETTER, "git": git_state(),
        "versions": package_versions(),
        "timings": {"total_s": round(time.perf_counter() - tic, 3)}})


def score_release(source: str, train: str, test: str, root_test: Path, results: Path,
                  overrides: dict[str, Any] | None = None, device: str = "cpu",
                  force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Score a released checkpoint (``pyiqa:MODEL:FILE``, trained by its publisher on
    ``train``) on all images of ``test``, with ``bench score``'s metric, into one record.

    The file carries no label scale, so no unit map exists: SRCC, KRCC and the PLCCs (raw and
    after the logistic fits) are scale-free and computed as for runs, the raw RMSE is NaN.
    The key is the file's sha256 and the resolved model config, the test folder and its
    table's checksum."""
    from benchmark.datasets.prepare import load_prepared
    from benchmark.files import sha256_file
    from benchmark.metric import load_metric
    from benchmark.model_config import config_to_dict
    from benchmark.pyiqa_weights import parse_source
    from benchmark.registry import dataset_registry

    parsed = parse_source(source)
    if parsed is None:
        raise ValueError(f"{source}: a released checkpoint is given as pyiqa:MODEL:FILE (runs "
                         "of this harness are found under the results folder by model)")
    tic = time.perf_counter()
    metric = load_metric(source, device, overrides=overrides)  # refuses bad files first
    name, path = metric.model.name, parsed[1]
    train, test = dataset_registry().canonical(train), dataset_registry().canonical(test)
    prepared = load_prepared(Path(root_test), test)
    sha256 = sha256_file(path)
    identity = {"model": name, "checkpoint_sha256": sha256,
                "config": config_to_dict(metric.model.config)}
    source_hash = config_hash(identity)
    key = cross_key({"config_hash": source_hash}, RELEASE_RULE, prepared.root,
                    prepared.meta.get("table_sha256"))
    out_path = cross_dir(results, f"{RELEASED_BY}-{name}", train, test) / f"split0-{key[:10]}.json"
    if _made_from(out_path, key) and not force:
        log(f"already done: {out_path}")
        return out_path
    scored = metric.score_files([prepared.image_path(i) for i in prepared.table["image"]])
    if scored.failed:
        raise ValueError(scored.failed[0][1])
    pred = np.asarray(scored.scores, dtype=np.float64)
    # on the release's own scale: only the raw RMSE needs the unknown unit map
    metrics = {**all_metrics(pred, prepared.table["score_unit"].to_numpy(float)),
               "rmse": float("nan")}
    per_image = prepared.table[["image", "score", "score_unit"]].assign(pred=pred)
    _write_record(out_path, per_image, metrics, tic, {
        "key": key, "model": name, "release": RELEASED_BY, "train": train, "test": test,
        "split": 0, "rule": RELEASE_RULE, "epoch": None, "config_id": source_hash[:12],
        "config_hash": source_hash, "preset": None, "suite_tag": None,
        "source_dir": str(path.resolve().parent), "checkpoint": path.name,
        "checkpoint_sha256": sha256, "config": identity["config"],
        "data": _test_data(prepared), "device": str(metric.device)})
    log(f"{RELEASED_BY}:{name} (released) {train}->{test}: srcc {metrics['srcc']:.4f}")
    return out_path
