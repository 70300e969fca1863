"""params.yaml → a validated grid: which (entry, dataset, split) cells run, with what config.

``params.yaml`` is the single source of truth of ``dvc repro`` and ``bench sweep``. It names
grid *entries* (a registered model plus hyper-parameters: QFM-IQM's ablation presets are
entries of model ``qfm``), *suites* (entries × datasets × splits, with per-suite overrides)
and the *active* suite, a YAML alias of one of them so that ``dvc.yaml`` can read its lists.

Every mistake is a :class:`SuiteError` whose one line names the offending key, raised
before any run starts. :func:`load_params` checks structure and names through the
registries without importing a model; :func:`benchmark.grid.cells.check_params` also
resolves every cell's config (importing the models) and the teacher/student order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from benchmark.errors import UserError
from benchmark.registry import UnknownNameError, dataset_registry, model_registry

__all__ = ["SuiteError", "Paths", "Entry", "Cell", "Suite", "Params", "load_params",
           "parse_params", "read_yaml", "parse_indices", "switch_suite",
           "TOP_KEYS", "SUITE_KEYS", "RUN_KEYS"]

TOP_KEYS = ("paths", "protocol", "models", "suites", "suite")
SUITE_KEYS = ("datasets", "test_datasets", "splits", "expect_splits", "run", "teacher", "models",
              "students", "cross")
CROSS_KEYS = ("train", "test")
RUN_KEYS = ("device", "seed", "amp", "compile", "workers", "cache", "threads", "protocol")
PROTOCOL_KEYS = ("seeds", "rounding", "val_fraction", "min_val_groups")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a stage name part and a folder name


class SuiteError(UserError, ValueError):
    """A params.yaml (or grid selection) mistake; the message names the key."""


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and exponents, the way DVC reads params.yaml.

    DVC rewrites the file (``dvc exp run -S``) without quoting ``off`` or ``yes``, which are
    strings in YAML 1.2 but booleans to PyYAML's 1.1 rules: ``amp: off`` must stay "off";
    and ``lr: 1e-4`` is a number to DVC, so it is one here too. A key given twice in one
    mapping is an error: PyYAML would silently keep the last one.
    """

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue  # a complex key: unhashable, and none in a params file
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"duplicate key {key!r}",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                                    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                    re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$"),
                                    list("-+0123456789"))


@dataclass(frozen=True)
class Paths:
    data: Path = Path("data")
    results: Path = Path("results")
    pipeline: Path = Path("results/dvc")
    report: Path = Path("results")

    def dataset_root(self, dataset: str) -> Path:
        return self.data / dataset

    def export_dir(self, cell: "Cell") -> Path:
        """The fixed folder a DVC stage owns for a cell (run folders carry a hash DVC cannot
        know); dvc.yaml spells the same path."""
        return self.pipeline / "runs" / cell.entry / cell.dataset / f"split{cell.split}-dvc"

    def metrics_file(self, cell: "Cell") -> Path:
        return self.pipeline / "metrics" / cell.entry / cell.dataset / f"split{cell.split}.json"


@dataclass(frozen=True)
class Entry:
    """A grid row: ``name`` runs registered ``model`` with ``overrides`` on top of its recipe."""

    name: str
    model: str
    overrides: dict[str, Any] = field(default_factory=dict, compare=False)
    student: bool = False


@dataclass(frozen=True)
class Cell:
    entry: str
    model: str
    dataset: str
    split: int
    overrides: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def id(self) -> str:
        return f"{self.entry}/{self.dataset}/{self.split}"


@dataclass(frozen=True)
class Suite:
    name: str
    datasets: tuple[str, ...]
    splits: tuple[int, ...]
    entries: tuple[Entry, ...]  # the suite's models, then its students
    teacher: str | None  # the entry whose run students need
    teacher_model: str | None
    run: dict[str, Any] = field(default_factory=dict, compare=False)
    #: (train, test) dataset pairs: every entry's split models of train scored on all of test
    cross: tuple[tuple[str, str], ...] = ()
    #: datasets that only cross pairs score: prepared by dvc.yaml, never trained on
    test_datasets: tuple[str, ...] = ()

    def cells(self) -> list[Cell]:
        """Every cell, teachers' cells before their students' (entry, dataset, split order)."""
        return [Cell(e.name, e.model, d, s, e.overrides)
                for e in sorted(self.entries, key=lambda e: e.student)
                for d in self.datasets for s in self.splits]


