"""Verify placed files, write the prepared table + split file, and read them back.

Prepared files live beside the data in ``<root>/bench/``: ``table.csv`` (the standard
table), ``splits.json`` (checksummed splits) and ``meta.json`` (counts, drops, label
fingerprint). ``meta.json`` is written last, so its presence marks a complete prepare.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.datasets.base import Dataset, DatasetError
from benchmark.files import atomic_write_json, atomic_write_text, sha256_bytes
from benchmark.datasets.splits import SplitProtocol, build_split_file, save_split_file

__all__ = [
    "PREPARED_DIR",
    "PreparedDataset",
    "missing_images",
    "decode_check",
    "prepare",
    "adopt_split_file",
    "load_prepared",
    "summarize",
]

PREPARED_DIR = "bench"


@dataclass
class PreparedDataset:
    name: str
    root: Path
    table: pd.DataFrame
    meta: dict = field(default_factory=dict)

    @property
    def split_path(self) -> Path:
        return self.root / PREPARED_DIR / "splits.json"

    def image_path(self, image: str) -> Path:
        return self.root / image


def missing_images(table: pd.DataFrame, root: Path) -> list[str]:
    return [image for image in table["image"] if not (root / image).is_file()]


def decode_check(path: Path) -> str | None:
    """None if the image decodes fully, else a one-line reason (truncated JPEGs and images
    over the pixel limit included)."""
    from benchmark.images import ImageError, read_image

    try:
        read_image(path)  # verify() misses truncated JPEG data; a full decode does not
    except ImageError as error:
        return str(error)
    return None


def _drop_missing(dataset: Dataset, table: pd.DataFrame, root: Path, allow_missing: bool):
    missing = missing_images(table, root)
    if missing and not allow_missing:
        raise DatasetError(
            f"{dataset.name}: {len(missing)} of {len(table)} listed images are missing under "
            f"{root}, first {missing[0]} (pass --allow-missing to keep only those present)"
        )
    kept = table[~table["image"].isin(set(missing))].reset_index(drop=True)
    return kept, missing


def prepare(
    dataset: Dataset,
    root: Path,
    protocol: SplitProtocol,
    allow_missing: bool = False,
    decode: bool = False,
) -> PreparedDataset:
    """Parse, check and write ``table.csv``, ``splits.json`` and ``meta.json`` under root/bench."""
    root = Path(root)
    parsed = dataset.parse(root)
    table, missing = _drop_missing(dataset, parsed, root, allow_missing)
    if decode:
        for image in table["image"]:
            reason = decode_check(root / image)
            if reason:
                raise DatasetError(reason)
    split_file = build_split_file(table, dataset.name, protocol)
    csv_text = table.to_csv(index=False, float_format="%.10g", lineterminator="\n")
    meta = {
        "dataset": dataset.name,
        "n_listed": int(len(parsed)),
        "n_images": int(len(table)),
        "n_missing": len(missing),
        "first_missing": missing[0] if missing else None,
        "partial": bool(missing),
        "table_sha256": sha256_bytes(csv_text.encode()),
        "splits_sha256": split_file["sha256"],
        "protocol": split_file["protocol"],
        "spec": dataset.describe(),
    }
    out = root / PREPARED_DIR
    (out / "meta.json").unlink(missing_ok=True)  # a prepare in progress is not a prepared set
    atomic_write_text(out / "table.csv", csv_text)
    save_split_file(out / "splits.json", split_file)
    atomic_write_json(out / "meta.json", meta)
    return PreparedDataset(dataset.name, root, table, meta)


#: what readers of meta.json rely on; one that lacks any is from a damaged or older prepare
META_KEYS = ("dataset", "n_listed", "n_images", "n_missing", "first_missing", "partial",
             "table_sha256", "splits_sha256", "protocol", "spec")


def adopt_split_file(prepared: PreparedDataset, split_file: dict) -> None:
    """Make ``split_file`` (an imported one) the split file runs use: written over
    ``splits.json``, then its hash into ``meta.json``, which runs check the file against."""
    save_split_file(prepared.split_path, split_file)
    meta = {**prepared.meta, "splits_sha256": split_file["sha256"],
            "splits_source": split_file.get("source")}
    atomic_write_json(prepared.root / PREPARED_DIR / "meta.json", meta)
    prepared.meta = meta


def load_prepared(root: Path, name: str) -> PreparedDataset:
    root = Path(root)
    meta_path = root / PREPARED_DIR / "meta.json"
    rerun = f"re-run `bench data prepare {name} --root {root}`"
    if not meta_path.is_file():
        raise DatasetError(f"{name}: no prepared data under {root} ({rerun})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{meta_path} is unreadable ({error}); {rerun}") from None
    missing = [key for key in META_KEYS if key not in meta] if isinstance(meta, dict) else ["*"]
    if missing:
        raise DatasetError(f"{meta_path} has no {missing[0]!r} entry; {rerun}")
    if meta.get("dataset") != name:
        raise DatasetError(f"{root} was prepared for dataset {meta.get('dataset')!r}, not {name!r}")
    csv_path = root / PREPARED_DIR / "table.csv"
    text = csv_path.read_text()
    if sha256_bytes(text.encode()) != meta["table_sha256"]:
        raise DatasetError(f"{csv_path} does not match its checksum in meta.json (re-run prepare)")
    table = pd.read_csv(csv_path, keep_default_na=False, na_values={"score_std": [""], "level": [""]},
                        dtype={"image": str, "group": str, "distortion": str, "official_split": str})
    return PreparedDataset(name, root, table, meta)


def summarize(dataset: Dataset, table: pd.DataFrame, n_missing: int) -> dict:
    """The figures ``bench data info`` prints; the JSON keys are a contract."""
    distortions = table.loc[table["distortion"] != "", "distortion"].nunique()
    return {
        "name": dataset.name,
        "kind": dataset.kind,
        "n_images": int(len(table)),
        "n_content": int(table["group"].nunique()),
        "n_distortions": int(distortions),
        "score_type": dataset.score_type,
        "score_min": float(table["score"].min()) if len(table) else float("nan"),
        "score_max": float(table["score"].max()) if len(table) else float("nan"),
        "score_mean": float(table["score"].mean()) if len(table) else float("nan"),
        "higher_is_better": dataset.higher_is_better,
        "n_missing": int(n_missing),
        "has_official_split": bool((table["official_split"] != "").any()),
    }
