"""bench sweep: grid order, a sweep killed and restarted, teacher-before-student, failures and
their reasons, GPU pinning, the submitit launcher (local executor), DVC exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.cli.run import parse_sets
from benchmark.records import record_paths
from benchmark.trained import load_trained
from benchmark.grid.suite import Cell, load_params
from benchmark.grid.slurm import SlurmOptions, SlurmTask, run_slurm
from benchmark.grid.local import _spawn, detect_gpus
from benchmark.grid.sweep import (Job, SweepState, export_run, open_state, plan_sweep,
                                  prune_exports, ready_jobs, status_lines)

REPO = Path(__file__).resolve().parents[1]
VIT = {"backbone": "vit_tiny_patch16_224", "pretrained": "false", "img_size": 64,
       "backbone_kwargs": {"depth": 1, "embed_dim": 24, "num_heads": 2}, "decoder_dim": 24,
       "decoder_heads": 2, "epochs": 1, "batch_size": 32, "warmup_epochs": 0,
       "train_crops": 1, "test_crops": 1}
BRISQUE = {"svr_c": [4.0], "svr_gamma": [0.1], "workers": 1}


def write_params(tmp_path: Path, demo_root: Path, models: dict, students: dict | None = None,
                 splits=(0,)) -> Path:
    """The repository's params.yaml with a small demo suite and paths under ``tmp_path``."""
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "data").mkdir(exist_ok=True)
    if not (tmp_path / "data" / "demo").exists():
        (tmp_path / "data" / "demo").symlink_to(demo_root)
    data["paths"] = {"data": str(tmp_path / "data"), "results": str(tmp_path / "results"),
                     "pipeline": str(tmp_path / "results" / "dvc"),
                     "report": str(tmp_path / "results")}
    demo = data["suites"]["demo"]  # the same object as data["suite"]: dumped as an anchor
    demo.update(splits=list(splits), expect_splits=len(splits), models=models,
                students=students or {})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_cli(path: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from benchmark.cli import main; main()", "sweep",
               "--params", str(path), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)


def runs(results: Path, model: str) -> list[Path]:
    return sorted(p for p in (results / "runs" / model / "demo").glob("split*-*") if p.is_dir())