@dataclass(frozen=True)
class Params:
    path: Path
    paths: Paths
    protocol: dict[str, Any]
    entries: dict[str, dict[str, Any]]  # name → hyper-parameters incl. an optional "model"
    suites: dict[str, dict[str, Any]]
    active: str

    @property
    def seeds(self) -> tuple[int, ...]:
        return parse_indices(str(self.protocol["seeds"]), f"{self.path}: protocol.seeds")

    def suite(self, name: str | None = None, models: Iterable[str] | None = None,
              datasets: Iterable[str] | None = None,
              splits: Iterable[int] | None = None) -> Suite:
        """Suite ``name`` (default: the active one); given lists replace its own."""
        name = name or self.active
        if name not in self.suites:
            raise SuiteError(f"unknown suite {name!r} (suites in {self.path}: "
                             f"{', '.join(self.suites)})")
        raw = self.suites[name]
        where = f"{self.path}: suites.{name}"
        own = {**dict(raw["models"] or {}), **dict(raw["students"] or {})}
        students = set(raw["students"] or {})
        chosen = list(models) if models is not None else list(own)
        entries = []
        for entry in chosen:
            model = self._entry_model(entry, "--models" if models is not None else where)
            # the suite sets a scale (the demo's tiny sizes); models.<entry> is the user's knob,
            # the one `dvc exp run -S` can reach, so it wins
            overrides = {**(own.get(entry) or {}), **self._hyper(entry)}
            entries.append(Entry(entry, model, overrides, entry in students))
        if datasets is not None:
            datasets = tuple(datasets)
            for dataset in datasets:
                _dataset(dataset, "--datasets")
        if splits is not None:
            splits = tuple(splits)
            _check_splits(splits, len(self.seeds), "--splits")
        teacher = raw["teacher"]
        datasets = datasets or tuple(raw["datasets"])
        test_datasets = tuple(raw["test_datasets"])
        cross = tuple((pair["train"], pair["test"]) for pair in raw["cross"]
                      if pair["train"] in datasets
                      and (pair["test"] in datasets or pair["test"] in test_datasets))
        return Suite(name, datasets, splits or tuple(raw["splits"]), tuple(entries), teacher,
                     self._entry_model(teacher, f"{where}.teacher") if teacher else None,
                     dict(raw["run"] or {}), cross, test_datasets)

    def _entry_model(self, entry: str, where: str) -> str:
        if entry in self.entries:
            return self.entries[entry].get("model", entry)
        try:  # a registered model needs no entry of its own outside dvc.yaml
            return model_registry().canonical(entry)
        except UnknownNameError as error:
            raise SuiteError(f"{where}: {error}; or add an entry under models") from None

    def _hyper(self, entry: str) -> dict[str, Any]:
        return {k: v for k, v in (self.entries.get(entry) or {}).items() if k != "model"}


