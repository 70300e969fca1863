"""``bench report``: the aggregate summary, cross records and feature-distance summaries →
LaTeX tables, figures and one document holding them all (report.tex, report.pdf)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from benchmark.report.aggregate import CELL_KEYS, aggregate, format_summary, primary_cells
from benchmark.files import atomic_write_text
from benchmark.report.cross import cross_summary
from benchmark.report.distance_table import distance_figures, distance_table, feature_summaries
from benchmark.report.document import Section, write_document
from benchmark.report.plots import figure_caption, report_figures
from benchmark.report.published import load_published
from benchmark.report.tables import build_tables, write_tables

__all__ = ["primary_runs", "build_report"]


def primary_runs(runs: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The per-split rows of the configuration each table shows for a model and dataset."""
    chosen = primary_cells(summary)[CELL_KEYS].drop_duplicates()
    return runs.merge(chosen, on=CELL_KEYS, how="inner")


def build_report(results: Path, out: Path, expected: Mapping[str, int] | int = 10,
                 published: Path | None = None, figures: bool = True
                 ) -> tuple[dict[str, list[Path]], str]:
    """Write ``out``/tables/*.tex, ``out``/figures/*.{png,pdf} and ``out``/report.tex (+ .pdf
    with pdflatex); returns the paths by kind and a line on the PDF."""
    tables = aggregate(results, None, expected)
    summary = tables["summary"]
    tex = build_tables(summary, cross_summary(results, expected), load_published(published))
    distances = feature_summaries(results)
    if not distances.empty:
        tex["features"] = distance_table(distances)
    written = {"tables": write_tables(tex, Path(out) / "tables"), "figures": []}
    sections = [Section(path) for path in written["tables"]]
    # the plain-text result a newcomer reads first (bench report prints it)
    text = Path(out) / "tables" / "summary.txt"
    atomic_write_text(text, format_summary(summary) + "\n")
    written["tables"].append(text)
    if figures:
        written["figures"] = report_figures(primary_runs(tables["runs"], summary),
                                            Path(out) / "figures")
        sections += [Section(path, figure_caption(path.stem))
                     for path in written["figures"] if path.suffix == ".pdf"]
        sections += [Section(path, caption) for path, caption in distance_figures(results)]
    written["document"], message = write_document(sections, Path(out))
    return written, message
