"""Run records → tidy tables: per-split rows, per-cell summaries, paired model comparisons.

A *cell* is one model × dataset × configuration × selection rule. Its configuration
identity (``config_id``) hashes what changes a result apart from the split: the model
config, the result-relevant run settings and the data fingerprint. Runs of different
configurations therefore never mix, and a rerun with ``workers=4`` instead of ``0`` does
not start a new cell. Statistics are taken over splits; a cell with fewer finished splits
than expected keeps its numbers and is flagged (``complete = False``), never dropped.
"""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.files import atomic_write_bytes, atomic_write_text
from benchmark.metrics import HIGHER_IS_BETTER
from benchmark.records import SELECTION_RULES, config_hash, iter_records

__all__ = [
    "METRICS",
    "CELL_KEYS",
    "config_identity",
    "runs_table",
    "runs_frame",
    "bootstrap_median_ci",
    "summarize",
    "main_rank",
    "primary_cells",
    "paired_tests",
    "aggregate",
    "write_table",
    "parse_expected",
    "format_summary",
]

METRICS = tuple(HIGHER_IS_BETTER)
CELL_KEYS = ["model", "dataset", "config_id", "rule"]
#: run settings that change a result (engine.RunConfig.RESULT_FIELDS); the rest is plumbing
RESULT_RUN_FIELDS = ("seed", "amp", "compile")
RUN_COLUMNS = ["model", "dataset", "config_id", "rule", "split", "epoch", "preset", "suite_tag",
               "n_test", "config_hash", "dir", "precision_differs", *METRICS,
               *(f"val_{m}" for m in METRICS)]
#: presets that are a model's main configuration rather than an ablation (QFM-IQM's default)
MAIN_PRESETS = ("full",)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def config_identity(record: Mapping[str, Any]) -> str:
    """Hash of everything that defines a cell: config, result run settings, data; not the split."""
    identity = record.get("identity") or {}
    run = identity.get("run")
    if run is None:
        run_config = record.get("run_config") or {}
        run = {k: run_config[k] for k in RESULT_RUN_FIELDS if k in run_config}
    data = record.get("data") or {}
    return config_hash({
        "model": record["model"],
        "dataset": record["dataset"],
        "config": record["config"],
        "run": run,
        "data": {k: data.get(k) for k in ("table_sha256", "splits_sha256")},
    })[:12]


