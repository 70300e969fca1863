"""``bench sweep``: a suite's grid on local workers or Slurm job arrays, resumable."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import click

from benchmark.cli.options import BenchError, user_errors

__all__ = ["sweep", "params_option"]

params_option = click.option(
    "--params", "params_path", type=click.Path(dir_okay=False, path_type=Path),
    default=Path("params.yaml"), show_default=True, help="The suites, models and paths.")


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


@click.command()
@params_option
@click.option("--suite", "suite_name", default=None,
              help="A suite of params.yaml [default: the active one, `suite:`].")
@click.option("--models", default=None, metavar="A,B",
              help="Entries to run instead of the suite's.")
@click.option("--datasets", default=None, metavar="A,B", help="Datasets instead of the suite's.")
@click.option("--splits", default=None, metavar="0-9", help="Split indices instead of the suite's.")
@click.option("--launcher", type=click.Choice(["local", "slurm"]), default="local",
              show_default=True)
@click.option("--workers", type=int, default=1, show_default=True,
              help="local: runs at once (each pinned to one GPU when there are GPUs).")
@click.option("--gpus", default=None, metavar="0,1",
              help="local: GPU ids to pin workers to [default: all visible].")
@click.option("--device", default=None, help="Override the suite's run.device.")
@click.option("--partition", default=None, help="slurm: partition.")
@click.option("--time", "time_min", type=int, default=24 * 60, show_default=True,
              help="slurm: minutes per task; a task cut by it is requeued and resumes.")
@click.option("--gpus-per-task", type=int, default=1, show_default=True, help="slurm: GPUs.")
@click.option("--cpus-per-task", type=int, default=8, show_default=True, help="slurm: CPUs.")
@click.option("--mem-gb", type=int, default=None, help="slurm: memory per task.")
@click.option("--array-parallelism", type=int, default=16, show_default=True,
              help="slurm: array tasks running at once.")
@click.option("--max-requeues", type=int, default=10, show_default=True,
              help="slurm: times a task may hit --time and be requeued.")
@click.option("--cluster", type=click.Choice(["slurm", "local", "debug"]), default=None,
              hidden=True, help="submitit executor (tests: local).")
@click.option("--status", is_flag=True, help="Show progress (done/running/failed) and exit.")
@click.option("--dry-run", is_flag=True, help="Print the runs in order and exit.")
@user_errors
def sweep(params_path, suite_name, models, datasets, splits, launcher, workers, gpus, device,
          partition, time_min, gpus_per_task, cpus_per_task, mem_gb, array_parallelism,
          max_requeues, cluster, status, dry_run) -> None:
    """Run a grid of (entry, dataset, split) runs from params.yaml.

    Runs already finished (a record with the same config hash) are skipped; a sweep stopped
    half-way continues where it stopped when the same command is run again, and a run cut
    short resumes from its last epoch. QFM-IQM's runs wait for their DEIQT teacher's.
    Progress lives in RESULTS/sweeps/<id>/state.json; `--status` prints it.

    \b
    Examples:
      bench sweep                                   # the active suite, one worker
      bench sweep --suite paper --workers 4         # four GPUs, one run each
      bench sweep --suite paper --datasets livec --splits 0-2
      bench sweep --suite paper --launcher slurm --partition gpu --time 720
      bench sweep --suite paper --status
    """
    from benchmark.grid.suite import load_params, parse_indices
    from benchmark.grid.local import detect_gpus, run_local
    from benchmark.grid.sweep import (load_states, open_state, pid_alive, plan_sweep, status_lines,
                                      sweep_id)

    params = load_params(params_path)
    indices = None if splits is None else parse_indices(splits, "--splits")
    chosen = params.suite(suite_name, _names(models), _names(datasets), indices)
    if status:
        states = {s["id"]: s for s in load_states(params.paths.results)}
        ident = sweep_id(chosen, plan_sweep(params, chosen, device, check_data=False))
        if not states:
            raise BenchError(f"no sweeps under {params.paths.results / 'sweeps'}")
        if ident not in states:
            click.echo(f"no sweep of this grid yet ({ident}); all sweeps:")
        shown = [states[ident]] if ident in states else list(states.values())
        for state in shown:
            for line in status_lines(state, pid_alive(state)):
                click.echo(line)
        return
    jobs = plan_sweep(params, chosen, device)
    if dry_run:
        for job in jobs:
            after = f"   (after {', '.join(job.needs)})" if job.needs else ""
            click.echo(f"{job.command()}{after}")
        click.echo(f"{len(jobs)} runs")
        return
    with ExitStack() as held:  # entering the state takes the lock: a held one is a user error
        state = held.enter_context(open_state(params.paths.results, chosen, jobs, launcher))
        click.echo(f"sweep {state.data['id']}: {len(jobs)} runs, state in {state.path}")
        if launcher == "local":
            run_local(jobs, state, workers, detect_gpus(gpus), click.echo)
        else:
            from benchmark.grid.slurm import SlurmOptions, run_slurm

            options = SlurmOptions(partition, time_min, gpus_per_task, cpus_per_task, mem_gb,
                                   array_parallelism, max_requeues, cluster)
            run_slurm(jobs, state, options, click.echo)
        lines = status_lines(state.data)
    for line in lines:
        click.echo(line)
    if state.counts()["failed"]:
        raise BenchError(f"{state.counts()['failed']} run(s) failed; fix and rerun the same "
                         f"command to retry them")
