"""The local launcher of ``bench sweep``: ``bench run`` subprocesses, one GPU each.

Ready jobs start as workers free up; a worker's log is its cell's log file, and its last
``Error:`` line is the cell's failure reason. A sweep stopped by SIGTERM or SIGINT stops
its runs (each resumes from its last epoch next time); one killed outright takes its runs
with it (``PR_SET_PDEATHSIG``), so none keeps writing into a folder the next sweep reuses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from benchmark.grid.sweep import Job, SweepError, SweepState, finish, one_line, ready_jobs

__all__ = ["run_local", "detect_gpus"]


def detect_gpus(explicit: str | None = None) -> list[str]:
    """GPU ids to pin workers to: ``explicit``, else the visible ones, else none."""
    if explicit:
        return [g.strip() for g in explicit.split(",") if g.strip()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _die_with_parent() -> None:
    # a sweep killed outright must not leave runs writing into the folders it will reuse
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Interrupted(Exception):
    pass


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    def handler(signum, _frame):
        raise _Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_local(jobs: list[Job], state: SweepState, workers: int = 1, gpus: list[str] = (),
              log: Callable[[str], None] = print, poll_s: float = 0.2) -> dict[str, int]:
    """Run the jobs as ``bench run`` subprocesses, ``workers`` at a time, one GPU each."""
    logs = state.dir / "logs"
    logs.mkdir(exist_ok=True)
    free = list(range(max(1, workers)))
    running: dict[str, tuple[subprocess.Popen, int, Any]] = {}
    by_cell = {job.cell: job for job in jobs}
    try:
        with _stop_on_signals():
            while True:
                started = reaped = False
                for job in ready_jobs(jobs, state, log) if free else ():
                    slot = free.pop(0)
                    running[job.cell] = _spawn(job, slot, gpus, logs, state)
                    finish(state, job, "running", log, reason=None,
                            gpu=gpus[slot % len(gpus)] if gpus else None)
                    started = True
                    if not free:
                        break
                for cell, (process, slot, handle) in list(running.items()):
                    if process.poll() is None:
                        continue
                    handle.close()
                    del running[cell]
                    free.append(slot)
                    _settle(by_cell[cell], process.returncode, state, log)
                    reaped = True
                if not (running or started or reaped):  # a full pass found nothing to start
                    return state.counts()
                time.sleep(poll_s)
    except _Interrupted as stop:
        for cell, (process, _slot, handle) in running.items():
            process.terminate()
        for cell, (process, _slot, handle) in running.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            handle.close()
            state.set(cell, "pending", reason=f"interrupted by {stop}")
        raise SweepError(f"sweep {state.data['id']} interrupted by {stop}; run the same command "
                         f"again to continue") from None


def _spawn(job: Job, slot: int, gpus: list[str], logs: Path, state: SweepState):
    from PIL import Image

    # the run decodes under the sweep's pixel limit (bench --max-pixels)
    env = {**os.environ, "BENCH_MAX_PIXELS": str(Image.MAX_IMAGE_PIXELS)}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    threads = job.run_config().threads
    if threads:  # before torch starts, so its OpenMP pool is sized once
        env["OMP_NUM_THREADS"] = str(threads)
    handle = open(logs / f"{job.cell.replace('/', '_')}.log", "a")
    handle.write(f"$ {job.command()}\n")
    handle.flush()
    command = [sys.executable, "-c", "from benchmark.cli import main; main()", *job.argv()]
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                               preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    state.cells[job.cell].update(log=handle.name, pid=process.pid)
    return process, slot, handle


def _settle(job: Job, code: int, state: SweepState, log) -> None:
    if code == 0:
        finish(state, job, "done", log, dir=job.finished(), reason=None)
        return
    text = Path(state.cells[job.cell]["log"]).read_text(errors="replace")
    finish(state, job, "failed", log, reason=one_line(text.split("\n$ bench ")[-1]))