def read_yaml(text: str) -> Any:
    """Parse YAML as DVC does (1.2 booleans and numbers), with a safe loader."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate ``path``: structure, entries, suites, datasets; no model import."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SuiteError(f"{path}: not found") from None
    return parse_params(text, path)


def parse_params(text: str, path: Path) -> Params:
    try:
        raw = read_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SuiteError(f"{path}:{line} {problem}") from None
    where = str(path)
    raw = _mapping(raw, where, TOP_KEYS, required=TOP_KEYS)
    paths = Paths(**{k: Path(_text(v, f"{where}: paths.{k}"))
                     for k, v in _mapping(raw["paths"], f"{where}: paths",
                                          Paths.__dataclass_fields__).items()})
    protocol = _mapping(raw["protocol"], f"{where}: protocol", PROTOCOL_KEYS, PROTOCOL_KEYS)
    entries = _entries(raw["models"], where)
    suites = _mapping(raw["suites"], f"{where}: suites")
    if not suites:
        raise SuiteError(f"{where}: suites is empty")
    for name, suite in suites.items():
        suites[name] = _suite(suite, f"{where}: suites.{name}", entries)
    params = Params(path, paths, protocol, entries, suites, _active(raw["suite"], suites, where))
    for name, suite in suites.items():
        _check_splits(suite["splits"], len(params.seeds), f"{where}: suites.{name}.splits")
    _protocol(protocol, where)
    return params


def _active(value: Any, suites: dict, where: str) -> str:
    if isinstance(value, str):
        known = ", ".join(suites)
        if value not in suites:
            raise SuiteError(f"{where}: suite: unknown suite {value!r} (known: {known})")
        raise SuiteError(f"{where}: suite must alias a suite (suite: *{value}), since dvc.yaml "
                         f"reads its lists: run `bench suite use {value}`")
    for name, suite in suites.items():
        if suite == value:
            return name
    raise SuiteError(f"{where}: suite: not an alias of any of suites ({', '.join(suites)}); "
                     f"run `bench suite use NAME`")


def _entries(value: Any, where: str) -> dict[str, dict]:
    entries = {}
    for name, hyper in _mapping(value, f"{where}: models").items():
        key = f"{where}: models.{name}"
        if not NAME.match(str(name)):
            raise SuiteError(f"{key}: entry names are letters, digits, '_', '.', '-'")
        hyper = _mapping(hyper, key)
        model = hyper.get("model", name)
        try:
            canonical = model_registry().canonical(_text(model, f"{key}.model"))
        except UnknownNameError as error:
            raise SuiteError(f"{key}{'.model' if 'model' in hyper else ''}: {error}") from None
        if canonical != model:
            raise SuiteError(f"{key}: {model!r} is an alias; write {canonical!r}")
        entries[str(name)] = hyper
    return entries


def _suite(value: Any, where: str, entries: dict) -> dict:
    suite = _mapping(value, where, SUITE_KEYS, required=SUITE_KEYS)
    datasets = suite["datasets"]
    if not isinstance(datasets, list) or not datasets:
        raise SuiteError(f"{where}.datasets: a non-empty list of dataset names")
    for index, dataset in enumerate(datasets):
        _dataset(dataset, f"{where}.datasets[{index}]")
    test_datasets = suite["test_datasets"]
    if not isinstance(test_datasets, list):  # dvc.yaml's matrix needs a list, even an empty one
        raise SuiteError(f"{where}.test_datasets: a list of dataset names that only cross "
                         f"pairs score ([] for none), got {type(test_datasets).__name__}")
    for index, dataset in enumerate(test_datasets):
        _dataset(dataset, f"{where}.test_datasets[{index}]")
        if dataset in datasets:
            raise SuiteError(f"{where}.test_datasets[{index}]: {dataset!r} is also under "
                             f"datasets (list it once)")
    _mapping(suite["run"], f"{where}.run", RUN_KEYS)
    expect = suite["expect_splits"]
    if not isinstance(expect, int) or isinstance(expect, bool) or expect < 1:
        raise SuiteError(f"{where}.expect_splits: splits a complete cell has, got {expect!r}")
    for role in ("models", "students"):
        for name, overrides in _mapping(suite[role], f"{where}.{role}").items():
            key = f"{where}.{role}.{name}"
            if name not in entries:
                hint = ("add it under models" if name in model_registry().names() else
                        f"known entries: {', '.join(entries)}")
                raise SuiteError(f"{key}: no entry {name!r} under models ({hint})")
            if "model" in _mapping(overrides, key):
                raise SuiteError(f"{key}.model: a suite cannot change an entry's model")
    both = set(suite["models"] or {}) & set(suite["students"] or {})
    if both:
        raise SuiteError(f"{where}: {sorted(both)[0]} is listed under models and students")
    if not suite["models"] and not suite["students"]:
        raise SuiteError(f"{where}: no models and no students")
    teacher = suite["teacher"]
    if suite["students"] and teacher not in (suite["models"] or {}):
        raise SuiteError(f"{where}.teacher: {teacher!r} is not one of the suite's models")
    _cross(suite["cross"], datasets, test_datasets, f"{where}.cross")
    return suite


def _cross(pairs: Any, datasets: list, test_datasets: list, where: str) -> None:
    """A list of {train, test} pairs: train one of the suite's datasets, test one of its
    datasets or test_datasets (dvc.yaml's cross stage needs the test set prepared by a data
    stage, and models trained on train)."""
    if not isinstance(pairs, list):  # dvc.yaml's matrix needs a list, even an empty one
        raise SuiteError(f"{where}: a list of {{train: DATASET, test: DATASET}} pairs "
                         f"([] for none), got {type(pairs).__name__}")
    seen = set()
    for index, pair in enumerate(pairs):
        key = f"{where}[{index}]"
        pair = _mapping(pair, key, CROSS_KEYS, required=CROSS_KEYS)
        for role, allowed, what in (("train", datasets, "datasets"),
                                    ("test", datasets + test_datasets,
                                     "datasets or test_datasets")):
            _dataset(pair[role], f"{key}.{role}")
            if pair[role] not in allowed:
                raise SuiteError(f"{key}.{role}: {pair[role]!r} is not one of the suite's "
                                 f"{what} ({', '.join(allowed)})")
        if (pair["train"], pair["test"]) in seen:
            raise SuiteError(f"{key}: {pair['train']} -> {pair['test']} is listed twice")
        seen.add((pair["train"], pair["test"]))


def _dataset(name: Any, where: str) -> None:
    text = _text(name, where)
    try:
        canonical = dataset_registry().canonical(text)
    except UnknownNameError as error:
        raise SuiteError(f"{where}: {error}") from None
    if canonical != text:
        raise SuiteError(f"{where}: {text!r} is an alias; write {canonical!r}")


def _protocol(protocol: dict, where: str) -> None:
    from benchmark.datasets.splits import SplitProtocol

    try:
        SplitProtocol(rounding=protocol["rounding"], val_fraction=float(protocol["val_fraction"]),
                      min_val_groups=int(protocol["min_val_groups"]))
    except (TypeError, ValueError) as error:
        raise SuiteError(f"{where}: protocol: {error}") from None


def _check_splits(splits: Any, n_seeds: int, where: str) -> None:
    if not isinstance(splits, (list, tuple)) or not splits:
        raise SuiteError(f"{where}: a non-empty list of split indices")
    for split in splits:
        if not isinstance(split, int) or isinstance(split, bool) or not 0 <= split < n_seeds:
            raise SuiteError(f"{where}: split {split!r} is not in 0..{n_seeds - 1} "
                             f"(protocol.seeds has {n_seeds})")
    if len(set(splits)) != len(splits):
        raise SuiteError(f"{where}: a split is listed twice")


def parse_indices(text: str, where: str) -> tuple[int, ...]:
    """``0-9``, ``0,3,5`` or a mix (``0-4,7``): in the order given, without repeats."""
    values: list[int] = []
    try:
        for part in str(text).split(","):
            low, sep, high = part.strip().partition("-")
            span = range(int(low), int(high) + 1) if sep else [int(low)]
            values += [v for v in span if v not in values]
    except ValueError:
        raise SuiteError(f"{where}: {text!r} is not a list like 0-9 or 0,3,5") from None
    if not values:
        raise SuiteError(f"{where}: {text!r} names nothing")
    return tuple(values)


def _mapping(value: Any, where: str, known: Iterable[str] | None = None,
             required: Iterable[str] = ()) -> dict:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise SuiteError(f"{where}: expected a mapping, got {type(value).__name__}")
    if known is not None:
        known = list(known)
        for key in value:
            if key not in known:
                raise SuiteError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
    for key in required:
        if key not in value:
            raise SuiteError(f"{where}: missing key {key!r}")
    return dict(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SuiteError(f"{where}: expected a name, got {value!r}")
    return value


def switch_suite(path: Path | str, name: str) -> Params:
    """Point ``suite:`` at suite ``name`` (``suite: *name``); every other line stays."""
    from benchmark.files import atomic_write_text

    path = Path(path)
    lines = path.read_text().splitlines(keepends=True)
    parent = _top_level_line(lines, "suites", path)
    indent, names, header = None, [], None
    for index in range(parent + 1, len(lines)):
        line = lines[index]
        if line.strip() and not line.startswith((" ", "\t", "#")):
            break
        match = re.match(r"^(\s+)([^\s:#]+):(\s*&[^\s#]+)?(.*)$", line.rstrip("\n"))
        if match and (indent is None or len(match.group(1)) == indent):
            indent = len(match.group(1))
            names.append(match.group(2))
            if match.group(2) == name:
                header = index
                # dvc exp run rewrites the file and drops the anchors nothing refers to
                lines[index] = f"{match.group(1)}{name}: &{name}{match.group(4)}\n"
    if header is None:
        raise SuiteError(f"unknown suite {name!r} (suites in {path}: {', '.join(names)})")
    active = _top_level_line(lines, "suite", path)
    end = active + 1
    while end < len(lines) and lines[end].startswith((" ", "\t")):
        end += 1
    lines[active:end] = [f"suite: *{name}\n"]
    text = "".join(lines)
    params = parse_params(text, path)
    atomic_write_text(path, text)
    return params


def _top_level_line(lines: list[str], key: str, path: Path) -> int:
    for index, line in enumerate(lines):
        if re.match(rf"^{re.escape(key)}:(\s|$)", line):
            return index
    raise SuiteError(f"{path}: no top-level {key!r} key")
