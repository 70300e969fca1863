"""TID2013, the Tampere Image Database 2013.

N. Ponomarenko et al., "Image database TID2013: Peculiarities, results and perspectives",
Signal Processing: Image Communication 30 (2015) 57-77.

Labels: ``mos_with_names.txt`` ("<MOS> <name>", 3,000 lines) and, when present, the
line-parallel ``mos_std.txt``. The list spells names in three cases (``i01_01_2.bmp``,
``I01_01_1.bmp``, ``I01_11_1.BMP``) and the files on disk do not always agree, so names are
resolved case-insensitively and the table holds the real on-disk name. The label file is
located at any depth because extractors differ in wrapping folders.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.datasets.base import (
    Dataset,
    DatasetError,
    Source,
    find_file,
    pyiqa_mirror,
    resolve_names,
    standard_table,
)

__all__ = ["Tid2013"]

NAME = re.compile(r"i(\d{2})_(\d{2})_(\d)\.bmp", re.IGNORECASE)


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty lines with their 1-based numbers; CRLF and LF alike."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def _read_mos(path: Path, dataset: str) -> pd.DataFrame:
    rows = []
    for number, line in _lines(path):
        fields = line.split()
        match = NAME.fullmatch(fields[1]) if len(fields) == 2 else None
        try:
            score = float(fields[0]) if match else None
        except ValueError:
            score = None
        if score is None:
            raise DatasetError(
                f"{dataset}: {path} line {number} is not '<MOS> iXX_YY_Z.bmp': {line!r}"
            )
        reference, distortion, level = match.groups()
        rows.append({"name": fields[1], "score": score, "group": f"I{reference}",
                     "distortion": distortion, "level": int(level)})
    if not rows:
        raise DatasetError(f"{dataset}: {path} lists no images")
    return pd.DataFrame(rows)


def _read_std(path: Path, n_rows: int, dataset: str) -> np.ndarray:
    values = []
    for number, line in _lines(path):
        try:
            values.append(float(line))
        except ValueError:
            raise DatasetError(
                f"{dataset}: {path} line {number} is not a number: {line!r}"
            ) from None
    if len(values) != n_rows:
        raise DatasetError(
            f"{dataset}: {path} has {len(values)} values but mos_with_names.txt has {n_rows} lines"
        )
    return np.array(values)


class Tid2013(Dataset):
    name = "tid2013"
    aliases = ("tid", "tid-2013", "tid_2013")
    title = "TID2013 (Tampere Image Database 2013)"
    label = "TID2013"
    kind = "synthetic"
    score_type = "MOS"
    higher_is_better = True
    score_range = (0.0, 9.0)
    expected_images = 3000
    expected_groups = 25
    sources = (
        Source(
            name="TID2013 archive",
            url="http://www.ponomarenko.info/tid2013/tid2013.rar",
            access="direct",
            filename="tid2013.rar",
            note="RAR: the Python standard library cannot unpack it; extract it with unrar, "
            "7z or bsdtar (page: http://www.ponomarenko.info/tid2013.htm)",
        ),
        pyiqa_mirror("tid2013.tgz", 1_230_000_000,
                     "third-party copy, extracts to tid2013/distorted_images and reference_images"),
    )
    layout = """\
distorted_images/     3,000 BMPs, iXX_YY_Z.bmp (case varies)
reference_images/     I01.BMP ... I24.BMP, i25.bmp
mos_with_names.txt    "<MOS> <name>", 3,000 lines
mos_std.txt           optional, one value per line in the same order"""
    citation = (
        "N. Ponomarenko et al., 'Image database TID2013: Peculiarities, results and "
        "perspectives', Signal Processing: Image Communication 30 (2015) 57-77."
    )
    license = (
        "Educational and research use without fee, with the copyright notice and the authors' "
        "names on all copies; not to be modified without the authors' permission."
    )

    def parse(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        path = find_file(root, "mos_with_names.txt", self.name)
        rows = _read_mos(path, self.name)
        std_path = path.parent / "mos_std.txt"
        if std_path.is_file():
            rows["score_std"] = _read_std(std_path, len(rows), self.name)
        folder = path.parent / "distorted_images"
        rows["image"] = resolve_names(list(rows["name"]), folder, root, self.name)
        return standard_table(self, rows.drop(columns=["name"]))
