"""The feature-distance analysis end to end: feature sources, image selection, CSV and plots.

Sources are a frozen backbone (F0: its pooled pre-logits, e.g. the DeiT-III CLS after the
final LayerNorm) and trained checkpoints (F1 DEIQT, F2 QFM-IQM: the model's ``features()``).
Every source is read on the same images (the test or training part of one split, or all
images), each image's feature being the mean over seeded test crops, so the rows and panels
compare like with like. Extraction needs torch and is imported lazily; the analysis of
extracted features (:func:`distance_report`) is plain numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from benchmark.files import atomic_write_text
from benchmark.report import feature_distance as fd
from benchmark.report.plots import distance_gap_figure, gap_share_figure

__all__ = ["Selection", "select_images", "backbone_features", "checkpoint_features",
           "distance_report", "median_over_splits", "format_summary", "SPLIT_KEYS"]

CURVE_THETAS = np.linspace(0.0, 0.5, 51)
#: what identifies a row of summary.csv apart from its split
SPLIT_KEYS = ["dataset", "backbone", "part", "source", "relation", "distance"]
PRINTED = ["source", "relation", "distance", "n_images", "S1_0.2", "Srand_0.2", "R1_0.2",
           "gap_ratio_1", "rho", "rho_lo", "rho_hi", "rho_closest", "knn_srcc"]


@dataclass(frozen=True)
class Selection:
    """The images analysed: their paths, unit labels and content groups."""

    images: list[str]
    paths: list[Path]
    labels: np.ndarray
    groups: np.ndarray
    split: int | None
    part: str


def select_images(prepared, part: str, split: int | None) -> Selection:
    """``part`` of split ``split`` (test/train/val) of a prepared dataset, or ``all`` images."""
    from benchmark.datasets.splits import load_split_file, split_images

    table = prepared.table.set_index("image", drop=False)
    if part == "all":
        images = list(table["image"])
    else:
        if split is None:
            raise ValueError(f"--part {part} needs a split: pass --split or a checkpoint")
        images = split_images(load_split_file(prepared.split_path), split)[part]
    rows = table.loc[images]
    return Selection(images, [prepared.image_path(i) for i in images],
                     rows["score_unit"].to_numpy(float), rows["group"].astype(str).to_numpy(),
                     split, part)


def _extract(model, selection: Selection, crop: int, n_crops: int, device: str) -> np.ndarray:
    from benchmark.engine import extract, resolve_device

    torch_device = resolve_device(device)
    return np.asarray(extract(model.to(torch_device).eval(), selection.paths, crop, n_crops,
                              torch_device, fn="features"), dtype=np.float64)


def backbone_features(config, selection: Selection, crop: int = 224, n_crops: int = 10,
                      device: str = "cpu") -> np.ndarray:
    """F0: the frozen backbone a model of ``config`` starts from (its timm backbone, weights
    and kwargs, normalised as the model normalises): pooled pre-logits (ViT: the CLS after
    the final LN)."""
    import torch
    from torch import nn

    from benchmark.models import backbone_norm, create_backbone_at

    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = create_backbone_at(config.backbone, config.pretrained, crop,
                                          **getattr(config, "backbone_kwargs", {}))
            mean, std = backbone_norm(self.net, config)
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

        def features(self, images: torch.Tensor) -> torch.Tensor:
            return self.net((images - self.mean) / self.std)

    return _extract(Backbone(), selection, crop, n_crops, device)


def checkpoint_features(path: Path, selection: Selection, device: str = "cpu"):
    """F1/F2: a trained model's ``features()`` (last epoch of a run directory by default),
    with the model's config (F0 is the backbone it started from)."""
    from benchmark.models import eval_crop
    from benchmark.trained import load_trained

    # method.md §5: the last-epoch model, never one chosen on held-out images
    trained = load_trained(Path(path), "last" if Path(path).is_dir() else None)
    config = trained.model.config
    return (_extract(trained.model, selection, eval_crop(config), config.test_crops, device),
            config)


def distance_report(sources: Mapping[str, np.ndarray], selection: Selection, synthetic: bool,
                    out: Path, meta: Mapping[str, Any], n_boot: int = 200,
                    max_pairs: int = fd.MAX_PAIRS, seed: int = 0,
                    log: Callable[[str], None] = print) -> pd.DataFrame:
    """Statistics of every source (per relation and distance), summary.csv and the two plots."""
    relations = ["all"] + (["same", "cross"] if synthetic else [])
    rows, panels, curves = [], {}, {}
    y_hat = fd.normalise_labels(selection.labels)
    for source, features in sources.items():
        if len(features) != len(selection.labels):
            raise ValueError(f"source {source}: {len(features)} features for "
                             f"{len(selection.labels)} images")
        for relation in relations:
            for distance in ("cosine", "l2"):
                keep = relation == "all" and distance == "cosine"
                log(f"{source}: {relation} pairs, {distance} distance")
                row = fd.analyse(features, selection.labels, selection.groups, relation, distance,
                                 max_pairs=max_pairs, n_boot=n_boot, seed=seed, keep_pairs=keep)
                if keep:
                    panels[source] = {**fd.percentile_bins(row["_d"], row["_gaps"]),
                                      "gaps": row["_gaps"]}
                    curves[source] = np.array([fd.gap_share(row["_knn1"][:, None], t)
                                               for t in CURVE_THETAS])
                rows.append({**meta, "split": selection.split, "part": selection.part,
                             "source": source,
                             **{k: v for k, v in row.items() if not k.startswith("_")}})
    summary = pd.DataFrame(rows)
    out = Path(out)
    atomic_write_text(out / "summary.csv",
                      summary.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    title = f"{meta.get('dataset', '')} ({selection.part} images, n = {len(y_hat)})"
    distance_gap_figure(panels, out / "distance_gap", title)
    baseline = np.array([fd.random_gap_share(y_hat, t) for t in CURVE_THETAS])
    gap_share_figure(curves, baseline, CURVE_THETAS, out / "gap_share", title)
    return summary


def median_over_splits(per_split: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset × source × relation × distance: the median of every statistic
    over the splits analysed (as the other tables), with their count in ``n_splits``."""
    keys = [k for k in SPLIT_KEYS if k in per_split.columns]
    numbers = [c for c in per_split.select_dtypes("number").columns if c != "split"]
    grouped = per_split.groupby(keys, sort=False, dropna=False)
    summary = grouped[numbers].median().reset_index()
    summary.insert(len(keys), "n_splits", grouped["split"].nunique().to_numpy())
    return summary


def format_summary(summary: pd.DataFrame) -> str:
    shown = summary[[c for c in PRINTED if c in summary.columns]]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}")
