"""The dataset declaration every dataset module fills in, and the standard table.

A dataset module declares plain facts (name, kind, score direction and range, counts,
sources, layout) as class attributes of a :class:`Dataset` subclass and implements
``parse(root)``, which reads the ORIGINAL label files under ``root`` and returns the
standard table. Everything downstream (verify, prepare, splits, loaders) works on that
table and never on a dataset's own format.
"""

from __future__ import annotations

import os

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import pandas as pd

from benchmark.errors import DatasetError

__all__ = [
    "STANDARD_COLUMNS",
    "DatasetError",
    "Source",
    "Dataset",
    "standard_table",
    "find_file",
    "resolve_names",
]

#: Columns of the standard table, in order. ``image`` is relative to the dataset root.
STANDARD_COLUMNS = [
    "image",  # path relative to the dataset root, as it is on disk
    "score",  # the raw label as in the original file
    "score_unit",  # the label mapped to [0, 1], higher = better
    "score_std",  # per-image spread of the ratings where the dataset gives one, else NaN
    "group",  # content group: the reference for synthetic sets, the image for authentic ones
    "distortion",  # distortion type where one exists, else ""
    "level",  # distortion level where one exists, else NaN
    "official_split",  # train/val/test where the dataset defines one, else ""
]


@dataclass(frozen=True)
class Source:
    """Where a dataset's files come from.

    ``access`` is ``direct`` (a plain download, possibly with a known sha256),
    ``manual`` (form, password or a host that blocks scripts: the user places the file),
    or ``mirror`` (a third-party copy, listed for information; never fetched silently).
    """

    name: str
    url: str
    access: Literal["direct", "manual", "mirror"]
    filename: str = ""
    sha256: str | None = None
    size_bytes: int | None = None
    note: str = ""


PYIQA_DATASETS_URL = "https://huggingface.co/datasets/chaofengc/IQA-PyTorch-Datasets"


def pyiqa_mirror(filename: str, size_bytes: int | None, note: str) -> Source:
    """pyiqa's Hugging Face archive of a dataset: listed for information, never fetched."""
    return Source(name="pyiqa mirror", url=PYIQA_DATASETS_URL, access="mirror",
                  filename=filename, size_bytes=size_bytes, note=note)


class Dataset:
    """Declaration of one IQA dataset. Subclass, fill the class attributes, implement parse."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    title: ClassVar[str] = ""
    #: the short name tables and figures show (KADID-10k, LIVEC)
    label: ClassVar[str] = ""
    kind: ClassVar[Literal["synthetic", "authentic"]]
    score_type: ClassVar[str]  # "MOS" or "DMOS" (as the original file names it)
    higher_is_better: ClassVar[bool]
    #: nominal scale of the raw score; widened to the observed values when they exceed it
    score_range: ClassVar[tuple[float, float]]
    expected_images: ClassVar[int | None] = None
    expected_groups: ClassVar[int | None] = None
    has_official_split: ClassVar[bool] = False
    sources: ClassVar[tuple[Source, ...]] = ()
    #: the original layout after extraction, shown by ``bench data download`` for manual placement
    layout: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    license: ClassVar[str] = ""

    def parse(self, root: Path) -> pd.DataFrame:
        """Read the original label files under ``root`` into the standard table.

        Implementations build the rows and finish with :func:`standard_table`. They raise
        :class:`DatasetError` for a missing or malformed label file, naming the file.
        Images are not opened here; missing images are the caller's business.
        """
        raise NotImplementedError

    #: True for datasets made by the harness itself (demo): ``generate`` replaces a download
    generated: ClassVar[bool] = False
    #: model name → config overrides this dataset asks for (the demo's CPU-sized recipes); they
    #: apply over the model's own per-dataset recipe and under the user's overrides
    model_recipes: ClassVar[dict[str, dict[str, Any]]] = {}

    def generate(self, root: Path) -> None:
        """Write the dataset's files under ``root`` (generated datasets only)."""
        raise NotImplementedError(f"{self.name} is downloaded, not generated")

    def to_unit(self, scores: pd.Series) -> pd.Series:
        lo, hi = self.score_range
        lo, hi = min(lo, float(scores.min())), max(hi, float(scores.max()))
        unit = (scores.astype(float) - lo) / (hi - lo)
        return unit if self.higher_is_better else 1.0 - unit

    def describe(self) -> dict:
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "kind": self.kind,
            "score_type": self.score_type,
            "higher_is_better": self.higher_is_better,
            "score_range": list(self.score_range),
            "expected_images": self.expected_images,
            "expected_groups": self.expected_groups,
            "has_official_split": self.has_official_split,
        }


