"""Sweeps: a suite's grid fanned out over local workers or Slurm job arrays, resumably.

The unit is the run ``bench run`` makes (:func:`benchmark.runner.run_one`), the same one
the DVC stages make. A sweep keeps its state in ``<results>/sweeps/<id>/state.json``,
rewritten atomically at every change; the id hashes the grid, so the same command run
again continues the same sweep. A run whose record (same config hash) exists is never
redone, and a run cut short resumes from its last epoch checkpoint (``resume``).
A student's run starts only once its teacher's run of the same dataset and split is done.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from benchmark.errors import UserError
from benchmark.files import (LockedError, atomic_dir, atomic_write_json, canonical_json,
                             exclusive_lock, sha256_bytes)
from benchmark.grid.cells import check_order, run_settings
from benchmark.grid.suite import Cell, Params, Paths, Suite

if TYPE_CHECKING:  # the runner imports torch: sweeps plan without it until a run starts
    from benchmark.runner import RunPlan

__all__ = ["SweepError", "Job", "plan_sweep", "SweepState", "open_state",
           "export_run", "status_lines",
           "pid_alive", "load_states", "sweep_id", "prune_exports", "wrong_teacher",
           "ready_jobs", "finish", "one_line"]

STATUSES = ("done", "running", "failed", "pending")
METRIC_KEYS = ("srcc", "plcc")  # what `dvc metrics show` lists per run and selection rule


class SweepError(UserError, RuntimeError):
    """A sweep that cannot start (bad grid, data not prepared, already running)."""


@dataclass(frozen=True)
class Job:
    """One cell with everything a worker needs; plain data, so submitit can pickle it."""

    cell: str  # entry/dataset/split
    model: str
    dataset: str
    split: int
    root: str
    results: str
    overrides: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)  # RunConfig fields
    needs: tuple[str, ...] = ()  # cells that must be done first

    def run_config(self):
        from benchmark.engine import RunConfig

        return RunConfig(**{"progress": False, **self.run})

    def argv(self) -> list[str]:
        """The ``bench run`` arguments of this cell (resume: a cut run continues)."""
        run = self.run_config()
        args = ["run", "--model", self.model, "--dataset", self.dataset, "--split",
                str(self.split), "--root", self.root, "--results", self.results, "--seed",
                str(run.seed), "--device", run.device, "--amp", run.amp, "--workers",
                str(run.workers), "--threads", str(run.threads), "--cache", run.cache, "--quiet",
                "--resume"]
        for key, value in self.overrides.items():  # JSON is YAML, which --set parses
            args += ["--set", f"{key}={json.dumps(value)}"]
        return args + (["--compile"] if run.compile else [])

    def command(self) -> str:
        """The shell line a user can paste to make this run by hand."""
        return shlex.join(["bench", *self.argv()])

    def plan(self) -> RunPlan:
        from benchmark.runner import plan_run

        return plan_run(self.model, self.dataset, self.split, Path(self.root), self.overrides,
                        self.run_config(), Path(self.results))

    def finished(self, plan: RunPlan | None = None) -> str | None:
        """The record folder of this exact config, if it exists."""
        from benchmark.records import find_record

        plan = plan or self.plan()
        found = find_record(Path(self.results), plan.key, plan.config_hash)
        return str(found.parent) if found else None

    def execute(self, log: Callable[[str], None] = print) -> dict:
        """Run in this process (DVC stages, Slurm tasks)."""
        from benchmark.runner import run_one

        return run_one(self.model, self.dataset, self.split, Path(self.root), self.overrides,
                       self.run_config(), Path(self.results), resume=True, log=log)


def wrong_teacher(plan: RunPlan, teacher_record: Path) -> str | None:
    """Why a student's planned run would not use ``teacher_record``'s run (None if it would).

    The runner takes the newest finished run of the teacher's model, dataset and split; an
    older config reused as "already done" loses to a newer one trained since.
    """
    from benchmark.records import load_record

    teacher = load_record(teacher_record)
    used = plan.prerequisites.get(teacher["model"], {})
    if used.get("config_hash") == teacher["config_hash"]:
        return None
    return (f"the newest {teacher['model']} run of {teacher['dataset']} split {teacher['split']} "
            f"is {used.get('dir')}, not this grid's teacher {teacher['_dir']}: move it aside")


def plan_sweep(params: Params, suite: Suite, device: str | None = None,
               check_data: bool = True) -> list[Job]:
    """The grid as jobs in a valid order; everything is checked before anything runs."""
    from benchmark.datasets.prepare import load_prepared
    from benchmark.datasets.base import DatasetError

    needs = check_order(suite, f"{params.path}: suites.{suite.name}", declared=False)
    run = run_settings(suite, f"{params.path}: suites.{suite.name}.run", device)
    for dataset in suite.datasets if check_data else ():
        try:
            load_prepared(params.paths.dataset_root(dataset), dataset)
        except DatasetError as error:
            raise SweepError(str(error)) from None
    entries = {e.name: e for e in suite.entries}
    jobs = []
    for cell in suite.cells():
        teachers = [_teacher(suite, entries, model) for model in needs[cell.entry]]
        jobs.append(Job(cell.id, cell.model, cell.dataset, cell.split,
                        str(params.paths.dataset_root(cell.dataset)), str(params.paths.results),
                        cell.overrides, run, tuple(f"{t}/{cell.dataset}/{cell.split}" for t in teachers if t)))
    order = {job.cell: index for index, job in enumerate(jobs)}
    return sorted(jobs, key=lambda job: (bool(job.needs), order[job.cell]))


def _teacher(suite: Suite, entries: dict, model: str) -> str | None:
    """The grid entry whose run a student needing ``model`` waits for (None: from disk)."""
    if suite.teacher in entries and suite.teacher_model == model:
        return suite.teacher
    return model if model in entries and entries[model].model == model else None


def sweep_id(suite: Suite, jobs: list[Job]) -> str:
    body = [asdict(job) for job in jobs]
    return f"{suite.name}-{sha256_bytes(canonical_json(body).encode())[:8]}"


class SweepState:
    """The sweep's state file: one entry per cell, saved atomically at every change."""

    def __init__(self, directory: Path, data: dict):
        self.dir, self.data = Path(directory), data

    @property
    def path(self) -> Path:
        return self.dir / "state.json"

    @property
    def cells(self) -> dict[str, dict]:
        return self.data["cells"]

    def status(self, cell: str) -> str:
        return self.cells[cell]["status"]

    def set(self, cell: str, status: str, **info: Any) -> None:
        entry = self.cells[cell]
        entry.update(status=status, updated=_now(), **info)
        if status == "running":
            entry["attempts"] = entry.get("attempts", 0) + 1
        self.save()

    def save(self) -> None:
        self.data["updated"] = _now()
        atomic_write_json(self.path, self.data)

    def counts(self) -> dict[str, int]:
        return {s: sum(c["status"] == s for c in self.cells.values()) for s in STATUSES}


