"""KADID-10k, the Konstanz Artificially Distorted Image quality Database.

H. Lin, V. Hosu, D. Saupe, "KADID-10k: A Large-scale Artificially Distorted IQA Database",
QoMEX 2019.

Labels: ``dmos.csv`` (``dist_img,ref_img,dmos,var``). Despite its name the ``dmos`` column is
a MOS on 1-5, higher = better (the authors' page says so); it is used as it is, never
flipped. ``var`` is kept verbatim and ``score_std`` is ``sqrt(var)``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.datasets.base import (Dataset, DatasetError, Source, find_file, pyiqa_mirror,
                                     standard_table)

__all__ = ["Kadid"]

NAME = re.compile(r"I\d{2}_(\d{2})_(\d{2})\.png", re.IGNORECASE)
COLUMNS = ("dist_img", "ref_img", "dmos", "var")


def _read_csv(path: Path, dataset: str) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={"dist_img": str, "ref_img": str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DatasetError(
            f"{dataset}: {path} is not a CSV file ({type(error).__name__}: {error})"
        ) from None
    table.columns = [str(column).strip() for column in table.columns]
    absent = [column for column in COLUMNS if column not in table.columns]
    if absent:
        raise DatasetError(
            f"{dataset}: {path} header has no column {absent[0]} (want {','.join(COLUMNS)})"
        )
    for column in ("dmos", "var"):
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any():
            line = int(values.isna().to_numpy().argmax()) + 2
            raise DatasetError(f"{dataset}: {path} line {line}: {column} is not a number")
        table[column] = values
    if table.empty:
        raise DatasetError(f"{dataset}: {path} lists no images")
    if (table["var"] < 0).any():
        line = int((table["var"] < 0).to_numpy().argmax()) + 2
        raise DatasetError(f"{dataset}: {path} line {line}: negative var")
    return table


class Kadid(Dataset):
    name = "kadid"
    aliases = ("kadid10k", "kadid-10k", "kadid_10k")
    title = "KADID-10k (Konstanz Artificially Distorted Image quality Database)"
    label = "KADID-10k"
    kind = "synthetic"
    score_type = "MOS"  # the file calls the column dmos; the values are MOS, higher = better
    higher_is_better = True
    score_range = (1.0, 5.0)
    expected_images = 10125
    expected_groups = 81
    sources = (
        Source(
            name="KADID-10k archive",
            url="https://datasets.vqa.mmsp-kn.de/archives/kadid10k.zip",
            access="direct",
            filename="kadid10k.zip",
            size_bytes=3_067_408_471,
            note="no form (page: https://database.mmsp-kn.de/kadid-10k-database.html); "
            "size from a third-party note, not verified",
        ),
        pyiqa_mirror("kadid10k.tgz", 3_070_000_000,
                     "third-party copy, extracts to kadid10k/images"),
    )
    layout = """\
kadid10k/
  dmos.csv    dist_img,ref_img,dmos,var (10,125 rows)
  images/     I01_01_01.png ... I81_25_05.png and the references I01.png ... I81.png"""
    citation = (
        "H. Lin, V. Hosu, D. Saupe, 'KADID-10k: A Large-scale Artificially Distorted IQA "
        "Database', QoMEX 2019."
    )
    license = "No licence text found; described as freely available to the research community."

    def parse(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        path = find_file(root, "dmos.csv", self.name)
        table = _read_csv(path, self.name)
        rows = []
        for line, record in enumerate(table.itertuples(index=False), 2):
            match = NAME.fullmatch(str(record.dist_img).strip())
            if not match:
                raise DatasetError(
                    f"{self.name}: {path} line {line}: {record.dist_img!r} is not IXX_YY_ZZ.png"
                )
            rows.append({
                "image": (path.parent / "images" / match.group(0)).relative_to(root).as_posix(),
                "score": record.dmos,
                "score_std": float(np.sqrt(record.var)),
                "var": record.var,
                "group": Path(str(record.ref_img).strip()).stem,
                "distortion": match.group(1),
                "level": int(match.group(2)),
            })
        return standard_table(self, pd.DataFrame(rows), extra=("var",))
