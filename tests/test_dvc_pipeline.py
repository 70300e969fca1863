"""dvc.yaml + params.yaml in a temporary repository: `dvc repro` builds the tables, the
feature-distance analysis, the cross-dataset table and report.pdf; a second call does
nothing, a parameter change reruns exactly the stages it touches (the model's, and the
analyses and reports that read its runs), the student runs after its teacher, and a bad name
in params.yaml stops the pipeline before any run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark.grid.suite import read_yaml
from pdfpages import page_count

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
VIT = {"backbone": "vit_tiny_patch16_224", "pretrained": "false", "img_size": 64,
       "backbone_kwargs": {"depth": 1, "embed_dim": 24, "num_heads": 2}, "decoder_dim": 24,
       "decoder_heads": 2, "epochs": 1, "batch_size": 32, "warmup_epochs": 0,
       "train_crops": 1, "test_crops": 1}
TINY = {"brisque": {"svr_c": [4.0], "svr_gamma": [0.1], "workers": 1}, "deiqt": VIT}

pytestmark = pytest.mark.skipif(shutil.which("dvc", path=str(BIN)) is None and
                                shutil.which("dvc") is None, reason="dvc is not installed")


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def ran(result: subprocess.CompletedProcess) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", result.stdout)


def edit_params(repo: Path, change) -> None:
    """Load, change and rewrite params.yaml (the active suite stays an alias of demo)."""
    data = read_yaml((repo / "params.yaml").read_text())  # as DVC wrote it: `amp: off`
    change(data)
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def make_repo(tmp_path: Path, change=None) -> Path:
    """A git + DVC repository holding the project's dvc.yaml and a one-split demo suite."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")

    def tiny(data):
        demo = data["suites"]["demo"]
        # the suite's own cross pair: demo's split models scored on all of demo-shift
        demo.update(splits=[0], expect_splits=1, models=dict(TINY), students={"qfm": VIT})
        if change:
            change(data)

    edit_params(repo, tiny)
    for command in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.org"],
                    ["git", "config", "user.name", "t"]):
        subprocess.run(command, cwd=repo, check=True)
    assert dvc(repo, "init", "-q").returncode == 0
    assert dvc(repo, "config", "core.analytics", "false").returncode == 0
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "pipeline"], cwd=repo, check=True)
    return repo


