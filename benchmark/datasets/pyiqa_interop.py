"""Splits from pyiqa (chaofengc/IQA-PyTorch): meta-info CSVs, their split columns, split files.

pyiqa describes a dataset by a meta-info CSV (one row per image: a name column such as
``img_name``, ``dist_name`` or ``Image name``, then ``mos`` and more). Its splits are either
columns of that CSV whose names contain ``split`` (each cell ``train``, ``val`` or ``test``,
empty for rows outside the split), or a split file
``{split_index: {"train": [...], "val": [...], "test": [...]}}`` of row indices. Its split
files are pickles; **pickles are never loaded here** (unpickling runs arbitrary code), so
only the same content as JSON is read, with string keys (``{"1": {"train": [...], "val":
[...]}}``), and a ``.pkl`` file (or pickle bytes under another name) is refused. Without a
split file the import reads the CSV's split columns (all of them, or those named), the cell
at position ``i`` of a column playing the part of index ``i``.

Part names. pyiqa's 10-split files (``train_split_info/*_seed123.pkl``) have no ``test``
part: ``val`` is the held-out 20 % that its configs evaluate and report. Its official
splits (KonIQ-10k, FLIVE) have all three. So when every split's ``test`` is empty, pyiqa
``train`` -> our ``train`` and pyiqa ``val`` -> our ``test``, and our ``val`` stays empty
(the engine then selects by the last epoch); otherwise the parts map by name. The export
(:mod:`benchmark.datasets.pyiqa_export`) is the inverse.

Matching. Rows are matched to the prepared table by image name, not by position: a pyiqa
name matches the table image whose path ends with it (case-insensitive, on ``/``
boundaries). Every table image must appear in the meta CSV; split rows without a table
image are an error unless ``allow_missing`` (partial copies). Scores are compared, and
differences are reported, not fatal (pyiqa reads LIVE's ``dmos.mat`` where we may read the
realigned file).

CLIVE row offset. pyiqa's CLIVE meta CSV keeps the 7 rater-training images ``t1.bmp`` ...
``t7.bmp`` as its first rows, and ``LIVEChallengeDataset`` drops them before it indexes rows
(split-file indices and split-column cells alike), so index ``i`` is CSV row ``i + 7``. The
import detects a CSV that opens with ``t1.bmp`` ... ``t7.bmp``: if the indices cover exactly
the rows after them it applies offset 7 and says so in ``notes``; if they reach past them it
reads them as written (a CSV whose columns sit beside their rows); if they cannot be told
apart it refuses and asks for ``row_offset``. It never shifts silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
import numpy as np
import pandas as pd

from benchmark.datasets.base import DatasetError
from benchmark.datasets.generic import read_label_csv
from benchmark.datasets.livec import TRAINING_IMAGES
from benchmark.files import canonical_json, sha256_bytes, sha256_file
from benchmark.datasets.splits import PARTS, SPLIT_FORMAT, SplitFileError

__all__ = [
    "NAME_COLUMNS",
    "SCORE_COLUMNS",
    "PyiqaMeta",
    "PyiqaImport",
    "read_meta",
    "read_split_json",
    "read_split_columns",
    "import_splits",
]

#: pyiqa's image-name columns, most specific first (FR sheets also carry ``ref_name``)
NAME_COLUMNS = ("dist_name", "img_name", "img_name/patch_name", "Image name", "image_name", "name")
SCORE_COLUMNS = ("mos", "MOS", "dmos", "DMOS")
HOLDOUT = {"train": "train", "val": "test"}  # pyiqa part -> our part, 10-split files
BY_NAME = {part: part for part in PARTS}


@dataclass(frozen=True)
class PyiqaMeta:
    path: Path
    names: list[str]
    scores: np.ndarray | None
    name_column: str
    score_column: str | None
    split_columns: dict[str, list[str]]  # every column whose name contains "split": its cells


@dataclass(frozen=True)
class PyiqaImport:
    split_file: dict  # benchmark.datasets.splits format, checksummed
    counts: list[dict[str, int]]  # per split, images per part
    notes: list[str]


def read_meta(path: Path) -> PyiqaMeta:
    path = Path(path)
    frame = read_label_csv(path, "pyiqa", [], dtype=str, keep_default_na=False)
    name_column = next((c for c in NAME_COLUMNS if c in frame.columns), None)
    if name_column is None:
        raise DatasetError(f"pyiqa: {path} has no image-name column (one of "
                           f"{', '.join(NAME_COLUMNS)}; columns: {', '.join(frame.columns)})")
    score_column = next((c for c in SCORE_COLUMNS if c in frame.columns), None)
    scores = None
    if score_column is not None:
        scores = pd.to_numeric(frame[score_column], errors="coerce").to_numpy(float)
    names = frame[name_column].str.strip().tolist()
    if "" in names:
        raise DatasetError(f"pyiqa: {path} row {names.index('') + 1} has an empty {name_column}")
    # pyiqa's own rule for what a split column is (BaseIQADataset.get_split)
    splits = {c: frame[c].str.strip().tolist() for c in frame.columns if "split" in c}
    return PyiqaMeta(path, names, scores, name_column, score_column, splits)


def read_split_columns(meta: PyiqaMeta,
                       columns: list[str] | None = None) -> dict[str, dict[str, list[int]]]:
    """The split columns of ``meta`` (all, or ``columns``) as split-file content: the positions
    of each column's ``train``/``val``/``test`` cells; empty cells are outside the split."""
    chosen = list(columns) if columns else list(meta.split_columns)
    if not chosen:
        raise SplitFileError(f"pyiqa: {meta.path} has no split columns (names containing "
                             "'split'); give a split file")
    splits = {}
    for column in chosen:
        if column not in meta.split_columns:
            raise SplitFileError(f"pyiqa: {meta.path} has no split column {column!r} (split "
                                 f"columns: {', '.join(meta.split_columns) or 'none'})")
        cells = meta.split_columns[column]
        bad = next((row for row, cell in enumerate(cells) if cell not in ("", *PARTS)), None)
        if bad is not None:
            raise SplitFileError(
                f"pyiqa: {meta.path} column {column!r} row {bad + 2} is {cells[bad]!r}, not "
                f"train, val, test or empty (choose the split columns with --column)")
        splits[column] = {part: [row for row, cell in enumerate(cells) if cell == part]
                          for part in PARTS}
    return splits


