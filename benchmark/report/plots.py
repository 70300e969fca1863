"""Figures as PNG and PDF, drawn on Agg figures (no display, no pyplot state).

Report figures: predicted vs MOS per model and dataset (test images of every split pooled,
validation-selected epoch), per-split SRCC boxes per model, and training curves from each
record's history. Feature-distance figures: Δ against the distance percentile per source,
and S₁(θ) against θ beside the random-pair baseline.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from benchmark.files import atomic_write_bytes
from benchmark.records import load_record
from benchmark.report.tables import DATASET_ORDER, dataset_display, model_display, ordered_models

__all__ = ["save_figure", "scatter_figures", "box_figure", "curve_figures", "distance_gap_figure",
           "gap_share_figure", "report_figures", "figure_caption"]

FORMATS = ("png", "pdf")
THETA_LINE = 0.2


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text))


def save_figure(figure: Figure, stem: Path) -> list[Path]:
    """``stem``.png and ``stem``.pdf, each written atomically."""
    paths = []
    for fmt in FORMATS:
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, dpi=150, bbox_inches="tight")
        path = Path(stem).with_suffix(f".{fmt}")
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def _label(model: str, dataset: str) -> str:
    return f"{model_display(model)} on {dataset_display(dataset)}"


def scatter_figures(runs: pd.DataFrame, out: Path, rule: str = "val") -> list[Path]:
    """Predicted (unit scale) vs MOS (unit) of the test images of every split, one per cell."""
    paths = []
    for (model, dataset), group in runs[runs["rule"] == rule].groupby(["model", "dataset"]):
        frames = []
        for directory in group["dir"]:
            table = pd.read_csv(Path(directory) / "predictions.csv")
            frames.append(table[table["part"] == "test"])
        points = pd.concat(frames)
        x, y = points["score_unit"].to_numpy(float), points[f"pred_unit_{rule}"].to_numpy(float)
        figure = Figure(figsize=(4.2, 4.0))
        ax = figure.subplots()
        if len(x) > 5000:
            ax.hexbin(x, y, gridsize=50, bins="log", cmap="viridis", mincnt=1)
        else:
            ax.scatter(x, y, s=6, alpha=0.35, linewidths=0)
        low, high = min(x.min(), np.nanmin(y)), max(x.max(), np.nanmax(y))
        ax.plot([low, high], [low, high], ls="--", lw=0.8, color="0.4")
        ax.set(xlabel="MOS (unit scale)", ylabel="prediction (unit scale)",
               title=f"{_label(model, dataset)}\nmedian SRCC {group['srcc'].median():.3f}, "
                     f"{len(group)} splits")
        paths += save_figure(figure, Path(out) / f"scatter_{_slug(model)}_{_slug(dataset)}")
    return paths


def box_figure(runs: pd.DataFrame, out: Path, rule: str = "val",
               metric: str = "srcc") -> list[Path]:
    """One panel per dataset: the per-split metric of each model."""
    chosen = runs[runs["rule"] == rule]
    if chosen.empty:
        return []
    datasets = sorted(chosen["dataset"].unique(), key=lambda d: (
        DATASET_ORDER.index(d) if d in DATASET_ORDER else len(DATASET_ORDER), d))
    columns = min(4, len(datasets))
    rows = -(-len(datasets) // columns)
    figure = Figure(figsize=(3.2 * columns, 3.0 * rows))
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for ax, dataset in zip(axes, datasets):
        data = chosen[chosen["dataset"] == dataset]
        order = ordered_models(data["model"])
        sns.boxplot(data=data, x="model", y=metric, order=order, ax=ax, color="0.85", fliersize=0)
        sns.stripplot(data=data, x="model", y=metric, order=order, ax=ax, size=3, color="0.2")
        ax.set_xticks(range(len(order)), [model_display(m) for m in order], rotation=45,
                      ha="right")
        ax.set(title=dataset_display(dataset), xlabel="", ylabel=metric.upper())
    for ax in axes[len(datasets):]:
        ax.set_visible(False)
    figure.tight_layout()
    return save_figure(figure, Path(out) / f"box_{metric}_{rule}")


def curve_figures(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Training loss and val/test SRCC per epoch, one line per split, one figure per cell."""
    paths = []
    for (model, dataset), group in runs[runs["rule"] == "val"].groupby(["model", "dataset"]):
        figure = Figure(figsize=(8.0, 3.2))
        loss_ax, srcc_ax = figure.subplots(1, 2)
        for split, directory in zip(group["split"], group["dir"]):
            history = load_record(Path(directory) / "record.json")["history"]
            epochs = [h["epoch"] for h in history]
            colour = f"C{split % 10}"
            loss_ax.plot(epochs, [h["train"].get("loss", np.nan) for h in history], color=colour,
                         lw=1, label=f"split {split}")
            srcc_ax.plot(epochs, [h["val"].get("srcc", np.nan) for h in history], color=colour,
                         lw=1)
            srcc_ax.plot(epochs, [h["test"].get("srcc", np.nan) for h in history], color=colour,
                         lw=1, ls=":")
        loss_ax.set(xlabel="epoch", ylabel="training loss", title=_label(model, dataset))
        srcc_ax.set(xlabel="epoch", ylabel="SRCC", title="validation (solid), test (dotted)")
        for ax in (loss_ax, srcc_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(group) <= 10:
            loss_ax.legend(fontsize=6)
        figure.tight_layout()
        paths += save_figure(figure, Path(out) / f"curves_{_slug(model)}_{_slug(dataset)}")
    return paths


def report_figures(runs: pd.DataFrame, out: Path) -> list[Path]:
    return [*scatter_figures(runs, out), *box_figure(runs, out), *curve_figures(runs, out)]


def figure_caption(stem: str) -> str:
    """One line saying what a report figure shows, from the name this module gave it (LaTeX)."""
    from benchmark.report.tables import tex_escape

    kind, _, rest = stem.partition("_")
    if kind == "box":
        metric, _, rule = rest.partition("_")
        return (f"Per-split test {tex_escape(metric.upper())} of each model, epoch chosen by "
                f"rule {tex_escape(rule)}.")
    model, _, dataset = rest.partition("_")
    cell = tex_escape(_label(model, dataset))
    if kind == "scatter":
        return (f"Prediction against MOS (unit scale), {cell}: the test images of every split, "
                "validation-selected epoch.")
    if kind == "curves":
        return f"Training loss and validation/test SRCC per epoch, {cell}, one line per split."
    return tex_escape(stem)


def distance_gap_figure(panels: Mapping[str, Mapping[str, np.ndarray]], stem: Path,
                        title: str = "") -> list[Path]:
    """One panel per source: hexbin (log counts) of Δ over the distance percentile, with the
    binned median and 90th percentile of Δ and a dashed line at θ = 0.2.

    ``panels`` maps a source name to :func:`feature_distance.percentile_bins` output plus
    ``gaps`` (the Δ of each pair).
    """
    figure = Figure(figsize=(3.6 * len(panels), 3.4))
    axes = np.atleast_1d(figure.subplots(1, len(panels), sharey=True, squeeze=False)).ravel()
    for ax, (source, data) in zip(axes, panels.items()):
        collection = ax.hexbin(data["percentile"], data["gaps"], gridsize=40, norm=LogNorm(),
                               cmap="Greys", mincnt=1, linewidths=0)
        ax.plot(data["centres"], data["median"], color="C0", lw=1.5, label="median")
        ax.plot(data["centres"], data["p90"], color="C3", lw=1.5, label="90th percentile")
        ax.axhline(THETA_LINE, ls="--", color="0.3", lw=0.8)
        ax.set(xlabel="distance percentile", title=source, xlim=(0, 100))
        figure.colorbar(collection, ax=ax, label="pairs")
    axes[0].set_ylabel(r"quality gap $\Delta$")
    axes[0].legend(fontsize=7, loc="upper left")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, stem)


def gap_share_figure(curves: Mapping[str, np.ndarray], baseline: np.ndarray, thetas: np.ndarray,
                     stem: Path, title: str = "") -> list[Path]:
    """S₁(θ) of each source against θ, with the random-pair share as the reference curve."""
    figure = Figure(figsize=(4.4, 3.4))
    ax = figure.subplots()
    for index, (source, values) in enumerate(curves.items()):
        ax.plot(thetas, values, color=f"C{index}", lw=1.5, label=source)
    ax.plot(thetas, baseline, color="0.3", ls="--", lw=1.2, label="random pairs")
    ax.set(xlabel=r"$\theta$ (fraction of the score range)",
           ylabel=r"$S_1(\theta)$: share of 1-NN pairs with $\Delta > \theta$", title=title,
           ylim=(0, 1))
    ax.legend(fontsize=7)
    figure.tight_layout()
    return save_figure(figure, stem)
