"""CLIVE: the LIVE In the Wild Image Quality Challenge Database (Ghadiyaram & Bovik).

1,169 photos from mobile devices with authentic capture distortions, each with a
crowdsourced MOS (about 175 ratings per image, 0-100, higher = better) and the standard
deviation of its ratings. The first 7 entries of the label files (``t1.bmp`` ... ``t7.bmp``)
are the images used to train the raters; every published protocol drops them and keeps the
1,162 test images, and so do we unless ``include_training=True``.

Original label files (MATLAB v5, one shared order): ``Data/AllImages_release.mat``
(``AllImages_release``, 1169x1 cell of names), ``Data/AllMOS_release.mat`` (``AllMOS_release``,
1x1169) and ``Data/AllStdDev_release.mat`` (``AllStdDev_release``, 1x1169). The training
images live in ``Images/trainingImages/`` although the names carry no folder; the test
images are directly in ``Images/``. Extensions are case-sensitive (``.JPG`` and ``.bmp``).

Licence: UT Austin 2015, free use for any purpose provided the full copyright notice
(``README.txt`` of the release) stays with every copy and LIVE is acknowledged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.datasets.base import Dataset, DatasetError, Source, find_file, standard_table
from benchmark.datasets.generic import parse_flag

__all__ = ["Livec", "TRAINING_IMAGES"]

#: the rater-training images that open the label files, in file order
TRAINING_IMAGES = tuple(f"t{k}.bmp" for k in range(1, 8))
_LABELS = {
    "names": ("Data/AllImages_release.mat", "AllImages_release"),
    "mos": ("Data/AllMOS_release.mat", "AllMOS_release"),
    "std": ("Data/AllStdDev_release.mat", "AllStdDev_release"),
}


def _load_variable(path: Path, variable: str, dataset: str) -> np.ndarray:
    from scipy.io import loadmat  # scipy is heavy; only parsing needs it
    from scipy.io.matlab import MatReadError

    try:
        content = loadmat(path)
    except (MatReadError, ValueError, OSError, TypeError) as error:
        raise DatasetError(f"{dataset}: cannot read {path} as a MATLAB file ({error})") from None
    if variable not in content:
        raise DatasetError(f"{dataset}: {path} has no variable {variable}")
    return np.asarray(content[variable])


def _cell_names(cells: np.ndarray, path: Path, dataset: str) -> list[str]:
    names = []
    for cell in cells.ravel():
        # each cell is a 1-element char array; anything else means a different file
        value = np.asarray(cell).ravel()
        if value.size != 1 or not isinstance(value[0], str):
            raise DatasetError(f"{dataset}: {path} holds a non-string image name ({cell!r})")
        names.append(value[0])
    return names


class Livec(Dataset):
    """CLIVE test images (1,162) by default; ``include_training`` adds t1..t7 (1,169)."""

    name = "livec"
    aliases = ("clive", "livechallenge", "live_challenge", "live-itw", "challengedb")
    title = "LIVE In the Wild Image Quality Challenge Database (CLIVE)"
    label = "LIVEC"
    kind = "authentic"
    score_type = "MOS"
    higher_is_better = True
    score_range = (0.0, 100.0)
    expected_images = 1162
    expected_groups = 1162
    has_official_split = False
    sources = (
        Source(
            "LIVE ChallengeDB page",
            "https://live.ece.utexas.edu/research/ChallengeDB/index.html",
            "manual",
            note="download links and a request form on the page; place ChallengeDB_release/ "
            "under --root",
        ),
        Source(
            "UT Austin Box share",
            "https://utexas.app.box.com/v/ChallengeDB-release",
            "manual",
            note="widely quoted release share; Box blocks scripted downloads",
        ),
        Source(
            "pyiqa Hugging Face mirror",
            "https://huggingface.co/datasets/chaofengc/IQA-PyTorch-Datasets",
            "mirror",
            filename="live_challenge.tgz",
            note="about 326 MB, extracts to LIVEC/ with Images/; whether it keeps Data/*.mat "
            "is not verified",
        ),
        Source(
            "Waterloo IQA-Dataset mirror",
            "http://ivc.uwaterloo.ca/database/IQADataset/",
            "mirror",
            note="LIVE_Challenge tar; its labels are derived lists, not the .mat files",
        ),
    )
    layout = (
        "ChallengeDB_release/\n"
        "  README.txt                  licence: keep it with the images\n"
        "  Data/AllImages_release.mat  AllImages_release (1169x1 cell of names)\n"
        "  Data/AllMOS_release.mat     AllMOS_release (1x1169)\n"
        "  Data/AllStdDev_release.mat  AllStdDev_release (1x1169)\n"
        "  Images/<3..1164>.JPG|.bmp   the 1,162 test images (627 JPG, 535 bmp)\n"
        "  Images/trainingImages/t1.bmp ... t7.bmp"
    )
    citation = (
        'D. Ghadiyaram and A. C. Bovik, "Massive Online Crowdsourced Study of Subjective and '
        'Objective Picture Quality," IEEE TIP 25(1), 2016; D. Ghadiyaram and A. C. Bovik, '
        '"LIVE In the Wild Image Quality Challenge Database," '
        "http://live.ece.utexas.edu/research/ChallengeDB/index.html, 2015."
    )
    license = (
        "Copyright (c) 2015 The University of Texas at Austin: use, copy, modify and distribute "
        "for any purpose, provided the full copyright notice (README.txt) appears in all copies "
        "and LIVE is acknowledged in publications"
    )

    def __init__(self, include_training: bool | str = False) -> None:
        try:
            self.include_training = parse_flag(include_training, "include_training")
        except ValueError as error:
            raise DatasetError(f"livec: {error}") from None
        if self.include_training:
            self.expected_images = self.expected_groups = 1162 + len(TRAINING_IMAGES)

    def describe(self) -> dict:
        return {**super().describe(), "include_training": self.include_training,
                "label_file": "AllMOS_release.mat:AllMOS_release"}

    def parse(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        arrays = {}
        paths = {}
        for key, (relative, variable) in _LABELS.items():
            paths[key] = find_file(root, relative, self.name)
            arrays[key] = _load_variable(paths[key], variable, self.name)
        names = _cell_names(arrays["names"], paths["names"], self.name)
        mos = arrays["mos"].astype(float).ravel()
        std = arrays["std"].astype(float).ravel()
        for key, values in (("mos", mos), ("std", std)):
            if len(values) != len(names):
                raise DatasetError(
                    f"{self.name}: {paths[key]} has {len(values)} values for "
                    f"{len(names)} names in {paths['names']}"
                )
        if tuple(names[: len(TRAINING_IMAGES)]) != TRAINING_IMAGES:
            raise DatasetError(
                f"{self.name}: {paths['names']} does not start with t1.bmp..t7.bmp "
                f"(first names {names[:3]}); not the original release file"
            )
        # images sit beside Data/, wherever the archive put the release folder
        images = (paths["names"].parent.parent / "Images").relative_to(root)
        start = 0 if self.include_training else len(TRAINING_IMAGES)
        rows = pd.DataFrame(
            {
                "image": [
                    (images / ("trainingImages" if i < len(TRAINING_IMAGES) else "") / name)
                    .as_posix()
                    for i, name in enumerate(names)
                ],
                "score": mos,
                "score_std": std,
            }
        ).iloc[start:]
        rows["group"] = rows["image"]
        return standard_table(self, rows)