def read_split_json(path: Path) -> dict[str, dict[str, list[int]]]:
    """pyiqa split content as JSON; pickles are refused, never opened with ``pickle``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise SplitFileError(f"pyiqa split file {path} cannot be read ({error.strerror})") from None
    if path.suffix.lower() in (".pkl", ".pickle") or raw[:1] == b"\x80":
        raise SplitFileError(
            f"pyiqa split file {path} is a pickle: pickles are never loaded (they can run "
            "code); convert it to JSON in an environment you trust"
        )
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SplitFileError(f"pyiqa split file {path} is not valid JSON ({error})") from None
    if not isinstance(data, dict) or not data:
        raise SplitFileError(f"pyiqa split file {path} must map split keys to parts")
    splits = {}
    for key, parts in data.items():
        if not isinstance(parts, dict) or not set(parts) <= set(PARTS):
            raise SplitFileError(f"pyiqa split file {path}: split {key!r} must map "
                                 f"train/val/test to index lists")
        for part, indices in parts.items():
            if not isinstance(indices, list) or not all(
                    isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices):
                raise SplitFileError(f"pyiqa split file {path}: split {key!r} part {part!r} "
                                     "is not a list of row indices")
        splits[str(key)] = {part: list(parts.get(part, [])) for part in PARTS}
    order = sorted(splits, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
    return {key: splits[key] for key in order}


def _key(name: str) -> str:
    text = name.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text.lower()


def _match_rows(meta: PyiqaMeta, images: list[str]) -> list[str | None]:
    """The table image of every meta row (None: no image), by path suffix."""
    index: dict[str, list[str]] = {}
    for image in images:
        parts = _key(image).split("/")
        for start in range(len(parts)):
            index.setdefault("/".join(parts[start:]), []).append(image)
    matched: list[str | None] = []
    owner: dict[str, int] = {}
    for row, name in enumerate(meta.names):
        parts = _key(name).split("/")
        hits = next((index[s] for s in ("/".join(parts[i:]) for i in range(len(parts)))
                     if s in index), [])
        if len(hits) > 1:
            raise DatasetError(f"pyiqa: {meta.path} row {row + 2} ({name}) matches several "
                               f"images of the table ({hits[0]}, {hits[1]})")
        image = hits[0] if hits else None
        if image is not None and image in owner:
            raise DatasetError(f"pyiqa: {meta.path} rows {owner[image] + 2} and {row + 2} both "
                               f"match image {image}")
        if image is not None:
            owner[image] = row
        matched.append(image)
    unlisted = [image for image in images if image not in owner]
    if unlisted:
        raise DatasetError(f"pyiqa: {len(unlisted)} image(s) of the table are not in "
                           f"{meta.path}, e.g. {unlisted[0]} (a meta CSV of another dataset?)")
    return matched


def _opens_with_clive_training(meta: PyiqaMeta) -> bool:
    leading = [PurePosixPath(_key(n)).name for n in meta.names[:len(TRAINING_IMAGES)]]
    return leading == list(TRAINING_IMAGES)


def _row_offset(meta: PyiqaMeta, splits: dict, given: int | None) -> tuple[int, list[str]]:
    rows = len(meta.names)
    indices = {i for parts in splits.values() for part in parts.values() for i in part}
    clive = _opens_with_clive_training(meta)
    sliced = rows - len(TRAINING_IMAGES)
    if given is not None:
        note = (f"row offset {given} given: index i is row i+{given} of {meta.path.name}"
                if given else "")
        return given, [note] if note and clive else []
    if not clive:
        return 0, []
    if indices == set(range(sliced)):
        return len(TRAINING_IMAGES), [
            f"{meta.path.name} opens with the 7 CLIVE training images t1.bmp..t7.bmp and the "
            f"split indices cover exactly its other {sliced} rows: applied row offset 7 "
            "(pyiqa's LIVEChallengeDataset drops those rows before indexing)"
        ]
    if indices and max(indices) >= sliced:
        return 0, [f"{meta.path.name} opens with the 7 CLIVE training images and the split "
                   f"indices reach row {max(indices)}: they index the CSV as written (offset 0)"]
    raise SplitFileError(
        f"{meta.path.name} opens with the 7 CLIVE training images and the split indices fit "
        "both readings: give row_offset 7 (indices count the rows after t1..t7, as pyiqa's "
        "split files do) or 0 (they index the CSV as written)"
    )


def _refuse_training_rows(meta: PyiqaMeta, splits: dict, offset: int,
                          matched: list[str | None]) -> None:
    """Indices landing on CLIVE's t1..t7 rows mean a wrong offset, even for partial copies."""
    if not _opens_with_clive_training(meta):
        return
    hit = sorted({i + offset for parts in splits.values() for part in parts.values() for i in part
                  if i + offset < len(TRAINING_IMAGES) and matched[i + offset] is None})
    if hit:
        raise SplitFileError(
            f"with row offset {offset} the split indices point at {len(hit)} CLIVE training "
            f"image row(s) of {meta.path.name} (first {meta.names[hit[0]]}), which the table "
            "does not hold: the indices probably count from row 8 (row offset 7)")


