"""``bench profile``: the figures come from the engine's own step and loop."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from benchmark import profiling
from benchmark.cli import main
from benchmark.train_step import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"backbone": "test_resnet", "pretrained": "false", "img_size": 32, "batch_size": 4,
        "train_crops": 2, "test_crops": 3}


def test_profile_times_the_real_step_and_the_real_loop(monkeypatch):
    steps_taken, epochs = [], []
    original_step, original_epoch = Trainer.step, profiling.train_epoch
    monkeypatch.setattr(Trainer, "step",
                        lambda self, batch, ctx: steps_taken.append(ctx.step)
                        or original_step(self, batch, ctx))
    monkeypatch.setattr(profiling, "train_epoch",
                        lambda *args, **kwargs: epochs.append(args[2:4])
                        or original_epoch(*args, **kwargs))
    report = profiling.profile_model("probe", dict(TINY), "cpu", steps=3, image_hw=(48, 64))
    # two warm-up and three timed steps on one batch, the loop's epoch of three steps, then the
    # three timed steps again (the faster of the two timings is the step's)
    assert steps_taken == [0, 0, 0, 0, 0, 3, 4, 5, 0, 0, 0] and epochs == [(1, 3)]
    assert report["image_hw"] == [48, 64] and report["train_crops"] == 2
    assert report["engine_efficiency"] == pytest.approx(
        report["loop_images_per_s"] / report["step_images_per_s"], rel=0.01)
    for key in ("step_images_per_s", "loop_images_per_s", "eval_images_per_s",
                "loader_images_per_s", "peak_rss_GiB"):
        assert report[key] > 0, key


def test_profile_writes_its_figures_as_json(tmp_path):
    out = tmp_path / "probe.json"
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    result = CliRunner().invoke(main, ["profile", "--model", "probe", *sets, "--device", "cpu",
                                       "--steps", "2", "--image-size", "40x36", "--json",
                                       str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["image_hw"] == [36, 40] and figures["steps"] == 2
    assert f"engine_efficiency            {figures['engine_efficiency']}" in result.output
    bad = CliRunner().invoke(main, ["profile", "--model", "probe", "--image-size", "big"])
    assert bad.exit_code == 2 and "'big' is not WxH" in bad.output
