"""LIVE Image Quality Assessment Database, Release 2 (UT Austin, 2005).

H. R. Sheikh, Z. Wang, L. Cormack, A. C. Bovik, "LIVE Image Quality Assessment Database
Release 2"; H. R. Sheikh, M. F. Sabir, A. C. Bovik, IEEE TIP 15(11), 2006.

Labels: ``dmos.mat`` (``dmos``, ``orgs``: 982 entries, 203 of them copies of the references)
with ``refnames_all.mat`` for the content, plus the separately downloaded
``dmos_realigned.mat`` (``dmos_new``, ``dmos_std``). HyperIQA, DBCNN, TReS, DEIQT and LoDa
train on the realigned DMOS; pyiqa on the original. The choice changes published numbers,
so it is a constructor option recorded in ``describe()`` (and so in ``bench/meta.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.io

from benchmark.datasets.base import (Dataset, DatasetError, Source, find_file, pyiqa_mirror,
                                     standard_table)

__all__ = ["Live"]

#: (folder, entries in the label arrays, distorted images after dropping reference copies),
#: in the order the 982 entries of dmos.mat follow
FOLDERS = (
    ("jp2k", 227, 169),
    ("jpeg", 233, 175),
    ("wn", 174, 145),
    ("gblur", 174, 145),
    ("fastfading", 174, 145),
)
N_ENTRIES = sum(entries for _, entries, _ in FOLDERS)
LABELS = ("realigned", "original")


class _MatFile:
    """One MATLAB label file; every complaint names the file and the variable."""

    def __init__(self, path: Path, dataset: str) -> None:
        self.path, self.dataset = path, dataset
        try:
            self.variables = scipy.io.loadmat(path)
        except (ValueError, TypeError, OSError, NotImplementedError,
                scipy.io.matlab.MatReadError) as error:
            raise self.error(
                f"is not a readable MATLAB file ({type(error).__name__}: {error})"
            ) from None

    def error(self, message: str) -> DatasetError:
        return DatasetError(f"{self.dataset}: {self.path} {message}")

    def vector(self, key: str) -> np.ndarray | None:
        """The variable as a flat array, None when absent; a matrix is malformed."""
        if key not in self.variables:
            return None
        value = np.asarray(self.variables[key])
        if value.ndim > 2 or (value.ndim == 2 and min(value.shape) != 1):
            raise self.error(f"variable {key} has shape {value.shape}, not 1x{N_ENTRIES}")
        return value.ravel()

    def entries(self, key: str, numeric: bool = True) -> np.ndarray:
        """The variable with exactly one value per label entry."""
        value = self.vector(key)
        if value is None:
            raise self.error(f"has no variable {key}")
        if value.size != N_ENTRIES:
            raise self.error(f"variable {key} has {value.size} entries, not {N_ENTRIES}")
        if not numeric:
            return value
        try:
            return value.astype(float)
        except (TypeError, ValueError):
            raise self.error(f"variable {key} is not numeric") from None

    def names(self, key: str) -> list[str]:
        """A cell array of file names (scipy: an object array of 1-element string arrays)."""
        names = []
        for cell in self.entries(key, numeric=False):
            inner = np.asarray(cell).ravel()
            if inner.size != 1 or not isinstance(inner[0], str) or not inner[0]:
                raise self.error(f"variable {key} holds a non-name entry {cell!r}")
            names.append(inner[0])
        return names


class Live(Dataset):
    name = "live"
    aliases = ("live_iqa", "liveiqa", "live_release2", "databaserelease2", "liveiqa_release2")
    title = "LIVE Image Quality Assessment Database, Release 2"
    label = "LIVE"
    kind = "synthetic"
    score_type = "DMOS"
    higher_is_better = False
    score_range = (1.0, 100.0)  # pyiqa's nominal scale; realigned values exceed it (widened)
    expected_images = 779
    expected_groups = 29
    sources = (
        Source(
            name="LIVE Release 2 archive",
            url="https://live.ece.utexas.edu/research/quality/subjective.htm",
            access="manual",
            filename="databaserelease2.zip",
            note="password-protected zip; the page gives the password after its request form "
            "is filled in (pass it with --password; it is never stored)",
        ),
        Source(
            name="realigned DMOS",
            url="https://live.ece.utexas.edu/research/quality/subjective.htm",
            access="manual",
            filename="dmos_realigned.mat",
            note="separate download under the 'update to Release 2' heading of the same page; "
            "needed for the default label='realigned' (found anywhere under the root; "
            "HyperIQA/DEIQT keep it next to dmos.mat)",
        ),
        pyiqa_mirror("live.tgz", 721_000_000,
                     "third-party copy, extracts to LIVEIQA_release2/; may lack the .mat files"),
    )
    layout = """\
