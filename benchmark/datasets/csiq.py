"""CSIQ, the Categorical Subjective Image Quality database (Oklahoma State / SMU).

E. C. Larson, D. M. Chandler, "Most apparent distortion: full-reference image quality
assessment and the role of strategy", J. Electronic Imaging 19(1), 2010.

Labels: the authors' ``csiq.DMOS.xlsx`` (sheet ``all_by_image``, header on row 4, the
reference ``1600`` stored as a number, with ``dmos_std``), or the derived ``csiq_label.txt``
that HyperIQA ships and HyperIQA, DEIQT and pyiqa read (name and DMOS only). Images sit in
``dst_imgs/<type>/`` as unpacked, in pyiqa's flat ``dst_imgs/``, or in the ``dst_imgs_all/``
folder HyperIQA and DEIQT ask users to flatten them into.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Literal

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

__all__ = ["Csiq"]

XLSX = "csiq.DMOS.xlsx"
TXT = "csiq_label.txt"
#: xlsx dst_type → (sub-folder of dst_imgs, tag inside the file name; the case is the authors')
TYPES = {
    "noise": ("awgn", "AWGN"),
    "jpeg": ("jpeg", "JPEG"),
    "jpeg 2000": ("jpeg2000", "jpeg2000"),
    "fnoise": ("fnoise", "fnoise"),
    "blur": ("blur", "BLUR"),
    "contrast": ("contrast", "contrast"),
}
SUBFOLDER_BY_TAG = {tag.lower(): sub for sub, tag in TYPES.values()}
LABELS = ("auto", "xlsx", "txt")


def _reference(value: object) -> str:
    # openpyxl hands the stem 1600 over as a number (int or float)
    if isinstance(value, (int, float, np.integer, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _read_xlsx(path: Path, dataset: str) -> pd.DataFrame:
    try:
        sheet = pd.read_excel(path, sheet_name="all_by_image", header=3, engine="openpyxl")
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as error:
        raise DatasetError(
            f"{dataset}: cannot read sheet all_by_image of {path} ({type(error).__name__}: {error})"
        ) from None
    sheet.columns = [str(column).strip().lower() for column in sheet.columns]
    needed = ["image", "dst_type", "dst_lev", "dmos_std", "dmos"]
    absent = [column for column in needed if column not in sheet.columns]
    if absent:
        raise DatasetError(
            f"{dataset}: {path} sheet all_by_image has no column {absent[0]} in header row 4"
        )
    sheet = sheet.dropna(subset=["image"])
    rows = []
    for line, record in zip(sheet.index + 5, sheet.itertuples(index=False)):
        kind = str(record.dst_type).strip().lower()
        if kind not in TYPES:
            raise DatasetError(
                f"{dataset}: {path} row {line}: unknown dst_type {record.dst_type!r}"
            )
        try:
            level, score, std = int(record.dst_lev), float(record.dmos), float(record.dmos_std)
        except (TypeError, ValueError):
            raise DatasetError(
                f"{dataset}: {path} row {line}: non-numeric level or score"
            ) from None
        reference = _reference(record.image)
        sub, tag = TYPES[kind]
        rows.append({"name": f"{reference}.{tag}.{level}.png", "sub": sub, "score": score,
                     "score_std": std, "group": reference, "distortion": sub, "level": level})
    return pd.DataFrame(rows)


def _read_txt(path: Path, dataset: str) -> pd.DataFrame:
    rows = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        parts = fields[0].rsplit(".", 3) if len(fields) == 2 else []
        try:
            score, level = float(fields[1]), int(parts[2])
        except (IndexError, ValueError):
            score = level = None
        if (len(parts) != 4 or score is None or parts[3].lower() != "png"
                or parts[1].lower() not in SUBFOLDER_BY_TAG):
            raise DatasetError(
                f"{dataset}: {path} line {number} is not '<ref>.<TYPE>.<level>.png <dmos>': "
                f"{line!r}"
            )
        sub = SUBFOLDER_BY_TAG[parts[1].lower()]
        rows.append({"name": fields[0], "sub": sub, "score": score, "group": parts[0],
                     "distortion": sub, "level": level})
    if not rows:
        raise DatasetError(f"{dataset}: {path} lists no images")
    return pd.DataFrame(rows)


def _image_folder(root: Path, base: Path) -> tuple[Path, bool]:
    """The folder holding the distorted images and whether it is flat (no type sub-folders)."""
    for name in ("dst_imgs_all", "dst_imgs"):
        near = base / name
        hits = [near] if near.is_dir() else sorted(p for p in root.rglob(name) if p.is_dir())
        if hits:
            return hits[0], not _has_type_folders(hits[0])
    if _has_type_folders(base):  # dst_imgs.zip unpacked without its own top folder
        return base, False
    return base / "dst_imgs", False


def _has_type_folders(folder: Path) -> bool:
    return any((folder / sub).is_dir() for sub, _ in TYPES.values())


class Csiq(Dataset):
    name = "csiq"
    aliases = ("csiq_dmos",)
    title = "CSIQ (Categorical Subjective Image Quality)"
    label = "CSIQ"
    kind = "synthetic"
    score_type = "DMOS"
    higher_is_better = False
    score_range = (0.0, 1.0)
    expected_images = 866
    expected_groups = 30
    sources = (
        Source(
            name="CSIQ images and labels",
            url="https://s2.smu.edu/~eclarson/csiq.html",
            access="manual",
            filename="dst_imgs.zip",
            note="public, no form; also fetch src_imgs.zip and csiq.DMOS.xlsx from the same page "
            "(direct file links not verified); older mirror "
            "http://vision.eng.shizuoka.ac.jp/mod/page/view.php?id=23",
        ),
        Source(
            name="CSIQ label file",
            url="https://s2.smu.edu/~eclarson/csiq.html",
            access="manual",
            filename=XLSX,
            note="the original label file (sheet all_by_image); csiq_label.txt may replace it",
        ),
        Source(
            name="HyperIQA derived labels",
            url="https://github.com/SSL92/hyperIQA",
            access="mirror",
            filename=TXT,
            sha256="e19bacb7eb67c7f4448927f4c1e17dcaacbbcfe5be6d375ff577d58b80dad969",
            size_bytes=26_310,
            note="third-party 866-line '<name> <dmos>' list (no std) read by HyperIQA/DEIQT/pyiqa",
        ),
        pyiqa_mirror("csiq.tgz", 379_062_485,
                     "third-party copy, extracts to CSIQ/src_imgs and CSIQ/dst_imgs (probably flat)"),
    )
    layout = """\
