"""The report's feature-distance table and figures (method.md §5), from the pipeline's
feature-distance stage: ``<results>/features/<student>/<dataset>/`` holds ``summary.csv``
(medians over splits) and ``splits/split<k>/`` (each split's statistics and figures).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from benchmark.report.tables import (DATASET_ORDER, dataset_label, model_label, number,
                                     table_float, table_row, tex_escape)

__all__ = ["FEATURES_GLOB", "feature_summaries", "distance_table", "distance_figures"]

FEATURES_GLOB = "features/*/*/summary.csv"
#: the statistics shown: (summary.csv column, header)
COLUMNS = (("S1_0.2", r"$S_1(0.2)$"), ("Srand_0.2", r"$S_\mathrm{rand}(0.2)$"),
           ("gap_ratio_1", "gap ratio"), ("rho", r"$\rho$"), ("knn_srcc", "kNN SRCC"))


def feature_summaries(results: Path) -> pd.DataFrame:
    """All pairs, cosine distance: one row per dataset × source, in dataset order."""
    frames = [pd.read_csv(path) for path in sorted(Path(results).glob(FEATURES_GLOB))]
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    table = table[(table["relation"] == "all") & (table["distance"] == "cosine")]
    # F0 and the teacher come with every student's folder: the same runs, the same numbers
    table = table.drop_duplicates(["dataset", "source"])
    order = DATASET_ORDER
    rank = table["dataset"].map(lambda d: order.index(d) if d in order else len(order))
    first = (table["source"] != "F0").astype(int)  # F0 heads each dataset's block
    return (table.assign(_rank=rank, _first=first)
            .sort_values(["_rank", "dataset", "_first"], kind="stable")
            .drop(columns=["_rank", "_first"]).reset_index(drop=True))


def _source_label(row) -> str:
    if row["source"] == "F0":
        return rf"F0 (\texttt{{{tex_escape(row['backbone'])}}}, frozen)"
    return model_label(row["source"])


def distance_table(summaries: pd.DataFrame) -> str:
    """Dataset × source rows of the §5 statistics (medians over splits)."""
    header = ["Dataset", "Source", *(label for _, label in COLUMNS), "splits"]
    body = [table_row(header), r"\midrule"]
    previous = None
    for _, row in summaries.iterrows():
        if previous is not None and row["dataset"] != previous:
            body.append(r"\midrule")
        name = dataset_label(row["dataset"]) if row["dataset"] != previous else ""
        body.append(table_row([name, _source_label(row), *(number(row[c]) for c, _ in COLUMNS),
                               str(int(row["n_splits"]))]))
        previous = row["dataset"]
    notes = ["Medians over splits, each split's test images; all pairs, cosine distance of "
             "the crop-averaged features.",
             r"$S_1(0.2)$: share of nearest-neighbour pairs whose quality gap exceeds 0.2 of "
             r"the score range; $S_\mathrm{rand}$: the same share over all pairs.",
             "Gap ratio: mean nearest-neighbour gap over the mean gap of all pairs (1: "
             r"neighbours no closer in quality than random pairs). $\rho$: Spearman "
             "correlation of distance and gap. kNN SRCC: SRCC of each label with the mean of "
             "its 5 nearest neighbours' (leave-one-out).",
             "F0: the frozen backbone the teacher starts from; trained models at their last "
             "epoch."]
    return table_float(body, "ll" + "c" * (len(COLUMNS) + 1),
                       "Feature distance vs quality gap.", "tab:features", notes)


def distance_figures(results: Path) -> list[tuple[Path, str]]:
    """The figures of the first split analysed in each feature-distance folder, captioned."""
    figures = []
    for summary in sorted(Path(results).glob(FEATURES_GLOB)):
        splits = sorted(summary.parent.glob("splits/split*"),
                        key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
        if not splits:
            continue
        first = splits[0]
        table = pd.read_csv(first / "summary.csv")
        dataset = dataset_label(table["dataset"].iloc[0])
        sources = ", ".join(dict.fromkeys(
            "F0" if s == "F0" else model_label(s) for s in table["source"]))
        where = f"{dataset}, split {first.name.removeprefix('split')} test images ({sources})"
        figures += [(first / "distance_gap.pdf",
                     f"Quality gap against feature-distance percentile, {where}."),
                    (first / "gap_share.pdf",
                     rf"Share of 1-NN pairs with gap above $\theta$, {where}; dashed: random "
                     "pairs.")]
    return figures