@pytest.mark.slow
def test_repro_builds_the_report_then_does_nothing_then_reruns_one_model(tmp_path):
    repo = make_repo(tmp_path)
    first = dvc(repo, "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    stages = ran(first)
    assert stages[0] == "check"
    assert sorted(stages) == sorted(["check", "data@demo", "data-test@demo-shift",
                                     "train@brisque-demo-0",
                                     "train@deiqt-demo-0", "student@qfm-demo-0",
                                     "features@qfm-demo", "cross@brisque-pair0",
                                     "cross@deiqt-pair0", "cross-student@qfm-pair0",
                                     "aggregate", "report"])
    assert stages.index("train@deiqt-demo-0") < stages.index("student@qfm-demo-0")
    assert stages.index("student@qfm-demo-0") < stages.index("features@qfm-demo")
    assert stages.index("student@qfm-demo-0") < stages.index("aggregate") < stages.index("report")
    assert max(stages.index(s) for s in stages if s.startswith(("features", "cross"))) \
        < stages.index("report")

    pipeline = repo / "results" / "dvc"
    teacher = json.loads((pipeline / "runs/deiqt/demo/split0-dvc/record.json").read_text())
    student = json.loads((pipeline / "runs/qfm/demo/split0-dvc/record.json").read_text())
    assert student["prerequisites"]["deiqt"]["config_hash"] == teacher["config_hash"]
    summary = (pipeline / "aggregate" / "summary.csv").read_text()
    assert {line.split(",")[0] for line in summary.splitlines()[1:]} == {"brisque", "deiqt", "qfm"}
    assert (repo / "results" / "tables" / "main.tex").is_file()
    assert (repo / "results" / "figures" / "box_srcc_val.png").is_file()
    assert len(list((repo / "results" / "runs").glob("*/demo/split0-*"))) == 3
    check_analyses(repo)
    if shutil.which("pdflatex") is None:
        assert "report.pdf not written: pdflatex not found" in first.stdout

    second = dvc(repo, "repro")
    assert second.returncode == 0 and ran(second) == []
    assert "Data and pipelines are up to date." in second.stdout
    assert "Data and pipelines are up to date." in dvc(repo, "status").stdout
    metrics = dvc(repo, "metrics", "show")
    assert metrics.returncode == 0
    assert "results/dvc/metrics/qfm/demo/split0.json" in metrics.stdout
    assert "val.srcc" in metrics.stdout
    assert "results/dvc/features/qfm/demo/metrics.json" in metrics.stdout
    assert "F0.rho" in metrics.stdout and "qfm.knn_srcc" in metrics.stdout
    plots = dvc(repo, "plots", "show", "--json")
    assert plots.returncode == 0 and not json.loads(plots.stdout).get("errors")

    # the README's way to change one hyper-parameter: only BRISQUE, its cross-dataset
    # evaluation, the check and the tables
    changed = dvc(repo, "exp", "run", "-S", "++models.brisque.svr_c=[2.0]")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert sorted(ran(changed)) == ["aggregate", "check", "cross@brisque-pair0", "report",
                                    "train@brisque-demo-0"]
    brisque = sorted((repo / "results" / "runs" / "brisque" / "demo").glob("split0-*"))
    assert len(brisque) == 2  # the entry's value won over the suite's grid
    configs = [json.loads((d / "record.json").read_text())["config"]["svr_c"] for d in brisque]
    assert sorted(configs) == [[2.0], [4.0]]
    # the teacher's recipe reaches its student and every analysis of either
    edit_params(repo, lambda data: data["suites"]["demo"]["models"]["deiqt"].update(epochs=2))
    changed = dvc(repo, "repro")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert sorted(ran(changed)) == ["aggregate", "check", "cross-student@qfm-pair0",
                                    "cross@deiqt-pair0", "features@qfm-demo", "report",
                                    "student@qfm-demo-0", "train@deiqt-demo-0"]


def check_analyses(repo: Path) -> None:
    """The feature-distance statistics and figures, the cross table and report.pdf."""
    results = repo / "results"
    folder = results / "dvc" / "features" / "qfm" / "demo"
    summary = pd.read_csv(folder / "summary.csv")
    main = summary[(summary["relation"] == "all") & (summary["distance"] == "cosine")]
    assert list(main["source"]) == ["F0", "deiqt", "qfm"]
    assert set(main["backbone"]) == {"vit_tiny_patch16_224"} and set(main["n_splits"]) == {1}
    for column in ("S1_0.2", "gap_ratio_1", "rho", "knn_srcc"):
        assert np.isfinite(main[column]).all(), column
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["qfm"]["rho"] == pytest.approx(float(main["rho"].iloc[2]), abs=1e-6)
    for name in ("distance_gap.png", "distance_gap.pdf", "gap_share.png", "gap_share.pdf"):
        assert (folder / "splits" / "split0" / name).stat().st_size > 2000
    tables = results / "tables"
    assert (tables / "features.tex").is_file() and (tables / "cross_srcc.tex").is_file()
    cross = (tables / "cross_srcc.tex").read_text()
    assert all(label in cross for label in ("BRISQUE", "DEIQT", "QFM-IQM", "Demo-shift"))
    found = sorted((results / "dvc/cross/deiqt/demo__demo-shift").glob("split0-*.json"))
    assert len(found) == 1, found  # one record per split, keyed by the source run's hash
    record = json.loads(found[0].read_text())
    assert record["data"]["n_images"] == 380 and np.isfinite(record["metrics"]["srcc"])
    sections = len(list(tables.glob("*.tex"))) + len(list((results / "figures").glob("*.pdf")))
    sections += 2  # the feature-distance figures
    tex = (results / "report.tex").read_text()
    assert tex.count(r"\clearpage") == sections
    if shutil.which("pdflatex") is None:
        assert not (results / "report.pdf").exists()
        return
    assert page_count(results / "report.pdf") == sections


@pytest.mark.parametrize("change, key", [
    (lambda d: d["suites"]["demo"].update(datasets=["demoo"]), "suites.demo.datasets[0]"),
    (lambda d: d["suites"]["demo"]["models"].update(brisk={}), "suites.demo.models.brisk"),
    (lambda d: d["models"].update(bogus={"model": "bogus"}), "models.bogus"),
])
def test_bad_names_stop_dvc_before_any_run(tmp_path, change, key):
    repo = make_repo(tmp_path, change)
    result = dvc(repo, "repro")
    assert result.returncode != 0
    assert key in result.stdout + result.stderr
    assert ran(result) == ["check"]
    assert not (repo / "results" / "runs").exists() and not (repo / "data").exists()