def standard_table(
    dataset: Dataset, rows: pd.DataFrame, extra: Sequence[str] = ()
) -> pd.DataFrame:
    """Complete ``rows`` (at least ``image``, ``score``, ``group``) into the standard table.

    Fills optional columns, computes ``score_unit``, checks that image names are unique and
    that scores and unit scores are finite, and sorts nothing: the original file order is kept. ``extra``
    names original columns worth keeping verbatim (KADID's ``var``) after the standard ones.
    """
    missing = {"image", "score", "group"} - set(rows.columns)
    if missing:
        raise ValueError(f"{dataset.name}: parser produced no {sorted(missing)} column")
    table = rows.copy()
    table["score"] = table["score"].astype(float)
    if not np.isfinite(table["score"]).all():
        bad = table.loc[~np.isfinite(table["score"]), "image"].iloc[0]
        raise DatasetError(f"{dataset.name}: non-finite score for {bad}")
    duplicated = table["image"].duplicated()
    if duplicated.any():
        raise DatasetError(
            f"{dataset.name}: image {table.loc[duplicated, 'image'].iloc[0]} is listed twice"
        )
    defaults = {"score_std": np.nan, "distortion": "", "level": np.nan, "official_split": ""}
    for column, value in defaults.items():
        if column not in table.columns:
            table[column] = value
    table["score_unit"] = dataset.to_unit(table["score"])
    if not np.isfinite(table["score_unit"]).all():  # 1e308 and -1e308: the span overflows
        bad = table.loc[~np.isfinite(table["score_unit"])].iloc[0]
        raise DatasetError(f"{dataset.name}: score {float(bad['score'])!r} of {bad['image']} "
                           f"maps to no finite unit score (the scores span more than a float)")
    table["group"] = table["group"].astype(str)
    table["distortion"] = table["distortion"].fillna("").astype(str)
    table["official_split"] = table["official_split"].fillna("").astype(str)
    return table[STANDARD_COLUMNS + list(extra)].reset_index(drop=True)


def walk_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, sorted, following symbolic links: users commonly link a
    dataset root to the storage that holds it (``Path.rglob`` would not enter such links)."""
    found = []
    for directory, _, files in os.walk(folder, followlinks=True):
        found.extend(Path(directory) / name for name in files)
    return sorted(found)


def find_file(root: Path, name: str, dataset: str) -> Path:
    """Locate a label file by name anywhere under root (archives differ in wrapping folders)."""
    direct = root / name
    if direct.is_file():
        return direct
    hits = [p for p in walk_files(root) if p.name == Path(name).name]
    if not hits:
        raise DatasetError(f"{dataset}: label file {name} not found under {root}")
    return hits[0]


def resolve_names(listed: Sequence[str], folder: Path, root: Path, dataset: str) -> list[str]:
    """Match listed image names to the files under ``folder`` (any depth), ignoring case.

    Label files and archives disagree on case (TID2013's ``I01_13_1.BMP`` is ``I01_13_1.bmp``
    on disk), so each name becomes its real on-disk path relative to ``root``. A name with no
    file keeps its listed spelling under ``folder``, so it counts as missing downstream.
    """
    index: dict[str, list[Path]] = {}
    if folder.is_dir():
        for path in walk_files(folder):
            index.setdefault(path.name.lower(), []).append(path)
    resolved = []
    for name in listed:
        hits = index.get(Path(name).name.lower(), [folder / name])
        if len(hits) > 1:  # stray duplicates (Thumbs.db) are harmless; a listed one is not
            raise DatasetError(
                f"{dataset}: {hits[0]} and {hits[1]} both match listed image {name}; remove one"
            )
        resolved.append(hits[0].relative_to(root).as_posix())
    return resolved
