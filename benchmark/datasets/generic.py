"""Generic: any image-quality set described by one CSV file of the user's.

The CSV has one row per image with at least an image column (a path relative to the
dataset root) and a score column; optional columns give the content group, the per-image
standard deviation and an official split (``train``/``val``/``test`` or empty). Column
names, score direction and nominal range are options, taken from (later wins):

1. the defaults: ``<root>/labels.csv`` with columns ``image`` and ``score``, higher =
   better, range = the observed minimum and maximum, each image its own group;
2. ``<root>/generic.yaml`` when it exists: a mapping with the keys of
   :class:`GenericConfig`, read with ``yaml.safe_load``; an unknown key is an error;
3. the constructor's keywords: ``Generic(labels="scores.csv", image="file", score="mos",
   group="ref", higher_is_better=False, score_range=(0, 100))``. On the command line these
   are ``-O KEY=VALUE`` options, e.g. ``bench data prepare generic --root DIR -O score=mos
   -O higher_is_better=false -O score_range=0,100``; plain ``bench data prepare generic
   --root DIR`` uses the yaml or the defaults.

Options take effect when ``parse`` runs: the instance's ``higher_is_better``,
``score_range``, ``kind``, ``score_type`` and ``has_official_split`` then describe the
parsed file, and ``describe()`` reports the resolved options, which is what ``prepare``
records in ``meta.json``.

This module also holds the CSV-reading helpers the other CSV-based parsers share.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import pandas as pd

from benchmark.datasets.base import Dataset, DatasetError, standard_table

__all__ = [
    "Generic",
    "GenericConfig",
    "CONFIG_FILE",
    "FLAG_WORDS",
    "parse_flag",
    "load_options",
    "read_label_csv",
    "numeric_column",
]

CONFIG_FILE = "generic.yaml"
SPLIT_VALUES = ("train", "val", "test", "")
FLAG_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_label_csv(path: Path, dataset: str, columns: Sequence[str], **options) -> pd.DataFrame:
    """Read a label CSV and check that ``columns`` exist; every failure names the file."""
    try:
        frame = pd.read_csv(path, encoding="utf-8-sig", **options)
    except FileNotFoundError:
        raise DatasetError(f"{dataset}: label file {path} not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            ValueError) as error:
        raise DatasetError(f"{dataset}: cannot read {path} ({_one_line(error)})") from None
    frame.columns = [str(column).strip() for column in frame.columns]
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DatasetError(
            f"{dataset}: {path} has no column {missing[0]!r} "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )
    if frame.empty:
        raise DatasetError(f"{dataset}: {path} has a header but no rows")
    return frame


def numeric_column(frame: pd.DataFrame, column: str, key: str, path: Path, dataset: str,
                   allow_empty: bool = False) -> pd.Series:
    """``frame[column]`` as floats; a non-numeric cell is an error naming its row's ``key``."""
    values = pd.to_numeric(frame[column], errors="coerce").astype(float)
    bad = values.isna()
    if allow_empty:
        bad &= frame[column].notna() & (frame[column].astype(str).str.strip() != "")
    if bad.any():
        row = bad.to_numpy().nonzero()[0][0]
        value = frame[column].iloc[row]
        shown = "(empty)" if pd.isna(value) else repr(str(value))
        raise DatasetError(
            f"{dataset}: {path} has a non-numeric {column} {shown} for {frame[key].iloc[row]}"
        )
    return values


@dataclass(frozen=True)
class GenericConfig:
    """Where the labels are and what they mean. ``None`` columns are absent from the CSV."""

    labels: str = "labels.csv"  # relative to the dataset root, and inside it
    image: str = "image"
    score: str = "score"
    group: str | None = None  # default: each image is its own group (authentic sets)
    std: str | None = None
    split: str | None = None  # official split column: train / val / test / empty
    higher_is_better: bool = True
    score_range: tuple[float, float] | None = None  # default: observed min and max
    score_type: str = "MOS"
    kind: str = "authentic"
    title: str = ""

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "higher_is_better":
                ok = isinstance(value, bool)
            elif item.name == "score_range":
                ok = value is None or (
                    isinstance(value, (tuple, list)) and len(value) == 2
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                            and math.isfinite(v) for v in value)
                    and value[0] < value[1]
                )
            elif item.name in ("group", "std", "split"):
                ok = value is None or (isinstance(value, str) and value != "")
            else:
                ok = isinstance(value, str) and (value != "" or item.name == "title")
            if not ok:
                raise ValueError(f"option {item.name} has an invalid value {value!r}")
        if self.kind not in ("authentic", "synthetic"):
            raise ValueError(f"option kind must be authentic or synthetic, not {self.kind!r}")
        if self.score_range is not None:
            object.__setattr__(self, "score_range", tuple(float(v) for v in self.score_range))

    @classmethod
    def from_mapping(cls, options: dict[str, Any], source: str = "options") -> "GenericConfig":
        """Build from plain data (YAML or ``-O KEY=VALUE`` strings); errors name ``source``."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise DatasetError(
                f"generic: unknown option {unknown[0]!r} in {source} "
                f"(known: {', '.join(sorted(known))})"
            )
        values = dict(options)
        try:
            if isinstance(values.get("higher_is_better"), str):
                values["higher_is_better"] = parse_flag(values["higher_is_better"],
                                                        "higher_is_better")
            if isinstance(values.get("score_range"), str):
                # "-O score_range=0,100" (or 0:100) from the command line
                values["score_range"] = tuple(
                    float(v) for v in values["score_range"].replace(":", ",").split(",")
                )
            return cls(**values)
        except ValueError as error:
            raise DatasetError(f"generic: {_one_line(error)} in {source}") from None


def parse_flag(value: bool | str, what: str) -> bool:
    """A boolean option given as a bool or as text (true/false, yes/no, 1/0)."""
    if isinstance(value, bool):
        return value
    flag = FLAG_WORDS.get(str(value).strip().lower())
    if flag is None:
        raise ValueError(f"{what} must be true or false, not {value!r}")
    return flag


def load_options(path: Path) -> dict[str, Any]:
    """The option mapping of a ``generic.yaml`` (checked, not yet merged)."""
    import yaml

    try:
        options = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise DatasetError(f"generic: cannot read {path} ({_one_line(error)})") from None
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise DatasetError(f"generic: {path} must hold a mapping of options")
    GenericConfig.from_mapping(options, str(path))
    return options


def _inside_root(value: str, what: str) -> str:
    """``value`` as a POSIX path relative to the dataset root, refusing one that is absolute
    or climbs out with ``..``: a dataset's own files never point outside it."""
    posix = PurePosixPath(value.strip().replace("\\", "/"))
    if not value.strip() or posix.is_absolute() or ".." in posix.parts or ":" in posix.parts[0]:
        raise DatasetError(f"generic: {what} {value!r}, not a path inside the root")
    return posix.as_posix()