def import_splits(table: pd.DataFrame, dataset: str, meta_path: Path,
                  split_path: Path | None = None, row_offset: int | None = None,
                  allow_missing: bool = False, columns: list[str] | None = None) -> PyiqaImport:
    """pyiqa meta CSV + split JSON, or the CSV's split columns without one -> our split-file
    dict for ``table`` (see module doc)."""
    meta = read_meta(meta_path)
    if split_path is not None and columns:
        raise SplitFileError("give a split file or split columns, not both")
    splits = read_split_json(split_path) if split_path else read_split_columns(meta, columns)
    offset, notes = _row_offset(meta, splits, row_offset)
    images = table["image"].astype(str).tolist()
    matched = _match_rows(meta, images)
    _refuse_training_rows(meta, splits, offset, matched)
    holdout = all(not parts["test"] for parts in splits.values())
    mapping = HOLDOUT if holdout else BY_NAME
    dropped: set[int] = set()
    entries, counts = [], []
    for number, (key, parts) in enumerate(splits.items()):
        entry = {"index": number, "seed": None, "pyiqa_split": key, **{p: [] for p in PARTS}}
        seen: dict[str, str] = {}
        for pyiqa_part, ours in mapping.items():
            for index in parts[pyiqa_part]:
                row = index + offset
                if row >= len(meta.names):
                    raise SplitFileError(
                        f"pyiqa split {key!r} part {pyiqa_part!r} has index {index}, beyond the "
                        f"{len(meta.names)} rows of {meta.path.name} (offset {offset})")
                image = matched[row]
                if image is None:
                    dropped.add(row)
                    continue
                if image in seen:
                    raise SplitFileError(f"pyiqa split {key!r} puts {image} in both "
                                         f"{seen[image]} and {ours}")
                seen[image] = ours
                entry[ours].append(image)
        entries.append(entry)
        counts.append({part: len(entry[part]) for part in PARTS})
    if dropped and not allow_missing:
        first = meta.names[min(dropped)]
        raise DatasetError(
            f"pyiqa: {len(dropped)} split row(s) of {meta.path.name} have no image in the "
            f"table, first {first} (allow_missing / --allow-missing for a partial copy)")
    if dropped:
        notes.append(f"{len(dropped)} split row(s) without an image in the table were dropped")
    if holdout:
        notes.append("pyiqa 'val' (its held-out part; the file has no 'test') imported as our "
                     "test; our val is empty")
    notes += _checks(table, meta, matched, entries)
    official = _is_official(table, entries)
    if official:
        notes.append("identical to the dataset's official split")
    body = {
        "format": SPLIT_FORMAT,
        "dataset": dataset,
        "n_images": int(len(table)),
        "protocol": {"source": "pyiqa", "official": official, "parts": mapping,
                     "row_offset": offset, "allow_missing": allow_missing},
        "source": {"meta_csv": meta.path.name, "meta_sha256": sha256_file(meta.path),
                   **({"split_json": Path(split_path).name,
                       "split_sha256": sha256_file(Path(split_path))} if split_path else
                      {"split_columns": list(splits)}),
                   "dropped_rows": len(dropped)},
        "splits": entries,
    }
    split_file = {**body, "sha256": sha256_bytes(canonical_json(body).encode())}
    return PyiqaImport(split_file, counts, notes)