@contextmanager
def open_state(results: Path, suite: Suite, jobs: list[Job], launcher: str) -> Iterator[SweepState]:
    """Create or continue the sweep of this grid, holding its lock while the sweep runs."""
    ident = sweep_id(suite, jobs)
    directory = Path(results) / "sweeps" / ident
    with ExitStack() as held:
        try:
            held.enter_context(exclusive_lock(directory / "lock", f"sweep {ident}"))
        except LockedError as error:
            raise SweepError(f"{error}: it is already running; see its progress with "
                             f"--status") from None
        path = directory / "state.json"
        data = _read_state(path) if path.is_file() else {
            "id": ident, "suite": suite.name, "created": _now(), "cells": {}}
        data.update(launcher=launcher, pid=os.getpid(), host=socket.gethostname())
        for job in jobs:
            entry = data["cells"].setdefault(job.cell, {"status": "pending", "attempts": 0})
            entry["command"] = job.command()
            if entry["status"] in ("running", "failed"):  # cut short, or worth another try
                entry.update(status="pending", reason=None)
        state = SweepState(directory, data)
        state.save()
        yield state


def _read_state(path: Path) -> dict:
    """A state file, with every cell it calls done checked against the disk: a run folder
    removed since (or never finished) makes its cell pending again."""
    try:
        data = json.loads(path.read_text())
        cells = data["cells"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise SweepError(f"{path}: unreadable sweep state ({error}); remove it, and the "
                         f"sweep finds its finished runs by their config hash") from None
    for entry in cells.values():
        if entry.get("status") == "done" and not (
                entry.get("dir") and (Path(entry["dir"]) / "record.json").is_file()):
            entry.update(status="pending", reason=f"its run folder {entry.get('dir')} is gone")
    return data


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def ready_jobs(jobs: list[Job], state: SweepState, log: Callable[[str], None]) -> Iterator[Job]:
    """Pending jobs whose needs are done; fails those whose needs failed, skips finished ones."""
    for job in jobs:
        if state.status(job.cell) != "pending":
            continue
        failed = [n for n in job.needs if state.status(n) == "failed"]
        if failed:
            finish(state, job, "failed", log, reason=f"needs {failed[0]}, which failed")
            continue
        if any(state.status(n) != "done" for n in job.needs):
            continue
        try:
            plan = job.plan()
            for need in job.needs:
                problem = wrong_teacher(plan, Path(state.cells[need]["dir"]) / "record.json")
                if problem:
                    raise SweepError(problem)
            done = job.finished(plan)
        except Exception as error:  # noqa: BLE001 - a bad cell fails alone, with its reason
            finish(state, job, "failed", log, reason=one_line(str(error)))
            continue
        if done:
            finish(state, job, "done", log, dir=done, reason="already done")
            continue
        yield job


def finish(state: SweepState, job: Job, status: str, echo, **info) -> None:
    state.set(job.cell, status, **info)
    counts = state.counts()
    detail = info.get("reason") or info.get("dir") or ""
    echo(f"[{counts['done']}/{len(state.cells)} done, {counts['running']} running, "
        f"{counts['failed']} failed] {status} {job.cell}" + (f": {detail}" if detail else ""))


def one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    line = (errors or lines or ["no output"])[-1]
    return line[:300]


def export_run(record: dict, out: Path, metrics: Path) -> None:
    """Copy a run's record and predictions to ``out`` and its test metrics per selection rule
    to ``metrics``: the fixed paths a DVC stage owns."""
    source = Path(record["_dir"])
    with atomic_dir(Path(out)) as tmp:
        for name in ("record.json", "predictions.csv"):
            shutil.copy2(source / name, tmp / name)
    atomic_write_json(metrics, {rule: {"epoch": chosen["epoch"], **{
        k: chosen["test"][k] for k in METRIC_KEYS}} for rule, chosen in record["metrics"].items()})


def prune_exports(paths: Paths, cells: list[Cell]) -> list[Path]:
    """Remove the exports of cells no longer in the grid (the run folders themselves stay).

    DVC leaves the outputs of a stage that left dvc.yaml on disk; the tables, which read
    every record under the pipeline folder, must not show them.
    """
    keep = {p for cell in cells for p in (paths.export_dir(cell), paths.metrics_file(cell))}
    found = [*(paths.pipeline / "runs").glob("*/*/split*-dvc"),
             *(paths.pipeline / "metrics").glob("*/*/split*.json")]
    removed = sorted(p for p in found if p not in keep)
    for path in removed:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        for parent in (path.parent, path.parent.parent):
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
    return removed


def status_lines(state: dict, alive: bool | None = None) -> list[str]:
    """The progress view: counts per status, then one line per failure."""
    cells = state["cells"]
    counts = {s: sum(c["status"] == s for c in cells.values()) for s in STATUSES}
    note = "" if alive is not False or not counts["running"] else " (its process is gone)"
    lines = [f"sweep {state['id']} ({state.get('launcher', '?')}): {len(cells)} runs: "
             + ", ".join(f"{counts[s]} {s}" for s in STATUSES) + note]
    lines += [f"  failed {cell}: {entry.get('reason') or 'no reason recorded'}"
              for cell, entry in sorted(cells.items()) if entry["status"] == "failed"]
    return lines


def pid_alive(state: dict) -> bool | None:
    """Whether the sweep process that wrote ``state`` still runs (None: another host)."""
    if state.get("host") != socket.gethostname() or "pid" not in state:
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_states(results: Path) -> list[dict]:
    paths = sorted((Path(results) / "sweeps").glob("*/state.json"))
    return [_read_state(path) for path in paths]

