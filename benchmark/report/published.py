"""Published numbers (``benchmark/reference/published.csv``), one row per cell with its sources.

Cells that are not in the file are unknown and stay empty in every table; nothing here
fills a gap. ``sources`` holds short codes (``X;W``) whose meaning is :data:`SOURCES`;
``citation`` keeps the full wording of where each number was read.
"""

from __future__ import annotations

from importlib import resources
from io import StringIO
from pathlib import Path

import pandas as pd

__all__ = ["SOURCES", "load_published", "lookup"]

#: what each source code stands for, as printed in table footnotes
SOURCES = {
    "W": "wizwand.com benchmark listings of QFM-IQM and DEIQT (not the papers' own tables)",
    "X": "DR.Experts (AAAI 2026), Tables 1-2: a later comparison table",
    "V1": "arXiv 2312.06158v1 abstract (first preprint; not confirmed for the final version)",
    "DA": "DEIQT abstract (AAAI 2023)",
    "N": "third-party comparison tables (Life-IQA and LQMamba summaries)",
}
COLUMNS = ["model", "paper_model", "dataset", "metric", "value", "protocol", "sources", "citation"]


def load_published(path: Path | None = None) -> pd.DataFrame:
    """The reference table, checked: known columns and source codes, a citation on every row."""
    if path is None:
        text = resources.files("benchmark").joinpath("reference/published.csv").read_text()
        origin = "benchmark/reference/published.csv"
    else:
        text, origin = Path(path).read_text(), str(path)
    table = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{origin}: no {missing[0]!r} column")
    for row in table.itertuples():
        if not row.citation.strip():
            raise ValueError(f"{origin}: {row.model} {row.dataset} {row.metric} has no citation")
        unknown = [code for code in row.sources.split(";") if code not in SOURCES]
        if unknown:
            raise ValueError(f"{origin}: unknown source code {unknown[0]!r} "
                             f"({row.model} {row.dataset} {row.metric})")
    table["value"] = pd.to_numeric(table["value"], errors="raise")
    duplicated = table.duplicated(["model", "dataset", "metric"])
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise ValueError(f"{origin}: {first.model} {first.dataset} {first.metric} listed twice")
    return table


def lookup(published: pd.DataFrame, model: str, dataset: str,
           metric: str) -> tuple[float, list[str]] | None:
    """(value, source codes) of one published cell, or None where it is unknown."""
    hit = published[(published["model"] == model) & (published["dataset"] == dataset)
                    & (published["metric"] == metric)]
    if hit.empty:
        return None
    return float(hit["value"].iloc[0]), hit["sources"].iloc[0].split(";")