src_imgs/        1600.png, aerial_city.png, ... (30 references)
dst_imgs/        awgn/ blur/ contrast/ fnoise/ jpeg/ jpeg2000/   <ref>.<TAG>.<level>.png
                 (or all 866 files flat in dst_imgs/ or dst_imgs_all/)
csiq.DMOS.xlsx   (or csiq_label.txt)"""
    citation = (
        "E. C. Larson, D. M. Chandler, 'Most apparent distortion: full-reference image quality "
        "assessment and the role of strategy', J. Electronic Imaging 19(1), 011006, 2010."
    )
    license = "No licence text from the authors; QUALINET lists CSIQ as publicly available."

    def __init__(self, label: Literal["auto", "xlsx", "txt"] = "auto") -> None:
        if label not in LABELS:
            raise DatasetError(
                f"{self.name}: label must be one of {', '.join(LABELS)}, got {label!r}"
            )
        self.label = label
        self.label_file = ""  # which file the last parse read, for the record in meta.json

    def describe(self) -> dict:
        return {**super().describe(), "label": self.label, "label_file": self.label_file}

    def _label_file(self, root: Path) -> Path:
        # the authors' xlsx wins when both are present: it is the original and carries dmos_std
        wanted = {"auto": (XLSX, TXT), "xlsx": (XLSX,), "txt": (TXT,)}[self.label]
        for name in wanted:
            try:
                return find_file(root, name, self.name)
            except DatasetError:
                continue
        raise DatasetError(f"{self.name}: label file {' or '.join(wanted)} not found under {root}")

    def parse(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        path = self._label_file(root)
        self.label_file = path.name
        rows = _read_xlsx(path, self.name) if path.name == XLSX else _read_txt(path, self.name)
        folder, flat = _image_folder(root, path.parent)
        listed = rows["name"] if flat else rows["sub"] + "/" + rows["name"]
        rows["image"] = resolve_names(list(listed), folder, root, self.name)
        return standard_table(self, rows.drop(columns=["name", "sub"]))