def _rules(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(table rule, record selection) pairs. A paper-protocol run has no validation part and
    reports its original's test-set rule: one row, rule ``paper``, apart from the honest ones."""
    if record.get("protocol", "honest") == "paper":
        return [("paper", "test_oracle")]
    return [(rule, rule) for rule in SELECTION_RULES]


def runs_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per record × selection rule: test metrics, and the same on val as ``val_*``."""
    rows = []
    for record in records:
        cell = config_identity(record)
        preset = (record.get("config") or {}).get("preset")
        for rule, source in _rules(record):
            chosen = record["metrics"].get(source)
            if chosen is None:
                continue
            row = {
                "model": record["model"], "dataset": record["dataset"], "config_id": cell,
                "rule": rule, "split": int(record["split"]), "epoch": chosen.get("epoch"),
                "preset": preset, "suite_tag": record.get("suite_tag"),
                "n_test": (record.get("data") or {}).get("n_test"),
                "config_hash": record.get("config_hash"), "dir": record.get("_dir"),
                # trained in another precision than its original (fp32 vs mixed)
                "precision_differs": bool((record.get("precision") or {}).get("differs")),
            }
            row.update({m: _number(chosen.get("test", {}).get(m)) for m in METRICS})
            row.update({f"val_{m}": _number(chosen.get("val", {}).get(m)) for m in METRICS})
            rows.append(row)
    return runs_frame(rows)


def runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Per-split rows as a sorted table; one configuration may hold each split only once."""
    table = pd.DataFrame(rows, columns=RUN_COLUMNS)
    duplicated = table.duplicated(CELL_KEYS + ["split"], keep=False)
    if duplicated.any():
        dirs = table.loc[duplicated, "dir"].drop_duplicates().tolist()
        raise ValueError(f"two records of one configuration and split: {dirs[0]} and {dirs[-1]}")
    return table.sort_values(CELL_KEYS + ["split"], kind="stable").reset_index(drop=True)


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def bootstrap_median_ci(values, n_resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the median (same seed for every cell: order-free)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, size=(n_resamples, values.size), replace=True), axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(medians, [tail, 100.0 - tail])
    return float(low), float(high)


def parse_expected(values: Iterable[str], default: int = 10) -> dict[str, int]:
    """``["10", "koniq=1"]`` → {"*": 10, "koniq": 1}: expected splits, per dataset if named."""
    expected = {"*": default}
    for value in values:
        name, _, count = value.rpartition("=")
        try:
            number = int(count)
        except ValueError:
            raise ValueError(f"expected splits must be N or DATASET=N, got {value!r}") from None
        if number < 1:
            raise ValueError(f"expected splits must be at least 1, got {value!r}")
        expected[name or "*"] = number
    return expected


def summarize(runs: pd.DataFrame, expected: Mapping[str, int] | int = 10) -> pd.DataFrame:
    """One row per cell × metric: median, mean, std, bootstrap CI of the median, counts."""
    if isinstance(expected, int):
        expected = {"*": expected}
    rows = []
    for key, group in runs.groupby(CELL_KEYS, sort=True):
        cell = dict(zip(CELL_KEYS, key))
        want = int(expected.get(cell["dataset"], expected.get("*", 10)))
        splits = ",".join(str(s) for s in sorted(group["split"]))
        differs = bool(group["precision_differs"].astype(bool).any()) \
            if "precision_differs" in group else False
        for metric in METRICS:
            values = group[metric].to_numpy(float)
            finite = values[np.isfinite(values)]
            low, high = bootstrap_median_ci(finite)
            rows.append({
                **cell, "preset": group["preset"].iloc[0], "suite_tag": group["suite_tag"].iloc[0],
                "metric": metric, "higher_is_better": HIGHER_IS_BETTER[metric],
                "median": float(np.median(finite)) if finite.size else float("nan"),
                "mean": float(finite.mean()) if finite.size else float("nan"),
                "std": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
                "ci_low": low, "ci_high": high,
                "n": int(finite.size), "n_nan": int(values.size - finite.size),
                "expected": want, "complete": bool(finite.size >= want), "splits": splits,
                "precision_differs": differs,
            })
    columns = [*CELL_KEYS, "preset", "suite_tag", "metric", "higher_is_better", "median", "mean",
               "std", "ci_low", "ci_high", "n", "n_nan", "expected", "complete", "splits",
               "precision_differs"]
    return pd.DataFrame(rows, columns=columns)


def main_rank(n_splits: int, preset: Any, config_id: str,
              main_presets: tuple[str, ...] = MAIN_PRESETS) -> tuple:
    """Sort key of a configuration for the main tables: the smallest wins.

    Configurations without a preset, or with a main preset (QFM-IQM's default ``full``), come
    before ablation presets; then the one with most finished splits; then the first id, so the
    choice never depends on file order.
    """
    missing = preset is None or (isinstance(preset, float) and math.isnan(preset)) or preset == ""
    return (not (missing or preset in main_presets), -int(n_splits), str(config_id))


def primary_cells(summary: pd.DataFrame,
                  main_presets: tuple[str, ...] = MAIN_PRESETS) -> pd.DataFrame:
    """The summary cut to one configuration per model × dataset × rule (:func:`main_rank`)."""
    if summary.empty:
        return summary
    counts = summary[summary["metric"] == "srcc"][CELL_KEYS + ["n", "preset"]].copy()
    counts["rank"] = [main_rank(n, p, c, main_presets)
                      for n, p, c in zip(counts["n"], counts["preset"], counts["config_id"])]
    counts = counts.sort_values("rank", kind="stable")
    chosen = counts.drop_duplicates(["model", "dataset", "rule"])[CELL_KEYS]
    return summary.merge(chosen, on=CELL_KEYS, how="inner")


def paired_tests(runs: pd.DataFrame, metrics: Iterable[str] = ("srcc", "plcc")) -> pd.DataFrame:
    """Wilcoxon signed-rank tests between every two cells of a dataset and rule, on their
    shared splits."""
    rows = []
    for (dataset, rule), group in runs.groupby(["dataset", "rule"], sort=True):
        cells = sorted(group.groupby(["model", "config_id"]).groups)
        for (model_a, config_a), (model_b, config_b) in itertools.combinations(cells, 2):
            a = group[(group["model"] == model_a) & (group["config_id"] == config_a)]
            b = group[(group["model"] == model_b) & (group["config_id"] == config_b)]
            joined = a.merge(b, on="split", suffixes=("_a", "_b"))
            for metric in metrics:
                pairs = joined[[f"{metric}_a", f"{metric}_b"]].dropna().to_numpy(float)
                diff = pairs[:, 0] - pairs[:, 1] if len(pairs) else np.zeros(0)
                statistic, p_value = _wilcoxon(diff)
                better = diff > 0 if HIGHER_IS_BETTER[metric] else diff < 0
                rows.append({
                    "dataset": dataset, "rule": rule, "metric": metric,
                    "model_a": model_a, "config_a": config_a,
                    "model_b": model_b, "config_b": config_b,
                    "n_pairs": int(len(diff)),
                    "median_diff": float(np.median(diff)) if len(diff) else float("nan"),
                    "mean_diff": float(diff.mean()) if len(diff) else float("nan"),
                    "wins_a": int(better.sum()), "ties": int((diff == 0).sum()),
                    "statistic": statistic, "p_value": p_value,
                })
    columns = ["dataset", "rule", "metric", "model_a", "config_a", "model_b", "config_b",
               "n_pairs", "median_diff", "mean_diff", "wins_a", "ties", "statistic", "p_value"]
    return pd.DataFrame(rows, columns=columns)


def _wilcoxon(diff: np.ndarray) -> tuple[float, float]:
    # with every difference zero the test is undefined (scipy drops zeros and is left with none)
    if len(diff) == 0 or not np.any(diff != 0):
        return float("nan"), float("nan")
    result = stats.wilcoxon(diff)
    return float(result.statistic), float(result.pvalue)


def write_table(table: pd.DataFrame, stem: Path) -> list[Path]:
    """``stem``.csv and ``stem``.parquet, each written atomically."""
    stem = Path(stem)
    csv_path, parquet_path = stem.with_suffix(".csv"), stem.with_suffix(".parquet")
    atomic_write_text(csv_path, table.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    buffer = io.BytesIO()
    table.to_parquet(buffer, engine="pyarrow", index=False)
    atomic_write_bytes(parquet_path, buffer.getvalue())
    return [csv_path, parquet_path]


def aggregate(results: Path, out: Path | None = None,
              expected: Mapping[str, int] | int = 10) -> dict[str, pd.DataFrame]:
    """Read every record under ``results``; write runs, summary and wilcoxon tables to ``out``."""
    results = Path(results)
    runs = runs_table(iter_records(results))
    tables = {"runs": runs, "summary": summarize(runs, expected), "wilcoxon": paired_tests(runs)}
    if out is not None:
        for name, table in tables.items():
            write_table(table, Path(out) / name)
    return tables


def format_summary(summary: pd.DataFrame, rule: str = "val") -> str:
    """The newcomer's result: one line per dataset × model, median test SRCC and PLCC over
    the finished splits (``*`` = fewer splits than expected)."""
    chosen = primary_cells(summary)
    chosen = chosen[(chosen["rule"] == rule) & chosen["metric"].isin(["srcc", "plcc"])]
    if chosen.empty:
        return f"no {rule}-selected results"
    rows = []
    for (dataset, model), cell in chosen.groupby(["dataset", "model"], sort=True):
        value = cell.set_index("metric")
        mark = "" if bool(value.loc["srcc", "complete"]) else "*"
        rows.append({"dataset": dataset, "model": model,
                     "SRCC": f"{value.loc['srcc', 'median']:.3f}",
                     "PLCC": f"{value.loc['plcc', 'median']:.3f}",
                     "splits": f"{int(value.loc['srcc', 'n'])}{mark}"})
    table = pd.DataFrame(rows).to_string(index=False)
    return (f"median over splits of the test SRCC/PLCC ({rule}-selected epoch; "
            f"* = fewer splits than expected)\n{table}")

