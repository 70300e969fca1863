"""Seeded train/val/test splits by content group, saved as a checksummed JSON file.

Group ids are sorted before a ``numpy.random.Generator`` seeded with the split's seed
permutes them, so the same table and seeds give the same file byte for byte on any
machine (the published code's splits are unseeded or depend on ``PYTHONHASHSEED``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from benchmark.files import atomic_write_text, canonical_json, sha256_bytes

__all__ = [
    "SplitProtocol",
    "SplitFileError",
    "make_split",
    "official_split",
    "build_split_file",
    "save_split_file",
    "load_split_file",
    "split_images",
    "check_split_file",
]

SPLIT_FORMAT = "bench-splits/1"
PARTS = ("train", "val", "test")


class SplitFileError(UserError):
    """A split file that is unreadable, tampered with, or does not match its table."""


@dataclass(frozen=True)
class SplitProtocol:
    """How splits are drawn. Defaults: the 80/20 protocol of the papers plus a validation slice."""

    seeds: tuple[int, ...] = tuple(range(10))
    train_fraction: float = 0.8  # of the groups, train+val side
    val_fraction: float = 0.1  # of the train+val groups, carved out for model selection
    #: at least this many validation groups (when val_fraction > 0): SRCC over one or two
    #: contents ranks contents, not quality, and makes validation-based selection noise
    min_val_groups: int = 3
    #: HyperIQA/DEIQT use round(0.8·N); pyiqa uses int() for reference splits
    rounding: Literal["round", "floor"] = "round"
    official: bool = False  # use the dataset's official split (KonIQ, LIVEFB) instead

    def __post_init__(self) -> None:
        if not 0 < self.train_fraction < 1:
            raise ValueError(f"train_fraction must lie in (0, 1), got {self.train_fraction}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if self.min_val_groups < 1:
            raise ValueError(f"min_val_groups must be at least 1, got {self.min_val_groups}")
        if self.rounding not in ("round", "floor"):
            raise ValueError(f"rounding must be 'round' or 'floor', got {self.rounding!r}")


def _count(n: float, rounding: str) -> int:
    # Python's round() is banker's rounding; the papers' round(0.8*N) matches it on their N
    return int(round(n)) if rounding == "round" else int(np.floor(n))


def make_split(groups: pd.Series, seed: int, protocol: SplitProtocol) -> pd.Series:
    """Assign each row to train/val/test so that no content group spans two parts."""
    unique = np.array(sorted(pd.unique(groups.astype(str))))
    # a validation part needs a third group; without one, two groups still give train/test
    minimum = 3 if protocol.val_fraction > 0 else 2
    if len(unique) < minimum:
        raise ValueError(
            f"need at least {minimum} content groups to split, got {len(unique)}"
            + (" (2 suffice with val_fraction 0)" if minimum == 3 else "")
        )
    order = unique[np.random.default_rng(seed).permutation(len(unique))]
    n_trainval = min(max(_count(protocol.train_fraction * len(unique), protocol.rounding), 2),
                     len(unique) - 1)
    n_val = _count(protocol.val_fraction * n_trainval, protocol.rounding)
    if protocol.val_fraction > 0:
        n_val = min(max(n_val, protocol.min_val_groups), n_trainval - 1)
    part = {g: "train" for g in order[: n_trainval - n_val]}
    part.update({g: "val" for g in order[n_trainval - n_val : n_trainval]})
    part.update({g: "test" for g in order[n_trainval:]})
    return groups.astype(str).map(part)


def official_split(table: pd.DataFrame, dataset: str) -> pd.Series:
    column = table["official_split"].astype(str)
    if (column == "").all():
        raise ValueError(f"dataset {dataset!r} has no official split")
    bad = ~column.isin(PARTS)
    if bad.any():
        raise ValueError(
            f"{dataset}: official split of {table.loc[bad, 'image'].iloc[0]} is "
            f"{column[bad].iloc[0]!r}, not one of {PARTS}"
        )
    return column


def build_split_file(table: pd.DataFrame, dataset: str, protocol: SplitProtocol) -> dict:
    """All splits of one dataset as a JSON-ready dict with its checksum."""
    splits = []
    seeds = (None,) if protocol.official else protocol.seeds
    for index, seed in enumerate(seeds):
        assignment = (
            official_split(table, dataset)
            if seed is None
            else make_split(table["group"], seed, protocol)
        )
        entry = {"index": index, "seed": seed}
        for part in PARTS:
            entry[part] = table.loc[assignment == part, "image"].tolist()
        splits.append(entry)
    body = {
        "format": SPLIT_FORMAT,
        "dataset": dataset,
        "n_images": int(len(table)),
        "protocol": {**asdict(protocol), "seeds": list(protocol.seeds)},
        "splits": splits,
    }
    return {**body, "sha256": sha256_bytes(canonical_json(body).encode())}


def save_split_file(path: Path, split_file: dict) -> None:
    atomic_write_text(Path(path), canonical_json(split_file) + "\n")


def load_split_file(path: Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SplitFileError(f"split file {path} not found (run `bench data prepare`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SplitFileError(f"split file {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or data.get("format") != SPLIT_FORMAT:
        raise SplitFileError(f"split file {path} is not a {SPLIT_FORMAT} file")
    body = {k: v for k, v in data.items() if k != "sha256"}
    if sha256_bytes(canonical_json(body).encode()) != data.get("sha256"):
        raise SplitFileError(f"split file {path} fails its checksum (edited or truncated)")
    return data


def split_images(split_file: dict, index: int) -> dict[str, list[str]]:
    """The image lists of split ``index``; an out-of-range index names the valid range."""
    splits = split_file["splits"]
    if not 0 <= index < len(splits):
        raise SplitFileError(
            f"split {index} out of range: dataset {split_file['dataset']!r} has splits "
            f"0..{len(splits) - 1}"
        )
    return {part: list(splits[index][part]) for part in PARTS}


def check_split_file(split_file: dict, table: pd.DataFrame, dataset: str, expected_sha256: str,
                     path: Path) -> None:
    """Refuse a split file that its own checksum cannot vouch for: one written for another
    dataset, one other than the file prepare wrote (its hash is in meta.json), or one whose
    parts share an image or a content group (splits drawn by seed; an official or imported
    split is its source's own), or name images the table lacks."""
    if split_file.get("dataset") != dataset:
        raise SplitFileError(f"split file {path} is for dataset {split_file.get('dataset')!r}, "
                             f"not {dataset!r}")
    if split_file["sha256"] != expected_sha256:
        raise SplitFileError(f"split file {path} is not the one prepare wrote (its sha256 "
                             f"differs from meta.json's): re-run `bench data prepare`")
    groups = dict(zip(table["image"], table["group"].astype(str)))
    for entry in split_file["splits"]:
        where = f"split file {path}: split {entry.get('index')}"
        owner: dict[str, str] = {}
        for part in PARTS:
            for image in entry.get(part, []):
                if image not in groups:
                    raise SplitFileError(f"{where}: {part} image {image} is not in the table")
                if image in owner:
                    raise SplitFileError(f"{where}: image {image} is in both {owner[image]} "
                                         f"and {part}")
                owner[image] = part
        by_group: dict[str, str] = {}
        for image, part in owner.items() if entry.get("seed") is not None else ():
            first = by_group.setdefault(groups[image], part)
            if first != part:
                raise SplitFileError(f"{where}: content group {groups[image]} spans {first} "
                                     f"and {part} (image {image})")
