"""Fault injection: a crash at every atomic write and rename of a run, a sweep, a prepare and
an archive merge (a disk full at one of them too).

Every commit goes through ``os.replace`` inside :mod:`benchmark.files`; :class:`Faults` stands in
for that module's ``os`` and dies just before or just after the commit named by an injection
point. After each crash: nothing the user placed is gone, nothing unfinished is counted, and
running again (as a sweep does: ``--resume``) ends with the uninterrupted result, counted once.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import benchmark.files
from benchmark.checkpoints import RESUME_KEYS
from benchmark.cli import main
from benchmark.datasets.base import DatasetError
from benchmark.datasets.download import safe_extract
from benchmark.datasets.prepare import load_prepared, prepare
from benchmark.engine import RunConfig
from benchmark.records import RunKey, latest_record, record_paths
from benchmark.registry import dataset_registry
from benchmark.runner import ResumableRunError, run_one
from benchmark.trained import load_trained
from benchmark.datasets.splits import SplitProtocol
from benchmark.grid.sweep import load_states
from conftest import TINY_PROBE, write_tiny_params, write_tiny_set

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUIET = RunConfig(progress=False)
KEY = RunKey("probe", "generic", 0)
FINISHED = re.compile(r"^split\d+-[0-9a-f]{10}$")


class Killed(BaseException):
    """What the process dies of at an injection point: no ``except Exception`` stops it."""


def label(target: Path) -> str:
    """An injection point's name: the committed file, qualified by the run folder it is in."""
    if target.parent.name.endswith(".partial"):
        return f"partial/{target.name}"
    if FINISHED.match(target.name):
        return "run folder"
    if FINISHED.match(target.parent.name):
        return f"final/{target.name}"
    return target.name


class Faults:
    """``os`` for benchmark.files: at the ``nth`` commit named ``point`` (``name#n``), die
    ``before`` or ``after`` it, or fail it as a full disk would (``full``)."""

    def __init__(self, point: str, when: str):
        name, _, nth = point.partition("#")
        self.name, self.nth, self.when, self.seen = name, int(nth or 1), when, []

    def __getattr__(self, attribute):
        return getattr(os, attribute)

    def replace(self, source, target) -> None:
        self.seen.append(label(Path(target)))
        hit = self.seen.count(self.name) == self.nth and self.seen[-1] == self.name
        if hit and self.when == "full":
            raise OSError(errno.ENOSPC, "No space left on device")
        if hit and self.when == "before":
            raise Killed(f"before {self.name}")
        os.replace(source, target)
        if hit and self.when == "after":
            raise Killed(f"after {self.name}")


@pytest.fixture
def faults(monkeypatch):
    """``faults(point, when)`` arms an injection point; ``faults()`` disarms it."""
    def arm(point: str | None = None, when: str | None = None) -> Faults | None:
        injected = Faults(point, when) if point else None
        monkeypatch.setattr(benchmark.files, "os", injected or os)
        return injected

    return arm


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: what "nothing the user placed is gone" compares."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run(root: Path, results: Path, split: int = 0, **kwargs) -> dict:
    return run_one("probe", "generic", split, root, dict(TINY_PROBE), QUIET, results,
                   log=lambda _: None, **kwargs)


def outcome(record: dict) -> dict:
    """What a run computed, without its timings."""
    history = [{k: v for k, v in entry.items() if k != "time_s"} for entry in record["history"]]
    return {"hash": record["config_hash"], "metrics": record["metrics"], "history": history}


@pytest.fixture(scope="module")
def reference(one_torch_thread, tiny_root, tmp_path_factory) -> dict:
    results = tmp_path_factory.mktemp("reference")
    record = run(tiny_root, results)
    return {"outcome": outcome(record),
            "predictions": (Path(record["_dir"]) / "predictions.csv").read_bytes()}


# ------------------------------------------------------------------------------------- a run

RUN_POINTS = [(point, when)
              for point in ("partial/best_val.pt", "partial/checkpoint.pt",
                            "partial/checkpoint.pt#2", "partial/predictions.csv",
                            "partial/record.json", "run folder", "final/checkpoint.pt")
              for when in ("before", "after")]


@pytest.mark.parametrize("point, when", RUN_POINTS, ids=[f"{w}-{p}" for p, w in RUN_POINTS])
def test_a_run_killed_at_any_commit_resumes_to_the_same_result(point, when, tiny_root,
                                                               reference, faults, tmp_path):
    placed = tree(tiny_root)
    results = tmp_path / "results"
    injected = faults(point, when)
    with pytest.raises(Killed):
        run(tiny_root, results, resume=True)
    assert point.split("#")[0] in injected.seen
    faults()
    counted = point == "final/checkpoint.pt" or (point == "run folder" and when == "after")
    # a .partial folder holding a record.json is a run in progress, never a finished one
    assert len(record_paths(results)) == int(counted)
    assert (latest_record(results, KEY) is not None) == counted
    partial = [p for p in (results / "runs/probe/generic").glob("*.partial")
               if (p / "checkpoint.pt").is_file()] if (results / "runs").exists() else []
    if partial and not counted:  # a plain rerun neither discards it nor trains beside it
        before = tree(partial[0])
        with pytest.raises(ResumableRunError, match="--resume"):
            run(tiny_root, results)
        assert tree(partial[0]) == before
    record = run(tiny_root, results, resume=True)
    assert outcome(record) == reference["outcome"]
    assert (Path(record["_dir"]) / "predictions.csv").read_bytes() == reference["predictions"]
    assert [p.name for p in (results / "runs/probe/generic").iterdir()] == [Path(record["_dir"]).name]
    load_trained(record["_dir"])  # the finished checkpoint always loads
    if not counted:  # stripped once the record was in place
        kept = torch.load(Path(record["_dir"]) / "checkpoint.pt", weights_only=True)
        assert not set(RESUME_KEYS) & set(kept)
    assert tree(tiny_root) == placed