databaserelease2/
  dmos.mat              dmos, orgs (1x982)
  refnames_all.mat      refnames_all (1x982 cell)
  dmos_realigned.mat    separate download (dmos_new, dmos_std), next to dmos.mat
  refimgs/              29 reference BMPs
  jp2k/ jpeg/ wn/ gblur/ fastfading/   img1.bmp ... (227/233/174/174/174 files)"""
    citation = (
        "H. R. Sheikh, M. F. Sabir, A. C. Bovik, 'A statistical evaluation of recent full "
        "reference image quality assessment algorithms', IEEE TIP 15(11), 2006; H. R. Sheikh, "
        "Z. Wang, L. Cormack, A. C. Bovik, 'LIVE Image Quality Assessment Database Release 2'."
    )
    license = (
        "UT Austin 2005: use, copy, modify and distribute for any purpose without fee, provided "
        "the full copyright notice travels with every copy and LIVE / the Center for Perceptual "
        "Systems are acknowledged; nine references come from a commercial photo CD."
    )

    def __init__(self, label: Literal["realigned", "original"] = "realigned") -> None:
        if label not in LABELS:
            raise DatasetError(
                f"{self.name}: label must be one of {', '.join(LABELS)}, got {label!r}"
            )
        self.label = label

    def describe(self) -> dict:
        label_file = "dmos_realigned.mat:dmos_new" if self.label == "realigned" else "dmos.mat:dmos"
        return {**super().describe(), "label": self.label, "label_file": label_file}

    def parse(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        dmos_mat = _MatFile(find_file(root, "dmos.mat", self.name), self.name)
        base = dmos_mat.path.parent
        # the mask always comes from dmos.mat: a circulating re-saved dmos_realigned.mat has
        # its orgs replaced by 1x779 zeros
        keep = dmos_mat.entries("orgs") == 0
        refnames = _MatFile(self._beside(root, base, "refnames_all.mat"), self.name).names(
            "refnames_all")
        std = None
        if self.label == "original":
            score = dmos_mat.entries("dmos")
        else:
            realigned = _MatFile(self._beside(root, base, "dmos_realigned.mat"), self.name)
            score = realigned.entries("dmos_new")
            own_orgs = realigned.vector("orgs")
            if own_orgs is not None and own_orgs.size == N_ENTRIES and not np.array_equal(
                realigned.entries("orgs") == 0, keep
            ):
                raise realigned.error(f"orgs disagrees with {dmos_mat.path} orgs")
            if realigned.vector("dmos_std") is not None:
                std = realigned.entries("dmos_std")

        rows = []
        offset = 0
        for folder, entries, distorted in FOLDERS:
            kept = [i for i in range(offset, offset + entries) if keep[i]]
            if len(kept) != distorted:
                raise dmos_mat.error(f"orgs keeps {len(kept)} {folder} images, not {distorted}")
            for i in kept:
                image = base / folder / f"img{i - offset + 1}.bmp"
                rows.append({
                    "image": image.relative_to(root).as_posix(),
                    "score": score[i],
                    "score_std": std[i] if std is not None else np.nan,
                    "group": Path(refnames[i]).stem,
                    "distortion": folder,
                })
            offset += entries
        return standard_table(self, pd.DataFrame(rows))

    def _beside(self, root: Path, base: Path, name: str) -> Path:
        """A label file next to dmos.mat, else anywhere under root."""
        if (base / name).is_file():
            return base / name
        try:
            return find_file(root, name, self.name)
        except DatasetError:
            if name != "dmos_realigned.mat":
                raise
            raise DatasetError(
                f"{self.name}: label file dmos_realigned.mat not found under {root} "
                "(a separate download; or choose label=original for dmos.mat)"
            ) from None
