"""FLIVE (LIVE-FB, the PaQ-2-PiQ database; Ying et al., CVPR 2020).

39,810 pictures from VOC2012, EMOTIC, AVA and the CUHK blur set, each with a crowdsourced
picture-level MOS on 0-100 (higher = better), plus three rated patches per picture.

The authors publish no archive: the pictures are rebuilt from their sources with the
corrected ``database_prep.ipynb`` of ``baidut/PaQ-2-PiQ``, and the label files come from
that repository's ``database/`` folder. All names in them are relative to ``database/``:

- ``labels_image.csv``: ``name,mos``, one row per picture (the table's rows);
- ``labels640.csv``: one row per test picture (``name_image`` among 30 columns);
- ``labels=640_padded.csv`` (PaQ-2-PiQ's code spells it ``labels<=640_padded.csv``): the
  pictures that fit in 640x640, with a boolean ``is_valid``.

Official split, as pyiqa reads it: test = the pictures of ``labels640.csv``; val = the
``is_valid`` rows of the padded file (unless already test); train = every other picture.
Both split files are needed for it; without either, the table has no official split. The
published 10-split numbers (TReS, DEIQT, LoDa) ignore it and draw random picture-level
80/20 splits instead.

Only picture rows are read. The patch labels (``labels_patch.csv``) are not: their layout
was never checked here, and a patch is a different sample from its picture, so it would
need its own row kind in the standard table.

Licence: the PaQ-2-PiQ labels are CC BY-NC-SA 4.0 (non-commercial, attribution); the
pictures inherit their source collections' terms (not verified).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.datasets.base import Dataset, DatasetError, Source, find_file, standard_table
from benchmark.datasets.generic import FLAG_WORDS, numeric_column, read_label_csv

__all__ = ["Flive", "IMAGE_LABELS", "TEST_LABELS", "PADDED_LABELS"]

IMAGE_LABELS = "labels_image.csv"
TEST_LABELS = "labels640.csv"
#: the repository's spelling first, then the one in the PaQ-2-PiQ code
PADDED_LABELS = ("labels=640_padded.csv", "labels<=640_padded.csv")


def _optional(root: Path, names: tuple[str, ...], dataset: str) -> Path | None:
    for name in names:
        try:
            return find_file(root, name, dataset)
        except DatasetError:
            continue
    return None


def _flags(frame: pd.DataFrame, column: str, key: str, path: Path) -> pd.Series:
    flags = frame[column].astype(str).str.strip().str.lower().map(FLAG_WORDS)
    bad = flags.isna()
    if bad.any():
        raise DatasetError(
            f"flive: {path} has {column} {frame[column][bad].iloc[0]!r} for "
            f"{frame[key][bad].iloc[0]} (expected True or False)"
        )
    return flags.astype(bool)


class Flive(Dataset):
    """FLIVE pictures (39,810) with the official size-based split when its files are present."""

    name = "flive"
    aliases = ("livefb", "live-fb", "live_fb", "paq2piq", "paq-2-piq", "flive_database")
    title = "FLIVE / LIVE-FB (PaQ-2-PiQ database)"
    label = "LIVEFB"
    kind = "authentic"
    score_type = "MOS"
    higher_is_better = True
    score_range = (0.0, 100.0)
    expected_images = 39810
    expected_groups = 39810
    has_official_split = True
    sources = (
        Source(
            "PaQ-2-PiQ label files",
            "https://github.com/baidut/PaQ-2-PiQ/tree/master/database",
            "manual",
            note="labels_image.csv, labels640.csv, labels=640_padded.csv; place them in "
            "database/",
        ),
        Source(
            "PaQ-2-PiQ database_prep.ipynb (corrected)",
            "https://github.com/baidut/PaQ-2-PiQ",
            "manual",
            note="rebuilds the pictures from VOC2012, EMOTIC, AVA and the CUHK blur set; "
            "the EE371R pictures and patches are only in this repository",
        ),
        Source(
            "FLIVE_Database (original prep notebook, reported buggy)",
            "https://github.com/niu-haoran/FLIVE_Database",
            "manual",
        ),
        Source(
            "pyiqa Hugging Face mirror",
            "https://huggingface.co/datasets/chaofengc/IQA-PyTorch-Datasets",
            "mirror",
            filename="flive.tgz",
            note="5.41 GB, FLIVE_Database/database (inferred); its label CSVs are reported "
            "missing (pyiqa PR #238): take them from PaQ-2-PiQ",
        ),
    )
    layout = (
        "database/\n"
        "  voc_emotic_ava/<PREFIX>__<name>.jpg   VOC2012__, JPEGImages__, EMOTIC__, AVA__\n"
        "  blur_dataset/motion*.jpg, out_of_focus*.jpg\n"
        "  EE371R/rq59.jpg, rq73.jpg, rq85.jpg\n"
        "  labels_image.csv                      name,mos (39,810 pictures)\n"
        "  labels640.csv                         the 1,827 official test pictures\n"
        "  labels=640_padded.csv                 pictures <= 640 px, is_valid = official val"
    )
    citation = (
        "Z. Ying, H. Niu, P. Gupta, D. Mahajan, D. Ghadiyaram, A. Bovik, \"From Patches to "
        "Pictures (PaQ-2-PiQ): Mapping the Perceptual Space of Picture Quality,\" CVPR 2020."
    )
    license = (
        "labels: CC BY-NC-SA 4.0 (PaQ-2-PiQ repository); pictures: the terms of VOC2012, "
        "EMOTIC, AVA and the CUHK blur dataset (not verified)"
    )

    def parse(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        path = find_file(root, IMAGE_LABELS, self.name)
        frame = read_label_csv(path, self.name, ["name", "mos"], dtype={"name": str})
        names = frame["name"].str.strip()
        rows = pd.DataFrame({
            "image": names,
            "score": numeric_column(frame, "mos", "name", path, self.name),
        })
        split = self._official_split(root, set(names))
        if split is not None:
            rows["official_split"] = [split.get(name, "train") for name in names]
        prefix = path.parent.relative_to(root)
        rows["image"] = [(prefix / name).as_posix() for name in names]
        rows["group"] = rows["image"]
        return standard_table(self, rows)

    def _official_split(self, root: Path, pictures: set[str]) -> dict[str, str] | None:
        """name -> val/test for the listed pictures; None when neither split file is present."""
        test_path = _optional(root, (TEST_LABELS,), self.name)
        padded_path = _optional(root, PADDED_LABELS, self.name)
        if test_path is None and padded_path is None:
            return None
        if test_path is None or padded_path is None:
            missing = TEST_LABELS if test_path is None else PADDED_LABELS[0]
            raise DatasetError(
                f"flive: {missing} not found under {root}; the official split needs both "
                f"{TEST_LABELS} and {PADDED_LABELS[0]} (or neither, for no official split)"
            )
        test = read_label_csv(test_path, self.name, ["name_image"], dtype={"name_image": str})
        padded = read_label_csv(padded_path, self.name, ["name_image", "is_valid"],
                                dtype={"name_image": str, "is_valid": str})
        valid = _flags(padded, "is_valid", "name_image", padded_path)
        split = {name: "val" for name in padded.loc[valid, "name_image"].str.strip()}
        # test wins over val, as in pyiqa's reading of these files
        split.update({name: "test" for name in test["name_image"].str.strip()})
        for source, listed in ((test_path, test), (padded_path, padded)):
            unknown = set(listed["name_image"].str.strip()) - pictures
            if unknown:
                raise DatasetError(
                    f"flive: {source} lists {len(unknown)} picture(s) missing from "
                    f"{IMAGE_LABELS}, e.g. {sorted(unknown)[0]}"
                )
        return split
