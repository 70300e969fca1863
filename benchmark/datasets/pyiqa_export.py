"""Our table and splits as files pyiqa 0.1.16 reads natively (``bench data export-pyiqa``).

Split columns. pyiqa reads splits out of its meta CSV (``BaseIQADataset.get_split``): every
column whose name contains ``split`` holds, per row, the part of that row (``train``,
``val`` or ``test``), and the dataset options ``split_index: <column>`` and ``phase`` select
the rows. The export writes one such column per split of ours, ``bench_split_NN`` for our
split ``NN`` (``official_split`` for an official split file), so pyiqa needs no split file.
Cells of images outside a split stay empty. The pickle that pyiqa's ``split_file`` option
opens (``{1: {"train": [...], "val": [...], "test": [...]}}``, integer keys, row indices as
the class counts rows) is written only on request; nothing here ever reads one.

Dataset classes. The CSV targets the class pyiqa's own configuration reads the dataset with
when that class takes an NR layout:

- LIVEC: ``LIVEChallengeDataset``. It drops the first 7 rows of its CSV (CLIVE's rater-training
  images t1..t7) by position, then reads split cell ``i`` for the i-th remaining row, that
  is for CSV row ``i + 7``. The CSV therefore opens with t1..t7 (empty scores when the table
  does not hold them) and each image's cell sits 7 rows above the image; pickle indices count
  the rows after t1..t7. Read by ``GeneralNRDataset``, the same file would misplace every
  split. Training images in our splits are dropped by that class, with a note.
- every other dataset: ``GeneralNRDataset`` with ``img_name,mos,std`` (``img_name`` is our
  root-relative path, so ``dataroot_target`` is our dataset root). pyiqa's own configs read
  LIVE, CSIQ, TID2013 and KADID with ``GeneralFRDataset``, which takes ``ref_name,dist_name,
  mos`` by position: give ``type: GeneralNRDataset`` with this CSV.

Parts. pyiqa's 10-split protocol has no validation slice: ``holdout`` writes our train + val
as its ``train`` and our test as its ``val`` (what its configs evaluate); ``same`` writes the
three parts by name (its official-split layout); ``auto`` is ``same`` for an official split
file, else ``holdout``. A holdout round trip (export, then ``bench data import-pyiqa``) gives
back our test part and our train + val as one train part: the validation slice is lost, and
runs on the imported splits select by the last epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

import numpy as np
import pandas as pd

from benchmark.datasets.livec import TRAINING_IMAGES
from benchmark.datasets.splits import PARTS, SplitFileError

__all__ = ["PYIQA_CLASSES", "PyiqaExport", "export_splits"]

#: dataset -> the pyiqa class the export is written for (default: GeneralNRDataset)
PYIQA_CLASSES = {"livec": "LIVEChallengeDataset"}
#: rows a pyiqa class drops by position before it indexes rows
_DROPPED = {"LIVEChallengeDataset": TRAINING_IMAGES}
_PHASES = {"holdout": {"train": "train", "val": "train", "test": "val"},
           "same": {part: part for part in PARTS}}


@dataclass(frozen=True)
class PyiqaExport:
    meta_csv: str
    pyiqa_class: str
    columns: list[str]  # split columns, one per split
    pickle_splits: dict[int, dict[str, list[int]]]  # pyiqa's split_file content
    counts: list[dict[str, int]]  # per split, the images pyiqa's class gets per phase
    notes: list[str]


def _leading(images: list[str], pyiqa_class: str) -> list[str]:
    """The rows ``pyiqa_class`` drops: the table's own t1..t7 where it has them."""
    dropped = _DROPPED.get(pyiqa_class, ())
    if not dropped:
        return []
    named = {PurePosixPath(image).name: image for image in images}
    folder = next((PurePosixPath(i).parent for i in images
                   if PurePosixPath(i).name not in dropped), PurePosixPath("Images"))
    return [named.get(name, (folder / "trainingImages" / name).as_posix()) for name in dropped]


def _column(split_file: dict, entry: dict, parts: str) -> str:
    official = split_file.get("protocol", {}).get("official") and len(split_file["splits"]) == 1
    return "official_split" if official and parts == "same" else f"bench_split_{entry['index']:02d}"


def export_splits(table: pd.DataFrame, split_file: dict,
                  parts: Literal["auto", "holdout", "same"] = "auto") -> PyiqaExport:
    """Our table + split file -> pyiqa meta CSV text with split columns (module doc)."""
    if parts not in ("auto", "holdout", "same"):
        raise ValueError(f"parts must be auto, holdout or same, not {parts!r}")
    if parts == "auto":
        parts = "same" if split_file.get("protocol", {}).get("official") else "holdout"
    pyiqa_class = PYIQA_CLASSES.get(split_file.get("dataset", ""), "GeneralNRDataset")
    images = table["image"].astype(str).tolist()
    leading = _leading(images, pyiqa_class)
    order = leading + [image for image in images if image not in set(leading)]
    indexed = table.set_index(table["image"].astype(str))
    meta = pd.DataFrame({"img_name": order,
                         "mos": indexed["score"].reindex(order).to_numpy(float),
                         "std": indexed["score_std"].reindex(order).to_numpy(float)})
    rows = {image: row for row, image in enumerate(order)}
    skip, phases = len(leading), _PHASES[parts]
    columns, pickled, counts, lost = [], {}, [], 0
    for entry in split_file["splits"]:
        for part in PARTS:
            unknown = [image for image in entry[part] if image not in rows]
            if unknown:
                raise SplitFileError(f"split {entry['index']} lists {unknown[0]} ({len(unknown)} "
                                     "image(s) in all), which is not in the prepared table")
        cells = np.full(len(order), "", dtype=object)
        chosen: dict[str, list[int]] = {phase: [] for phase in PARTS}
        for part in PARTS:
            for image in entry[part]:
                if rows[image] < skip:
                    lost += 1
                    continue
                cells[rows[image] - skip] = phases[part]  # where pyiqa's class looks for it
                chosen[phases[part]].append(rows[image] - skip)
        name = _column(split_file, entry, parts)
        meta[name] = cells
        columns.append(name)
        pickled[int(entry["index"]) + 1] = chosen
        counts.append({phase: len(chosen[phase]) for phase in PARTS})
    notes = [f"for pyiqa's {pyiqa_class} with dataroot_target = the dataset root; choose a split "
             f"with split_index: {columns[0]} (columns {', '.join(columns)}) and phase"]
    notes.append("parts 'holdout': our train+val -> pyiqa train, our test -> pyiqa val; pyiqa "
                 "has no validation slice, so importing this back merges our val into train"
                 if parts == "holdout" else "parts 'same': train/val/test by name")
    if skip:
        notes.append(f"{pyiqa_class} drops the first {skip} rows (t1..t7) and reads the split "
                     f"cell {skip} rows above each image: read this CSV with {pyiqa_class} only")
    if lost:
        notes.append(f"{lost} training-image entr(ies) of our splits are dropped by {pyiqa_class}")
    return PyiqaExport(meta.to_csv(index=False, lineterminator="\n"), pyiqa_class, columns,
                       pickled, counts, notes)