class Generic(Dataset):
    """A user's CSV-described set; see the module docstring for options and the CLI."""

    name = "generic"
    aliases = ("csv", "custom")
    title = "Generic CSV-described dataset"
    label = "Generic"
    kind = "authentic"
    score_type = "MOS"
    higher_is_better = True
    score_range = (0.0, 1.0)  # replaced by the configured or observed range in parse
    sources = ()
    layout = (
        "labels.csv      image,score[,group][,std][,split]   (column names configurable)\n"
        "generic.yaml    optional options: labels, image, score, group, std, split,\n"
        "                higher_is_better, score_range, score_type, kind, title\n"
        "<images>        at the paths given in the image column, relative to the root"
    )
    citation = "cite the dataset's own authors"
    license = "the dataset's own terms"

    def __init__(
        self,
        labels: str | None = None,
        image: str | None = None,
        score: str | None = None,
        group: str | None = None,
        std: str | None = None,
        split: str | None = None,
        higher_is_better: bool | str | None = None,
        score_range: tuple[float, float] | str | None = None,
        score_type: str | None = None,
        kind: str | None = None,
        title: str | None = None,
    ) -> None:
        # None = not given: generic.yaml or the default decides; given ones override the yaml
        given = dict(labels=labels, image=image, score=score, group=group, std=std, split=split,
                     higher_is_better=higher_is_better, score_range=score_range,
                     score_type=score_type, kind=kind, title=title)
        self.options = {key: value for key, value in given.items() if value is not None}
        GenericConfig.from_mapping(self.options)  # fail at construction, not at parse
        self.config: GenericConfig | None = None

    def resolve_config(self, root: Path) -> GenericConfig:
        """``root/generic.yaml`` (when present) overridden by the constructor's options."""
        path = Path(root) / CONFIG_FILE
        from_file = load_options(path) if path.is_file() else {}
        source = f"{path} and options" if from_file else "options"
        return GenericConfig.from_mapping({**from_file, **self.options}, source)

    def describe(self) -> dict:
        resolved = asdict(self.config) if self.config else dict(self.options)
        return {**super().describe(), "options": resolved}

    def parse(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        config = self.resolve_config(root)
        source = f"{root / CONFIG_FILE} or options" if (root / CONFIG_FILE).is_file() else "options"
        path = root / _inside_root(config.labels, f"{source} give labels")
        optional = [c for c in (config.group, config.std, config.split) if c is not None]
        text_columns = [config.image] + [c for c in (config.group, config.split) if c]
        frame = read_label_csv(path, self.name, [config.image, config.score, *optional],
                               dtype={c: str for c in text_columns}, keep_default_na=False,
                               na_values={c: [""] for c in (config.score, config.std) if c})
        rows = pd.DataFrame({
            "image": [_inside_root(value, f"{path} lists image") for value in frame[config.image]],
            "score": numeric_column(frame, config.score, config.image, path, self.name),
        })
        rows["group"] = frame[config.group].str.strip() if config.group else rows["image"]
        if (rows["group"] == "").any():
            bad = rows.loc[rows["group"] == "", "image"].iloc[0]
            raise DatasetError(f"generic: {path} has an empty {config.group} for {bad}")
        if config.std:
            rows["score_std"] = numeric_column(frame, config.std, config.image, path, self.name,
                                               allow_empty=True)
        if config.split:
            split = frame[config.split].str.strip().str.lower()
            bad = ~split.isin(SPLIT_VALUES)
            if bad.any():
                raise DatasetError(
                    f"generic: {path} has split {frame[config.split][bad].iloc[0]!r} for "
                    f"{rows['image'][bad].iloc[0]} (allowed: train, val, test or empty)"
                )
            rows["official_split"] = split
        self._apply(config, rows["score"], path)
        return standard_table(self, rows)

    def _apply(self, config: GenericConfig, scores: pd.Series, path: Path) -> None:
        self.config = config
        if config.score_range is None:
            low, high = float(scores.min()), float(scores.max())
            if not low < high:
                raise DatasetError(
                    f"generic: every score in {path} is {low}; give score_range in {CONFIG_FILE}"
                )
            self.score_range = (low, high)
        else:
            self.score_range = config.score_range
        self.higher_is_better = config.higher_is_better
        self.score_type = config.score_type
        self.kind = config.kind
        self.title = config.title or Generic.title
        self.has_official_split = config.split is not None
