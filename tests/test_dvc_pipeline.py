"""dvc.yaml + params.yaml in a temporary repository: `dvc repro` builds the tables, a second
call does nothing, a parameter change reruns exactly the stages it touches, the student runs
after its teacher, and a bad name in params.yaml stops the pipeline before any run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.suite import read_yaml

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
    assert sorted(stages) == sorted(["check", "data@demo", "train@brisque-demo-0",
                                     "train@deiqt-demo-0", "student@qfm-demo-0",
                                     "aggregate", "report"])
    assert stages.index("train@deiqt-demo-0") < stages.index("student@qfm-demo-0")
    assert stages.index("student@qfm-demo-0") < stages.index("aggregate") < stages.index("report")

    pipeline = repo / "results" / "dvc"
    teacher = json.loads((pipeline / "runs/deiqt/demo/split0-dvc/record.json").read_text())
    student = json.loads((pipeline / "runs/qfm/demo/split0-dvc/record.json").read_text())
    assert student["prerequisites"]["deiqt"]["config_hash"] == teacher["config_hash"]
    summary = (pipeline / "aggregate" / "summary.csv").read_text()
    assert {line.split(",")[0] for line in summary.splitlines()[1:]} == {"brisque", "deiqt", "qfm"}
    assert (repo / "results" / "tables" / "main.tex").is_file()
    assert (repo / "results" / "figures" / "box_srcc_val.png").is_file()
    assert len(list((repo / "results" / "runs").glob("*/demo/split0-*"))) == 3

    second = dvc(repo, "repro")
    assert second.returncode == 0 and ran(second) == []
    assert "Data and pipelines are up to date." in second.stdout
    assert "Data and pipelines are up to date." in dvc(repo, "status").stdout
    metrics = dvc(repo, "metrics", "show")
    assert metrics.returncode == 0
    assert "results/dvc/metrics/qfm/demo/split0.json" in metrics.stdout
    assert "val.srcc" in metrics.stdout
    plots = dvc(repo, "plots", "show", "--json")
    assert plots.returncode == 0 and not json.loads(plots.stdout).get("errors")

    # the README's way to change one hyper-parameter: only BRISQUE, the check and the tables
    changed = dvc(repo, "exp", "run", "-S", "++models.brisque.svr_c=[2.0]")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert sorted(ran(changed)) == ["aggregate", "check", "report", "train@brisque-demo-0"]
    brisque = sorted((repo / "results" / "runs" / "brisque" / "demo").glob("split0-*"))
    assert len(brisque) == 2  # the entry's value won over the suite's grid
    configs = [json.loads((d / "record.json").read_text())["config"]["svr_c"] for d in brisque]
    assert sorted(configs) == [[2.0], [4.0]]
    # the teacher's recipe reaches its student too
    edit_params(repo, lambda data: data["suites"]["demo"]["models"]["deiqt"].update(epochs=2))
    changed = dvc(repo, "repro")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert sorted(ran(changed)) == ["aggregate", "check", "report", "student@qfm-demo-0",
                                    "train@deiqt-demo-0"]


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
