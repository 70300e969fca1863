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
when it orders quality right. Reading and summarising cross records needs no torch;
evaluating does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from benchmark.aggregate import config_identity, main_rank, runs_frame, summarize
from benchmark.io import atomic_write_json, atomic_write_text
from benchmark.metrics import HIGHER_IS_BETTER, all_metrics
from benchmark.records import config_hash, git_state, iter_records, package_versions

__all__ = ["CROSS_SCHEMA", "cross_dir", "cross_key", "iter_cross", "cross_runs",
           "cross_summary", "unit_map", "select_runs", "evaluate_cross", "score_runs"]

CROSS_SCHEMA = "bench-cross/2"
#: bench-cross/1 records numbered epochs from 0 and carried no key in their name
_OLD_SCHEMA = "bench-cross/1"


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
        rows.append({"model": record["model"], "dataset": f"{record['train']}->{record['test']}",
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
    return summarize(runs, expected)


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
    else the main-table one (:func:`benchmark.aggregate.main_rank`)."""
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
    from benchmark.data import ImageCache

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
    from benchmark.data import DecodeSpec
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
        atomic_write_text(out_path.with_suffix(".csv"), per_image.to_csv(
            index=False, float_format="%.8g", lineterminator="\n"))
        atomic_write_json(out_path, {
            "schema": CROSS_SCHEMA, "key": key, "model": model, "train": train, "test": test,
            "split": int(record["split"]), "rule": rule, "epoch": trained.epoch,
            "config_id": config_identity(record), "config_hash": record["config_hash"],
            "preset": record["config"].get("preset"), "suite_tag": record.get("suite_tag"),
            "source_dir": str(source), "checkpoint": trained.path.name,
            "data": {"root": str(Path(prepared.root).resolve()), "table_sha256": table_sha256,
                     "n_images": len(paths)},
            "metrics": metrics, "higher_is_better": HIGHER_IS_BETTER,
            "git": git_state(), "versions": package_versions(), "device": str(torch_device),
            "timings": {"total_s": round(time.perf_counter() - tic, 3)},
        })
        if _made_from(legacy, key):  # replaced under --force: one record per key
            legacy.unlink()
            legacy.with_suffix(".csv").unlink(missing_ok=True)
        log(f"{model} {train}->{test} split {record['split']}: srcc {metrics['srcc']:.4f}")
        written.append(out_path)
    return written
