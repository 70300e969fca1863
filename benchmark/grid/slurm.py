"""The Slurm launcher of ``bench sweep``: submitit job arrays, requeued and resumed.

Ready jobs are submitted as one array per poll (``slurm_array_parallelism`` throttles how
many run at once); a student is submitted once its teacher's run is done. A task cut by
preemption or its time limit is requeued by submitit (``Checkpointable``) and, since every
run is made with ``resume``, continues from the run's last epoch checkpoint. The same
code runs on this machine with submitit's local executor (``cluster="local"``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import submitit
from PIL import Image

from benchmark.grid.sweep import Job, SweepState, finish, one_line, ready_jobs

__all__ = ["SlurmOptions", "SlurmTask", "run_slurm"]


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time_min: int = 24 * 60
    gpus: int = 1
    cpus: int = 8
    mem_gb: int | None = None
    parallel: int = 16  # array tasks running at once
    requeues: int = 10  # times a task may hit its time limit (preemptions do not count)
    cluster: str | None = None  # None: slurm when available; "local" runs the same on this machine


class SlurmTask(submitit.helpers.Checkpointable):
    """A job as a submitit task; on preemption or timeout it is requeued and resumes. A task
    is a fresh process: it decodes under the pixel limit the sweep was started with."""

    def __init__(self, max_pixels: int | None = None):
        self.max_pixels = max_pixels

    def __call__(self, job: Job) -> str:
        if self.max_pixels:
            from benchmark.images import set_pixel_limit

            set_pixel_limit(self.max_pixels)
        return job.execute()["_dir"]


def run_slurm(jobs: list[Job], state: SweepState, options: SlurmOptions = SlurmOptions(),
              log: Callable[[str], None] = print, poll_s: float = 5.0) -> dict[str, int]:
    """Submit ready jobs as job arrays (students once their teacher is done); wait for all."""
    executor = submitit.AutoExecutor(folder=state.dir / "submitit", cluster=options.cluster,
                                     slurm_max_num_timeout=options.requeues,
                                     local_max_num_timeout=options.requeues)
    executor.update_parameters(
        name=f"bench-{state.data['id']}", timeout_min=options.time_min,
        gpus_per_node=options.gpus, cpus_per_task=options.cpus, mem_gb=options.mem_gb,
        slurm_partition=options.partition, slurm_array_parallelism=options.parallel)
    running: dict[str, Any] = {}
    by_cell = {job.cell: job for job in jobs}
    while True:
        ready = list(ready_jobs(jobs, state, log))
        if ready:
            task = SlurmTask(Image.MAX_IMAGE_PIXELS)  # bench --max-pixels, as this process has it
            for job, submitted in zip(ready, executor.map_array(task, ready)):
                running[job.cell] = submitted
                finish(state, job, "running", log, reason=None, job_id=submitted.job_id,
                       log=str(submitted.paths.stdout))
        for cell, submitted in list(running.items()):
            if not submitted.done():
                continue
            del running[cell]
            error = submitted.exception()
            if error is None:
                finish(state, by_cell[cell], "done", log, dir=submitted.result(), reason=None)
            else:
                finish(state, by_cell[cell], "failed", log, reason=one_line(str(error)))
        if not running and not ready:
            return state.counts()
        time.sleep(poll_s)