def _checks(table: pd.DataFrame, meta: PyiqaMeta, matched: list[str | None],
            entries: list[dict]) -> list[str]:
    notes = []
    if meta.scores is not None:
        rows = [r for r, image in enumerate(matched) if image]
        theirs = meta.scores[rows]
        mine = table.set_index("image")["score"].reindex([matched[r] for r in rows]).to_numpy()
        differ = ~np.isclose(theirs, mine, rtol=1e-6, atol=1e-4)
        if differ.any():
            notes.append(f"{int(differ.sum())} of {len(rows)} {meta.score_column} values differ "
                         f"from our scores (max |diff| {np.nanmax(np.abs(theirs - mine)):.4g}): "
                         "another label file or scale; the split itself is matched by name")
    group = table.set_index("image")["group"]
    for entry in entries:
        shared = set(group[entry["train"]]) & set(group[entry["test"]])
        if shared:
            notes.append(f"pyiqa split {entry['pyiqa_split']}: {len(shared)} content group(s) "
                         "in both train and test")
    return notes


def _is_official(table: pd.DataFrame, entries: list[dict]) -> bool:
    official = table["official_split"].astype(str)
    if len(entries) != 1 or (official == "").any():
        return False
    assigned = {image: part for part in PARTS for image in entries[0][part]}
    return all(assigned.get(image) == part for image, part in zip(table["image"], official))
