"""The run record: the unit every sweep, table and plot is made of.

One directory per (model, dataset, split, config hash) under ``<results>/runs/``::

    runs/<model>/<dataset>/split<k>-<hash10>/
        record.json       resolved config + hash, seeds, git commit, versions, device,
                          timings, per-epoch history, metrics per selection rule
        predictions.csv   per image: part (val/test), label, unit label, prediction per rule
        checkpoint.pt     last-epoch weights (+ optimiser state while training)
        best_val.pt       weights of the epoch chosen on the validation slice

The directory is built as ``split<k>-<hash10>.partial`` and renamed when complete, so a
record in a folder named ``split<k>-<hash10>`` is a finished run; a ``.partial`` folder is
never counted, whatever it holds. The same hash means the same run: it is skipped.
"""

from __future__ import annotations

import json
import math
import platform
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, TypedDict

from benchmark.errors import UserError
from benchmark.files import atomic_write_json, canonical_json, sha256_bytes

__all__ = [
    "RECORD_SCHEMA",
    "SELECTION_RULES",
    "RunRecord",
    "write_record",
    "RunKey",
    "RecordError",
    "config_hash",
    "select_epochs",
    "run_dir",
    "find_record",
    "iter_records",
    "record_paths",
    "load_record",
    "package_versions",
    "git_state",
]

RECORD_SCHEMA = "bench-run/2"
#: earlier schemas load_record still reads: bench-run/1 numbered epochs from 0
_OLD_SCHEMAS = ("bench-run/1",)

#: how the reported epoch is chosen; "test_oracle" is what published IQA code does (best
#: epoch on the test split) and is kept only to measure its optimism, never as the default
SELECTION_RULES = ("val", "last", "test_oracle")

#: a finished run's folder, or the fixed-name copy a DVC stage exports (``split0-dvc``, under
#: the pipeline folder); ``split0-<hash10>.partial`` (a run in progress) never matches
_FINISHED = re.compile(r"^split\d+-(?:[0-9a-f]{10}|dvc)$")
#: keys every reader of a record relies on
_REQUIRED = ("model", "dataset", "split", "config", "config_hash", "metrics")


class RunRecord(TypedDict):
    """What ``record.json`` holds (schema bench-run/2): written by :func:`write_record`, read
    by :func:`load_record` (which adds ``_dir``, the folder it was read from)."""

    schema: str
    model: str
    dataset: str
    split: int
    split_seed: int
    config: dict[str, Any]  # the model's resolved config, as hashed
    run_config: dict[str, Any]  # how it ran (device, seed, threads, ...), as asked
    dataset_recipe: dict[str, Any]  # what the dataset changed in the paper recipe
    config_hash: str
    identity: dict[str, Any]  # everything the hash is computed over
    seed: int
    protocol: str  # honest | paper
    git: dict[str, Any]
    versions: dict[str, str]
    device: dict[str, str]
    data: dict[str, Any]  # root, table/split checksums, part sizes, partial copy or not
    prerequisites: dict[str, dict[str, str]]  # model → {dir, config_hash} (QFM's teacher)
    fit_facts: dict[str, Any]
    timings: dict[str, float]
    history: list[dict[str, Any]]  # per epoch: loss terms, val and test metrics
    metrics: dict[str, dict[str, Any]]  # selection rule → {epoch, val, test}
    precision: dict[str, Any]
    compile: dict[str, Any]
    data_path: str
    labels: dict[str, Any]  # the label scale a trained model scores on later
    higher_is_better: dict[str, bool]
    suite_tag: str | None
    status: str
    created: str


def write_record(folder: Path, record: RunRecord) -> Path:
    """Write ``folder/record.json`` atomically; a record lacking a key of :class:`RunRecord`
    is a programming error and is refused before anything is written."""
    missing = [key for key in RunRecord.__annotations__ if key not in record]
    if missing or record["schema"] != RECORD_SCHEMA:
        raise RecordError(f"refusing to write a record without {missing or ['schema']}")
    path = Path(folder) / "record.json"
    atomic_write_json(path, dict(record))
    return path


class RecordError(UserError, ValueError):
    """A record.json that is unreadable or lacks what every record has; names the file."""


@dataclass(frozen=True)
class RunKey:
    model: str
    dataset: str
    split: int


