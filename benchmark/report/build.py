"""``bench report``: the aggregate summary and cross records → LaTeX tables and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from benchmark.aggregate import CELL_KEYS, aggregate, format_summary, primary_cells
from benchmark.io import atomic_write_text
from benchmark.report.cross import cross_summary
from benchmark.report.plots import report_figures
from benchmark.report.published import load_published
from benchmark.report.tables import build_tables, write_tables

__all__ = ["primary_runs", "build_report"]


def primary_runs(runs: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The per-split rows of the configuration each table shows for a model and dataset."""
    chosen = primary_cells(summary)[CELL_KEYS].drop_duplicates()
    return runs.merge(chosen, on=CELL_KEYS, how="inner")


def build_report(results: Path, out: Path, expected: Mapping[str, int] | int = 10,
                 published: Path | None = None, figures: bool = True) -> dict[str, list[Path]]:
    """Write ``out``/tables/*.tex and ``out``/figures/*.{png,pdf}; returns the paths by kind."""
    tables = aggregate(results, None, expected)
    summary = tables["summary"]
    tex = build_tables(summary, cross_summary(results, expected), load_published(published))
    written = {"tables": write_tables(tex, Path(out) / "tables"), "figures": []}
    # the plain-text result a newcomer reads first (bench report prints it)
    text = Path(out) / "tables" / "summary.txt"
    atomic_write_text(text, format_summary(summary) + "\n")
    written["tables"].append(text)
    if figures:
        written["figures"] = report_figures(primary_runs(tables["runs"], summary),
                                            Path(out) / "figures")
    return written
