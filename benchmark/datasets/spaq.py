"""SPAQ: Smartphone Photography Attribute and Quality database (Fang et al., CVPR 2020).

11,125 photos (``00001.jpg`` ... ``11125.jpg``) from 66 smartphones, rated in the
laboratory: a MOS on 0-100 (higher = better), five attribute scores, scene labels and
EXIF tags. The label file is the release's spreadsheet
``Annotations/MOS and Image attribute scores.xlsx`` (one sheet; columns ``Image name | MOS |
Brightness | Colorfulness | Contrast | Noisiness | Sharpness``; names stored as text). It
has no standard-deviation column, and the attribute scores are not part of the table.

The release's image folder is ``TestImage/`` although it holds every image. The photos
are several megabytes each and everybody resizes them once before training (DEIQT to
512x384 (h, w), LoDa to a short side of 384 as PNG, the authors' demo to a short side of
512), so ``images`` names the folder to read and ``extension`` replaces ``.jpg`` for
re-encoded copies; record which one a run used.

Licence (release ``Readme.txt``): Copyright (c) 2020 Yuming Fang, Hanwei Zhu, Yan Zeng,
Kede Ma and Zhou Wang; educational and research use only, without fee, with the
copyright notice and the authors' names on all copies; no commercial use without permission.
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

import pandas as pd

from benchmark.datasets.base import Dataset, DatasetError, Source, find_file, standard_table
from benchmark.datasets.generic import numeric_column

__all__ = ["Spaq", "LABEL_FILE"]

LABEL_FILE = "Annotations/MOS and Image attribute scores.xlsx"
NAME, MOS = "Image name", "MOS"


class Spaq(Dataset):
    """SPAQ's 11,125 images with their MOS; ``images``/``extension`` select resized copies."""

    name = "spaq"
    aliases = ("spaq11k",)
    title = "SPAQ: Smartphone Photography Attribute and Quality"
    label = "SPAQ"
    kind = "authentic"
    score_type = "MOS"
    higher_is_better = True
    score_range = (0.0, 100.0)
    expected_images = 11125
    expected_groups = 11125
    has_official_split = False
    sources = (
        Source(
            "SPAQ release (GitHub page with Baidu Yun and Google Drive links)",
            "https://github.com/h4nwei/SPAQ",
            "manual",
            note="split zip SPAQ.zip + SPAQ.z01...; on Linux repair each part with "
            "`zip -FF` before unzip; some images come out corrupted, so prepare with decode",
        ),
        Source(
            "SPAQ on Google Drive",
            "https://drive.google.com/drive/u/1/folders/1wZ6HOHi5h43oxTe2yLYkFxwHPgJ9MwvT",
            "manual",
        ),
        Source(
            "SPAQ on Baidu Yun",
            "https://pan.baidu.com/s/18YzAtXb4cGdBGAsxuEVBOw",
            "manual",
            note="access code in the GitHub README",
        ),
        Source(
            "pyiqa Hugging Face mirror",
            "https://huggingface.co/datasets/chaofengc/IQA-PyTorch-Datasets",
            "mirror",
            filename="spaq.tgz",
            size_bytes=34841101349,
            note="extracts to SPAQ/TestImage (inferred); may lack the Annotations spreadsheets",
        ),
        Source(
            "Waterloo IQA-Dataset mirror",
            "http://ivc.uwaterloo.ca/database/IQADataset/",
            "mirror",
            note="SPAQ tar; its labels are derived lists, not the spreadsheets",
        ),
    )
    layout = (
        "Annotations/MOS and Image attribute scores.xlsx   the label file\n"
        "Annotations/Scene category labels.xlsx\n"
        "Annotations/EXIF_tags.xlsx\n"
        "TestImage/00001.jpg ... 11125.jpg                 all 11,125 images\n"
        "Readme.txt                                        licence: keep it with the images"
    )
    citation = (
        "Y. Fang, H. Zhu, Y. Zeng, K. Ma, Z. Wang, \"Perceptual Quality Assessment of "
        "Smartphone Photography,\" CVPR 2020."
    )
    license = (
        "Copyright (c) 2020 Y. Fang, H. Zhu, Y. Zeng, K. Ma, Z. Wang: educational and research "
        "use only, without fee, notice and authors' names on all copies; no commercial use "
        "without permission"
    )

    def __init__(self, images: str = "TestImage", extension: str | None = None) -> None:
        if not images or Path(images).is_absolute() or ".." in Path(images).parts:
            raise DatasetError(f"spaq: images must be a folder under the root, not {images!r}")
        if extension is not None and not (extension.startswith(".") and len(extension) > 1):
            raise DatasetError(f"spaq: extension must look like '.png', not {extension!r}")
        self.images = images
        self.extension = extension

    def describe(self) -> dict:
        return {**super().describe(), "images": self.images, "extension": self.extension or ".jpg",
                "label_file": f"{LABEL_FILE}:{MOS}"}

    def parse(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        path = find_file(root, LABEL_FILE, self.name)
        try:
            # only empty cells are missing: "n/a" in a MOS cell must be an error, not NaN
            frame = pd.read_excel(path, sheet_name=0, dtype={NAME: str}, keep_default_na=False,
                                  na_values=[""])
        except (zipfile.BadZipFile, ValueError, KeyError, OSError) as error:
            raise DatasetError(f"spaq: cannot read {path} as xlsx ({error})") from None
        frame.columns = [str(column).strip() for column in frame.columns]
        for column in (NAME, MOS):
            if column not in frame.columns:
                raise DatasetError(
                    f"spaq: {path} has no column {column!r} "
                    f"(columns: {', '.join(frame.columns)})"
                )
        frame = frame.dropna(how="all")  # spreadsheets often carry formatted empty rows
        if frame.empty:
            raise DatasetError(f"spaq: {path} has a header but no rows")
        names = frame[NAME].fillna("").astype(str).str.strip()
        if (names == "").any():
            raise DatasetError(f"spaq: {path} has a row without an image name")
        if self.extension:
            names = names.map(lambda n: PurePosixPath(n).with_suffix(self.extension).as_posix())
        # the release keeps Annotations/ and TestImage/ side by side
        release = path.parent.parent if path.parent.name == "Annotations" else path.parent
        folder = next((d / self.images for d in (release, root) if (d / self.images).is_dir()),
                      release / self.images)
        prefix = folder.relative_to(root)
        rows = pd.DataFrame({
            "image": [(prefix / name).as_posix() for name in names],
            "score": numeric_column(frame.assign(**{NAME: names}), MOS, NAME, path, self.name),
        })
        rows["group"] = rows["image"]
        return standard_table(self, rows)