def select_epochs(history: list[dict], paper_rule: str = "plcc") -> dict[str, dict]:
    """The epoch reported under each selection rule, from a run's per-epoch history;
    ``test_oracle`` is ``paper_rule``, the test-set rule of the model's released code
    (:data:`benchmark.protocol.PAPER_RULES`)."""
    from benchmark.protocol import paper_epoch

    def chosen(entry: dict) -> dict:
        return {"epoch": entry["epoch"], "val": entry["val"], "test": entry["test"]}

    val_scored = [h for h in history if not math.isnan(h["val"].get("srcc", float("nan")))]
    best_val = max(val_scored, key=lambda h: (h["val"]["srcc"], -h["epoch"])) if val_scored \
        else history[-1]
    return {
        "val": {**chosen(best_val),
                "rule_fallback": None if val_scored else "no validation images: last epoch"},
        "last": chosen(history[-1]),
        "test_oracle": {**chosen(paper_epoch(history, paper_rule)), "rule": paper_rule},
    }


def config_hash(identity: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of everything that changes a run's result."""
    return sha256_bytes(canonical_json(identity).encode())


def run_dir(results: Path, key: RunKey, digest: str) -> Path:
    return Path(results) / "runs" / key.model / key.dataset / f"split{key.split}-{digest[:10]}"


def find_record(results: Path, key: RunKey, digest: str) -> Path | None:
    path = run_dir(results, key, digest) / "record.json"
    return path if path.is_file() else None


def load_record(path: Path) -> RunRecord:
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(f"{path}: unreadable run record ({error})") from None
    if isinstance(record, dict) and record.get("schema") in _OLD_SCHEMAS:
        record = _epochs_from_one(record)
    if not isinstance(record, dict) or record.get("schema") != RECORD_SCHEMA:
        raise RecordError(f"{path} is not a {RECORD_SCHEMA} record")
    missing = [key for key in _REQUIRED if key not in record]
    if missing:
        raise RecordError(f"{path}: run record has no {missing[0]!r} (a damaged file: rerun "
                          f"the run with --force)")
    metrics = record["metrics"]
    if not (isinstance(metrics, dict) and metrics
            and all(isinstance(chosen, dict) and "test" in chosen for chosen in metrics.values())):
        raise RecordError(f"{path}: run record's metrics hold no test metrics per selection rule")
    record["_dir"] = str(path.parent)
    return record


def _epochs_from_one(record: dict[str, Any]) -> dict[str, Any]:
    """A bench-run/1 record renumbered as bench-run/2 (epochs from 1, as the logs print)."""
    for entry in [*record.get("history", []), *record.get("metrics", {}).values()]:
        entry["epoch"] += 1
    return {**record, "schema": RECORD_SCHEMA}


def _finished(folders: Iterator[Path]) -> list[Path]:
    return [folder / "record.json" for folder in folders
            if _FINISHED.match(folder.name) and (folder / "record.json").is_file()]


def record_paths(results: Path) -> list[Path]:
    """The record.json of every finished run under ``results/runs``, in a stable order."""
    return sorted(_finished((Path(results) / "runs").glob("*/*/split*-*")))


def iter_records(results: Path) -> Iterator[dict[str, Any]]:
    for path in record_paths(results):
        yield load_record(path)


def latest_record(results: Path, key: RunKey, hash_prefix: str = "",
                  protocol: str | None = None) -> Path | None:
    """The newest finished record of a key whose config hash starts with ``hash_prefix``
    (any hash when empty) and, given ``protocol``, that ran under it: how a run finds its
    prerequisites (a paper-protocol student learns from a paper-protocol teacher)."""
    pattern = f"runs/{key.model}/{key.dataset}/split{key.split}-{hash_prefix[:10]}*"

    def matches(path: Path) -> bool:
        # the folder name holds the hash's first 10 digits; a longer prefix needs the record
        if len(hash_prefix) <= 10 and protocol is None:
            return True
        record = load_record(path)
        return (record["config_hash"].startswith(hash_prefix)
                and protocol in (None, record.get("protocol", "honest")))

    found = [path for path in _finished(Path(results).glob(pattern)) if matches(path)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("iqa-bench", "torch", "torchvision", "timm", "numpy", "scipy", "pandas",
                    "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def git_state(cwd: Path | None = None) -> dict[str, Any]:
    """The commit and dirty flag of the code that ran, or None outside a checkout."""
    here = Path(cwd or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=here, capture_output=True, text=True,
                                    check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}
