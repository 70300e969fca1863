"""Synthetic run records in the runner's layout, for the aggregate and report tests.

Each record's metrics are drawn from a seeded generator so that every test can recompute
the expected medians itself from the returned ``truth`` table, independently of the code
under test.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

METRIC_KEYS = ("srcc", "krcc", "plcc", "plcc_l4", "plcc_l5", "rmse", "rmse_l5")
RULES = ("val", "last", "test_oracle")


def _metrics(rng: np.random.Generator, level: float) -> dict[str, float]:
    srcc = float(np.clip(level + rng.normal(0, 0.01), -1, 1))
    return {"srcc": srcc, "krcc": srcc * 0.8, "plcc": float(np.clip(srcc + rng.normal(0.01, 0.005), -1, 1)),
            "plcc_l4": srcc + 0.012, "plcc_l5": srcc + 0.013, "rmse": float(1 - srcc) / 3,
            "rmse_l5": float(1 - srcc) / 4}


def write_run(results: Path, model: str, dataset: str, split: int, level: float, seed: int,
              config: dict | None = None, n_test: int = 30, epochs: int = 3,
              label_map: tuple[float, float] = (0.01, 0.0)) -> dict:
    """One finished run directory; returns {rule: test metrics} as written.

    ``label_map`` (a, b) is the source's unit = a·label + b (a < 0 for a DMOS scale)."""
    rng = np.random.default_rng(seed)
    config = {"epochs": epochs, "lr": 1e-3, **(config or {})}
    history = []
    for epoch in range(epochs):
        history.append({"epoch": epoch + 1, "lr": 1e-3, "train": {"loss": 1.0 / (epoch + 1), "aux": 0.1},
                        "val": _metrics(rng, level - 0.02 * (epochs - epoch - 1)),
                        "test": _metrics(rng, level - 0.02 * (epochs - epoch - 1)), "time_s": 1.0})
    oracle = {**_metrics(rng, level + 0.01)}
    selection = {"val": {"epoch": epochs, "val": history[-1]["val"], "test": history[-1]["test"]},
                 "last": {"epoch": epochs, "val": history[-1]["val"], "test": history[-1]["test"]},
                 "test_oracle": {"epoch": 2, "val": history[1]["val"], "test": oracle}}
    identity = json.dumps([model, dataset, split, config], sort_keys=True).encode()
    digest = hashlib.sha256(identity).hexdigest()
    record = {
        "schema": "bench-run/2", "model": model, "dataset": dataset, "split": split,
        "split_seed": split, "config": config,
        "run_config": {"seed": 0, "device": "cpu", "amp": "auto", "compile": False, "workers": split},
        "config_hash": digest, "seed": 0, "git": {"commit": "0" * 40, "dirty": False},
        "versions": {}, "device": {"type": "cpu", "name": "cpu"},
        "data": {"root": "/data", "table_sha256": "t" * 64, "splits_sha256": "s" * 64,
                 "n_train": 100, "n_val": 10, "n_test": n_test},
        "timings": {"train_s": 1.0, "eval_s": 1.0, "total_s": 2.0},
        "history": history, "metrics": selection,
        "higher_is_better": {m: not m.startswith("rmse") for m in METRIC_KEYS},
        "suite_tag": config.get("preset"), "status": "complete",
    }
    folder = Path(results) / "runs" / model / dataset / f"split{split}-{digest[:10]}"
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps(record))
    unit = np.linspace(0.05, 0.95, n_test)
    pred = unit + rng.normal(0, 0.1, n_test)
    a, b = label_map
    rows = pd.DataFrame({"image": [f"img{i}.png" for i in range(n_test)], "part": "test",
                         "score": (unit - b) / a, "score_unit": unit})
    for rule in RULES:
        rows[f"pred_{rule}"] = (pred - b) / a
        rows[f"pred_unit_{rule}"] = pred
    rows.to_csv(folder / "predictions.csv", index=False)
    return {rule: selection[rule]["test"] for rule in RULES}


def write_suite(results: Path, cells: dict[tuple[str, str], tuple[float, int]],
                config: dict | None = None) -> pd.DataFrame:
    """Runs for {(model, dataset): (level, n_splits)}; returns the truth, one row per split × rule."""
    rows = []
    for index, ((model, dataset), (level, n_splits)) in enumerate(sorted(cells.items())):
        for split in range(n_splits):
            written = write_run(results, model, dataset, split, level, seed=1000 * index + split,
                                config=config)
            for rule, metrics in written.items():
                rows.append({"model": model, "dataset": dataset, "split": split, "rule": rule,
                             **metrics})
    return pd.DataFrame(rows)