def test_a_full_disk_names_the_file_and_the_run_resumes_from_the_intact_checkpoint(
        tiny_root, reference, faults, tmp_path):
    results = tmp_path / "results"
    args = ["run", "--model", "probe", "--dataset", "generic", "--split", "0", "--root",
            str(tiny_root), "--results", str(results), "--device", "cpu", "--quiet",
            *(f"--set={k}={json.dumps(v)}" for k, v in TINY_PROBE.items())]
    faults("partial/predictions.csv", "full")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "no space left on device writing" in message and "predictions.csv" in message
    assert re.search(r"the last checkpoint \S+checkpoint\.pt is intact", message)
    faults()
    result = CliRunner().invoke(main, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    (folder,) = [Path(p).parent for p in record_paths(results)]
    assert (folder / "predictions.csv").read_bytes() == reference["predictions"]


# ------------------------------------------------------------------------------------ a sweep

@pytest.fixture(scope="module")
def finished_grid(one_torch_thread, tiny_root, tmp_path_factory) -> Path:
    """Both cells of the tiny grid, run once: a sweep over them spawns no process."""
    results = tmp_path_factory.mktemp("grid") / "results"
    for split in (0, 1):
        run(tiny_root, results, split)
    return results


def sweep(params: Path, *args: str):
    return CliRunner().invoke(main, ["sweep", "--params", str(params), *args])


SWEEP_POINTS = [(f"state.json#{n}", when) for n in (1, 2, 3) for when in ("before", "after")]


@pytest.mark.parametrize("point, when", SWEEP_POINTS, ids=[f"{w}-{p}" for p, w in SWEEP_POINTS])
def test_a_sweep_killed_at_any_state_write_continues_without_counting_twice(
        point, when, tiny_root, finished_grid, faults, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(finished_grid, results)
    params = write_tiny_params(tmp_path, tiny_root, results)
    records = {p: p.stat().st_mtime_ns for p in record_paths(results)}
    faults(point, when)
    with pytest.raises(Killed):
        sweep(params)
    faults()
    for state in load_states(results):  # whatever was committed is a readable, honest state
        assert sum(c["status"] == "done" for c in state["cells"].values()) <= 2
    result = sweep(params)
    assert result.exit_code == 0, result.output
    assert "2 runs: 2 done, 0 running, 0 failed, 0 pending" in result.output
    assert {p: p.stat().st_mtime_ns for p in record_paths(results)} == records  # none redone


def test_a_sweep_trusts_the_disk_over_its_state_file(tiny_root, finished_grid, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(finished_grid, results)
    params = write_tiny_params(tmp_path, tiny_root, results)
    assert sweep(params).exit_code == 0
    (state,) = load_states(results)
    gone = Path(state["cells"]["probe/generic/1"]["dir"])
    shutil.rmtree(gone)
    status = sweep(params, "--status")
    assert "2 runs: 1 done, 0 running, 0 failed, 1 pending" in status.output
    (state,) = load_states(results)
    assert state["cells"]["probe/generic/1"]["reason"] == f"its run folder {gone} is gone"


# ---------------------------------------------------------------------------------- a prepare

PREPARE_POINTS = [(name, when) for name in ("table.csv", "splits.json", "meta.json")
                  for when in ("before", "after")]


@pytest.mark.parametrize("point, when", PREPARE_POINTS,
                         ids=[f"{w}-{p}" for p, w in PREPARE_POINTS])
def test_a_prepare_killed_at_any_write_is_never_taken_for_a_prepared_set(point, when, tiny_root,
                                                                        faults, tmp_path):
    root = write_tiny_set(tmp_path / "set")
    placed = tree(root)
    generic = dataset_registry().get("generic")
    faults(point, when)
    with pytest.raises(Killed):
        prepare(generic(), root, SplitProtocol(seeds=(0, 1)))
    faults()
    if (point, when) == ("meta.json", "after"):
        load_prepared(root, "generic")  # meta.json is the last write: the set is complete
    else:
        with pytest.raises(DatasetError, match="no prepared data"):
            load_prepared(root, "generic")
    prepare(generic(), root, SplitProtocol(seeds=(0, 1)))
    assert tree(root / "bench") == tree(tiny_root / "bench")
    assert {k: v for k, v in tree(root).items() if not k.startswith("bench/")} == placed


# ---------------------------------------------------------------------- an archive's unpacking

@pytest.mark.parametrize("point, when", [("b.txt", "before"), ("b.txt", "after"),
                                         ("c.txt", "after")])
def test_an_unpacking_killed_midway_completes_and_keeps_the_users_files(point, when, faults,
                                                                       tmp_path):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name in ("a.txt", "b.txt", "c.txt"):
            handle.writestr(f"set/{name}", name)
    root = tmp_path / "root"
    (root / "set").mkdir(parents=True)
    (root / "set" / "mine.txt").write_text("user's")
    faults(point, when)
    with pytest.raises(Killed):
        safe_extract(archive, root)
    faults()
    assert (root / "set" / "mine.txt").read_text() == "user's"
    safe_extract(archive, root)
    assert tree(root) == {"set/a.txt": b"a.txt", "set/b.txt": b"b.txt", "set/c.txt": b"c.txt",
                          "set/mine.txt": b"user's"}
