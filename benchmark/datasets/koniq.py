"""KonIQ-10k: the Konstanz in-the-wild IQA database (Hosu, Lin, Sziranyi, Saupe, 2020).

10,073 YFCC100M photos, cropped and rescaled by the authors to 1024x768 (plus 512x384 and
224x224 copies with the same names), each rated by 93-157 crowd workers.

Original label files, which disagree on what a column called ``MOS`` means:

- ``koniq10k_distributions_sets.csv`` (GitHub ``subpic/koniq``, MIT): ``image_name, c1..c5,
  c_total, MOS, SD, set``. Here ``MOS`` is the z-score-based value on 0-100, ``SD`` is on
  the raw 1-5 scale and ``set`` is the official split (training 7,058 / validation 1,000 /
  test 2,015).
- ``koniq10k_scores_and_distributions.csv`` (the authors' zip): ``image_name, c1..c5,
  c_total, MOS, SD, MOS_zscore``. Here ``MOS`` is the raw 1-5 ACR mean and ``MOS_zscore``
  the 0-100 value. A third-party three-column reduction, ``koniq10k_scores.csv``
  (``image_name, MOS_zscore, MOS``), is read the same way.

The rule used here: a file with a ``MOS_zscore`` column has a raw ``MOS``; a file without
one has a 0-100 ``MOS``; each is range-checked so a swapped file is refused, not rescaled.

Scores: ``score="zscore"`` (default) is the 0-100 value that HyperIQA, DEIQT, TReS and pyiqa
use; its ``score_std`` is left empty because ``SD`` is on the other (1-5) scale and the
z-score mapping is not linear. ``score="raw"`` is the 1-5 mean (LoDa's convention) with
``SD`` as its std where the authors' scores file is present.

Images: ``images="1024x768"`` (default, what HyperIQA/DEIQT load) or ``"512x384"`` (what
pyiqa's ``koniq10k`` reads), or any folder of pre-resized copies with the same names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.datasets.base import Dataset, DatasetError, Source, find_file, standard_table
from benchmark.datasets.generic import numeric_column, read_label_csv

__all__ = ["Koniq", "SETS_FILE", "SCORES_FILES"]

SETS_FILE = "koniq10k_distributions_sets.csv"
#: the authors' scores file first, then the third-party reduction of it
SCORES_FILES = ("koniq10k_scores_and_distributions.csv", "koniq10k_scores.csv")
OFFICIAL_SETS = {"training": "train", "validation": "val", "test": "test"}
ZSCORE_RANGE = (0.0, 100.0)
RAW_RANGE = (1.0, 5.0)
KEY = "image_name"


def _optional_file(root: Path, name: str, dataset: str) -> Path | None:
    try:
        return find_file(root, name, dataset)
    except DatasetError:
        return None


def _check_range(values: pd.Series, bounds: tuple[float, float], what: str, path: Path) -> None:
    low, high = float(values.min()), float(values.max())
    # a 0-100 column that never exceeds 5 holds the raw 1-5 means under the wrong name
    raw_in_disguise = bounds == ZSCORE_RANGE and high <= RAW_RANGE[1]
    if low < bounds[0] or high > bounds[1] or raw_in_disguise:
        raise DatasetError(
            f"koniq: {what} in {path} spans {low:g}..{high:g}, outside "
            f"{bounds[0]:g}..{bounds[1]:g} (a file with the other MOS scale?)"
        )


class Koniq(Dataset):
    """KonIQ-10k with the official split; options choose the image folder and score scale."""

    name = "koniq"
    aliases = ("koniq10k", "koniq-10k", "koniq_10k")
    title = "KonIQ-10k"
    label = "KonIQ"
    kind = "authentic"
    score_type = "MOS"
    higher_is_better = True
    score_range = ZSCORE_RANGE
    expected_images = 10073
    expected_groups = 10073
    has_official_split = True
    sources = (
        Source(
            "KonIQ-10k 1024x768 images",
            "https://datasets.vqa.mmsp-kn.de/archives/koniq10k_1024x768.zip",
            "direct",
            filename="koniq10k_1024x768.zip",
            note="extracts to 1024x768/; size not verified",
        ),
        Source(
            "KonIQ-10k 512x384 images",
            "https://datasets.vqa.mmsp-kn.de/archives/koniq10k_512x384.zip",
            "direct",
            filename="koniq10k_512x384.zip",
            note="extracts to 512x384/ (images='512x384'); size not verified",
        ),
        Source(
            "KonIQ-10k scores and distributions",
            "https://datasets.vqa.mmsp-kn.de/archives/koniq10k_scores_and_distributions.zip",
            "direct",
            filename="koniq10k_scores_and_distributions.zip",
            note="koniq10k_scores_and_distributions.csv: MOS on 1-5, MOS_zscore on 0-100",
        ),
        Source(
            "KonIQ-10k official sets (subpic/koniq, MIT)",
            "https://raw.githubusercontent.com/subpic/koniq/master/metadata/"
            "koniq10k_distributions_sets.csv",
            "direct",
            filename=SETS_FILE,
            sha256="d0bd1ad54a60bc36fe172049e46ac76c83554e50ab84acebfd47b82b3e698a0a",
            size_bytes=1147194,
            note="hash of the GitHub file; the branch name in the URL is not verified",
        ),
        Source("KonIQ-10k project page", "https://database.mmsp-kn.de/koniq-10k-database.html",
               "manual", note="project page; the archives above are its direct links"),
        Source("KonIQ-10k on OSF", "https://osf.io/hcsdy/", "mirror"),
        Source(
            "pyiqa Hugging Face mirror",
            "https://huggingface.co/datasets/chaofengc/IQA-PyTorch-Datasets",
            "mirror",
            filename="koniq10k.tgz",
            note="6.35 GB; koniq10k/512x384 and koniq10k/1024x768 (inferred)",
        ),
    )
    layout = (
        "1024x768/<id>.jpg                        10,073 images (images='1024x768')\n"
        "512x384/<id>.jpg                         optional, same names (images='512x384')\n"
        "koniq10k_distributions_sets.csv          official split + 0-100 MOS (from GitHub)\n"
        "koniq10k_scores_and_distributions.csv    optional: raw 1-5 MOS, SD, MOS_zscore"
    )
    citation = (
        "V. Hosu, H. Lin, T. Sziranyi, D. Saupe, \"KonIQ-10k: An ecologically valid database "
        "for deep learning of blind image quality assessment,\" IEEE TIP 29, 2020."
    )
    license = (
        "metadata: MIT (Copyright (c) 2019 Vlad Hosu); images: YFCC100M, per-image licences "
        "vary (not verified)"
    )

    def __init__(self, images: str = "1024x768", score: str = "zscore") -> None:
        if score not in ("zscore", "raw"):
            raise DatasetError(f"koniq: score must be 'zscore' or 'raw', not {score!r}")
        if not images or Path(images).is_absolute() or ".." in Path(images).parts:
            raise DatasetError(f"koniq: images must be a folder under the root, not {images!r}")
        self.images = images
        self.score = score
        if score == "raw":
            self.score_range = RAW_RANGE
        self.label_file = ""  # the file and column parse read the score from

    def describe(self) -> dict:
        return {**super().describe(), "label": self.score, "images": self.images,
                "label_file": self.label_file}

    def parse(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        sets_path = _optional_file(root, SETS_FILE, self.name)
        scores_path = next(
            (p for p in (_optional_file(root, n, self.name) for n in SCORES_FILES) if p), None
        )
        if sets_path is None and scores_path is None:
            raise DatasetError(
                f"koniq: neither {SETS_FILE} nor {' / '.join(SCORES_FILES)} found under {root}"
            )
        if self.score == "raw" and scores_path is None:
            raise DatasetError(
                f"koniq: score='raw' needs {SCORES_FILES[0]} (the 1-5 MOS) under {root}"
            )
        sets = self._read_sets(sets_path) if sets_path else None
        scores = self._read_scores(scores_path) if scores_path else None
        base = sets if sets is not None else scores
        if sets is not None and scores is not None:
            scores = self._align(sets, scores, sets_path, scores_path)
        rows = pd.DataFrame({"image": base[KEY].to_numpy()})
        if self.score == "raw":
            rows["score"] = scores["raw"].to_numpy()
            rows["score_std"] = scores["sd"].to_numpy()
            self.label_file = f"{scores_path.name}:MOS"
        else:
            rows["score"] = base["zscore"].to_numpy()
            self.label_file = (f"{SETS_FILE}:MOS" if sets is not None
                               else f"{scores_path.name}:MOS_zscore")
        if sets is not None:
            rows["official_split"] = sets["set"].to_numpy()
        label_dir = (sets_path or scores_path).parent
        folder = next((d / self.images for d in (label_dir, root) if (d / self.images).is_dir()),
                      label_dir / self.images)
        prefix = folder.relative_to(root)
        rows["image"] = [(prefix / name).as_posix() for name in rows["image"]]
        rows["group"] = rows["image"]
        return standard_table(self, rows)

    def _read_sets(self, path: Path) -> pd.DataFrame:
        frame = read_label_csv(path, self.name, [KEY, "MOS", "set"], dtype={KEY: str, "set": str})
        if "MOS_zscore" in frame.columns:
            raise DatasetError(f"koniq: {path} has MOS_zscore: a scores file, not the sets file")
        zscore = numeric_column(frame, "MOS", KEY, path, self.name)
        _check_range(zscore, ZSCORE_RANGE, "MOS (expected 0-100)", path)
        split = frame["set"].str.strip().map(OFFICIAL_SETS)
        if split.isna().any():
            row = split.isna().to_numpy().nonzero()[0][0]
            raise DatasetError(
                f"koniq: {path} has set {frame['set'].iloc[row]!r} for {frame[KEY].iloc[row]} "
                f"(expected {', '.join(OFFICIAL_SETS)})"
            )
        return pd.DataFrame({KEY: frame[KEY].str.strip(), "zscore": zscore, "set": split})

    def _read_scores(self, path: Path) -> pd.DataFrame:
        frame = read_label_csv(path, self.name, [KEY, "MOS_zscore", "MOS"], dtype={KEY: str})
        zscore = numeric_column(frame, "MOS_zscore", KEY, path, self.name)
        raw = numeric_column(frame, "MOS", KEY, path, self.name)
        _check_range(zscore, ZSCORE_RANGE, "MOS_zscore (expected 0-100)", path)
        _check_range(raw, RAW_RANGE, "MOS (expected the raw 1-5 mean)", path)
        sd = (numeric_column(frame, "SD", KEY, path, self.name) if "SD" in frame.columns
              else pd.Series(np.nan, index=frame.index))
        return pd.DataFrame({KEY: frame[KEY].str.strip(), "zscore": zscore, "raw": raw, "sd": sd})

    def _align(self, sets: pd.DataFrame, scores: pd.DataFrame, sets_path: Path,
               scores_path: Path) -> pd.DataFrame:
        """The scores rows in the sets file's order, after checking both list the same images."""
        if scores[KEY].duplicated().any():
            raise DatasetError(
                f"koniq: {scores_path} lists {scores[KEY][scores[KEY].duplicated()].iloc[0]} twice"
            )
        indexed = scores.set_index(KEY)
        only_sets = sets.loc[~sets[KEY].isin(indexed.index), KEY]
        only_scores = indexed.index.difference(sets[KEY])
        if len(only_sets) or len(only_scores):
            example = only_sets.iloc[0] if len(only_sets) else only_scores[0]
            raise DatasetError(
                f"koniq: {sets_path.name} and {scores_path} list different images "
                f"({len(only_sets)} only in the sets file, {len(only_scores)} only in the scores "
                f"file, e.g. {example})"
            )
        aligned = indexed.loc[sets[KEY]].reset_index()
        gap = np.abs(aligned["zscore"].to_numpy() - sets["zscore"].to_numpy())
        if gap.max() > 1e-4:
            worst = int(gap.argmax())
            raise DatasetError(
                f"koniq: 0-100 MOS of {sets[KEY].iloc[worst]} differs between {sets_path.name} "
                f"and {scores_path} by {gap[worst]:.4g}"
            )
        return aligned