def test_plan_puts_students_after_their_teachers_and_passes_every_value(tmp_path, demo_root):
    path = write_params(tmp_path, demo_root, {"deiqt": VIT, "brisque": BRISQUE},
                        {"qfm": VIT}, splits=(0, 1))
    params = load_params(path)
    jobs = plan_sweep(params, params.suite())
    assert [j.cell for j in jobs] == ["deiqt/demo/0", "deiqt/demo/1", "brisque/demo/0",
                                      "brisque/demo/1", "qfm/demo/0", "qfm/demo/1"]
    assert [j.needs for j in jobs] == [()] * 4 + [("deiqt/demo/0",), ("deiqt/demo/1",)]
    argv = jobs[-1].argv()
    sets = parse_sets(tuple(argv[i + 1] for i, a in enumerate(argv) if a == "--set"))
    assert sets == VIT and "--resume" in argv and argv[argv.index("--device") + 1] == "cpu"
    # a student alone waits for nothing in the grid: its teacher must already be on disk
    alone = plan_sweep(params, params.suite(models=["qfm"]))
    assert [(j.cell, j.needs) for j in alone] == [("qfm/demo/0", ()), ("qfm/demo/1", ())]
    result = CliRunner().invoke(main, ["sweep", "--params", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1] == "6 runs" and lines[-2].endswith("(after deiqt/demo/1)")
    assert not (tmp_path / "results" / "runs").exists()


def test_unprepared_data_or_bad_names_stop_the_sweep_before_any_run(tmp_path, demo_root):
    path = write_params(tmp_path, demo_root, {"brisque": BRISQUE})
    result = CliRunner().invoke(main, ["sweep", "--params", str(path), "--datasets", "livec"])
    assert result.exit_code == 1
    assert "Error: livec: no prepared data under" in result.output
    result = CliRunner().invoke(main, ["sweep", "--params", str(path), "--models", "brisq"])
    assert result.exit_code == 1 and "--models: unknown model 'brisq'" in result.output
    assert not (tmp_path / "results" / "runs").exists()


@pytest.mark.slow
def test_sweep_killed_midway_resumes_without_redoing_or_duplicating(tmp_path, demo_root):
    slow_vit = {**VIT, "epochs": 40}
    path = write_params(tmp_path, demo_root, {"brisque": BRISQUE, "deiqt": slow_vit},
                        splits=(0, 1))
    results = tmp_path / "results"
    command = [sys.executable, "-c", "from benchmark.cli import main; main()", "sweep",
               "--params", str(path)]
    sweep = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    partial = None
    while time.time() < deadline and partial is None:
        found = list((results / "runs" / "deiqt" / "demo").glob("split0-*.partial/checkpoint.pt"))
        partial = found[0] if found else None
        time.sleep(0.05)
    assert partial is not None, sweep.communicate()[0] if sweep.poll() is not None else "timeout"
    state = json.loads(next((results / "sweeps").glob("*/state.json")).read_text())
    child = state["cells"]["deiqt/demo/0"]["pid"]
    sweep.kill()  # no chance to clean up: the worker must die with it
    sweep.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the run outlived its killed sweep")
    finished = {p: p.stat().st_mtime_ns for p in (results / "runs").glob("*/demo/*/record.json")}
    assert len(finished) == 2  # both BRISQUE runs, before the DEIQT ones
    result = sweep_cli(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "running brisque" not in result.stdout and "running deiqt/demo/0" in result.stdout
    log = (next((results / "sweeps").glob("*/logs")) / "deiqt_demo_0.log").read_text()
    assert "resuming after epoch" in log
    for model in ("brisque", "deiqt"):
        assert [p.name.split("-")[0] for p in runs(results, model)] == ["split0", "split1"]
    assert not list((results / "runs").glob("*/demo/*.partial"))
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    record = json.loads((runs(results, "deiqt")[0] / "record.json").read_text())
    assert [h["epoch"] for h in record["history"]] == list(range(1, 41))
    assert "4 runs: 4 done, 0 running, 0 failed, 0 pending" in result.stdout
    # without its state file the sweep still finds every run by its config hash
    for state_file in (results / "sweeps").glob("*/state.json"):
        state_file.unlink()
    result = sweep_cli(path)
    assert result.returncode == 0 and result.stdout.count(": already done") == 4


def test_student_waits_for_its_teacher_and_a_failed_teacher_fails_it(tmp_path, demo_root):
    path = write_params(tmp_path, demo_root, {"deiqt": VIT}, {"qfm": VIT})
    result = sweep_cli(path, "--workers", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines.index(next(l for l in lines if "done deiqt/demo/0" in l)) < \
        lines.index(next(l for l in lines if "running qfm/demo/0" in l))
    results = tmp_path / "results"
    (teacher,), (student,) = runs(results, "deiqt"), runs(results, "qfm")
    record = json.loads((student / "record.json").read_text())
    assert Path(record["prerequisites"]["deiqt"]["dir"]) == teacher
    # `--set` on the command line and params.yaml read in-process give the same config hash:
    # a DVC stage finds the sweep's run done
    stage = CliRunner().invoke(main, ["suite", "run", "qfm", "demo", "0", "--params", str(path),
                                      "--out", str(tmp_path / "out"),
                                      "--metrics", str(tmp_path / "m.json")])
    assert stage.exit_code == 0, stage.output
    assert f"already done: {student / 'record.json'}" in stage.output

    path = write_params(tmp_path, demo_root, {"deiqt": {**VIT, "batch_size": 100000}},
                        {"qfm": {**VIT, "epochs": 2}})
    result = sweep_cli(path, "--workers", "2")
    assert result.returncode == 1
    assert "Error: 2 run(s) failed" in result.stderr
    assert "failed deiqt/demo/0: " in result.stdout and "batch_size 100000 exceeds" in result.stdout
    assert "failed qfm/demo/0: needs deiqt/demo/0, which failed" in result.stdout
    status = sweep_cli(path, "--status")
    assert status.returncode == 0
    assert status.stdout.splitlines()[0].endswith("2 runs: 0 done, 0 running, 2 failed, 0 pending")
    assert len(runs(results, "qfm")) == 1  # the failed grid started no second student


def test_a_student_never_trains_against_another_teacher_than_the_grids(tmp_path, demo_root):
    path = write_params(tmp_path, demo_root, {"deiqt": VIT}, {"qfm": VIT})
    params = load_params(path)
    jobs = plan_sweep(params, params.suite())
    jobs[0].execute(log=lambda _: None)  # the grid's teacher
    other = write_params(tmp_path, demo_root, {"deiqt": {**VIT, "lr": 5e-4}})  # not the demo recipe's lr
    plan_sweep(load_params(other), load_params(other).suite())[0].execute(log=lambda _: None)
    lines = []
    with open_state(params.paths.results, params.suite(), jobs, "local") as state:
        assert list(ready_jobs(jobs, state, lines.append)) == []
    assert lines[0].endswith(": already done")
    assert "failed qfm/demo/0: the newest deiqt run of demo split 0 is " in lines[1]
    teacher = state.cells["deiqt/demo/0"]["dir"]
    assert f"not this grid's teacher {teacher}: move it aside" in lines[1]


def test_status_view_counts_and_failure_reasons():
    state = {"id": "demo-12345678", "launcher": "local", "cells": {
        "a/demo/0": {"status": "done"}, "b/demo/0": {"status": "running"},
        "c/demo/0": {"status": "failed", "reason": "Error: non-finite loss (nan) at epoch 2"},
        "c/demo/1": {"status": "pending"}}}
    assert status_lines(state, alive=False) == [
        "sweep demo-12345678 (local): 4 runs: 1 done, 1 running, 1 failed, 1 pending "
        "(its process is gone)",
        "  failed c/demo/0: Error: non-finite loss (nan) at epoch 2"]


def test_workers_are_pinned_one_gpu_each(tmp_path, monkeypatch):
    captured = []

    class Fake:
        pid = 4242

    def popen(command, **kwargs):
        captured.append(kwargs["env"])
        return Fake()

    monkeypatch.setattr(subprocess, "Popen", popen)
    job = Job("probe/demo/0", "probe", "demo", 0, "data/demo", "results",
              run={"threads": 1})
    state = SweepState(tmp_path, {"id": "x", "cells": {job.cell: {"status": "pending"}}})
    for slot in range(3):
        _spawn(job, slot, ["3", "5"], tmp_path, state)[2].close()
    assert [env["CUDA_VISIBLE_DEVICES"] for env in captured] == ["3", "5", "3"]
    assert captured[0]["OMP_NUM_THREADS"] == "1" and state.cells[job.cell]["pid"] == 4242
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,7")
    assert detect_gpus() == ["2", "7"] and detect_gpus("0,1") == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert detect_gpus() == []


def test_slurm_launcher_runs_arrays_through_submitit(tmp_path, demo_root):
    path = write_params(tmp_path, demo_root, {"brisque": BRISQUE}, splits=(0, 1))
    params = load_params(path)
    suite = params.suite()
    jobs = plan_sweep(params, suite)
    lines = []
    with open_state(params.paths.results, suite, jobs, "slurm") as state:
        counts = run_slurm(jobs, state, SlurmOptions(time_min=10, cluster="local"), lines.append,
                           poll_s=0.5)
    assert counts == {"done": 2, "running": 0, "failed": 0, "pending": 0}
    cells = json.loads(state.path.read_text())["cells"]
    assert all(c["job_id"] and Path(c["dir"]).is_dir() for c in cells.values())
    assert [Path(c["dir"]) for c in cells.values()] == runs(params.paths.results, "brisque")
    # preemption and timeout requeue the same task, which resumes the run's partial folder
    resubmission = SlurmTask().checkpoint(jobs[0])
    assert isinstance(resubmission.function, SlurmTask) and resubmission.args == (jobs[0],)
    # the same grid again: the sweep is complete, nothing is submitted
    submitted = sorted((state.dir / "submitit").iterdir())
    with open_state(params.paths.results, suite, jobs, "slurm") as again:
        assert run_slurm(jobs, again, SlurmOptions(cluster="local"), lines.append) == counts
    assert sorted((state.dir / "submitit").iterdir()) == submitted
    assert json.loads(state.path.read_text())["cells"] == cells


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process tree in /proc")
def test_a_task_cut_by_its_time_limit_is_requeued_and_resumes(tmp_path, demo_root):
    import submitit
    from submitit.local.local import LocalJobEnvironment

    epochs = 150
    path = write_params(tmp_path, demo_root, {"deiqt": {**VIT, "epochs": epochs}})
    params = load_params(path)
    job = plan_sweep(params, params.suite())[0]
    executor = submitit.LocalExecutor(tmp_path / "submitit", max_num_timeout=3)
    executor.update_parameters(timeout_min=20)
    submitted = executor.submit(SlurmTask(), job)
    # the time-limit warning Slurm sends (SIGUSR2), delivered to the task once it has a
    # checkpoint: a warning timed by the clock would land before the first epoch on a loaded
    # machine, and submitit's local controller restarts a task at most 6 times
    deadline = time.monotonic() + 600
    while not list((tmp_path / "results" / "runs").glob("deiqt/demo/*.partial/checkpoint.pt")):
        assert submitted.state != "FINISHED" and time.monotonic() < deadline, submitted.stdout()
        time.sleep(0.2)
    for task in _children(submitted._process.pid):
        os.kill(task, LocalJobEnvironment._usr_sig())
    run_dir = Path(submitted.result())
    output = submitted.stdout() + (submitted.stderr() or "")
    assert "resuming after epoch" in output and "Requeued" in output
    record = json.loads((run_dir / "record.json").read_text())
    assert [h["epoch"] for h in record["history"]] == list(range(1, epochs + 1))
    assert not list(run_dir.parent.glob("*.partial"))


def test_exports_copy_the_record_and_prune_what_left_the_grid(tmp_path, demo_root):
    path = write_params(tmp_path, demo_root, {"brisque": BRISQUE})
    params = load_params(path)
    job = plan_sweep(params, params.suite())[0]
    record = job.execute(log=lambda _: None)
    cell = params.suite().cells()[0]
    out, metrics = params.paths.export_dir(cell), params.paths.metrics_file(cell)
    export_run(record, out, metrics)
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv", "record.json"]
    assert json.loads((out / "record.json").read_text())["config_hash"] == record["config_hash"]
    values = json.loads(metrics.read_text())
    assert set(values) == {"val", "last", "test_oracle"}
    assert values["val"] == {"epoch": 1, "srcc": record["metrics"]["val"]["test"]["srcc"],
                             "plcc": record["metrics"]["val"]["test"]["plcc"]}
    # the tables of the pipeline are made from the exports
    assert record_paths(params.paths.pipeline) == [out / "record.json"]
    # the analysis stages load the weights of a fitted model too (the SVR's buffers grow)
    trained = load_trained(Path(record["_dir"]))
    assert trained.model.dual_coef.numel() > 0 and trained.epoch == 1
    stale = Cell("probe", "probe", "demo", 2)
    export_run(record, params.paths.export_dir(stale), params.paths.metrics_file(stale))
    removed = prune_exports(params.paths, [cell])
    assert removed == [params.paths.metrics_file(stale), params.paths.export_dir(stale)]
    assert out.is_dir() and metrics.is_file()
    assert not (params.paths.pipeline / "runs" / "probe").exists()
