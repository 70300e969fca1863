"""``bench suite estimate``: crop-steps from published image counts and recipes, hours from
measured throughput, without any image on disk."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.estimate import BUILT_IN, estimate_suite, load_throughputs
from benchmark.grid.suite import load_params

PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"


def _deiqt_flive_train_crops() -> int:
    trainval = round(0.8 * 39810)  # LIVEFB's published count, the protocol's 80 %
    return (trainval - round(0.1 * trainval)) * 9 * 10  # DEIQT's LIVEFB recipe: 9 epochs x 10


def test_the_paper_grid_costs_what_its_recipes_and_sizes_say():
    params = load_params(PARAMS)
    rows = {(r.entry, r.dataset): r for r in estimate_suite(params.suite("paper"), params.protocol)}
    flive = rows["deiqt", "flive"]
    assert flive.train_crops == _deiqt_flive_train_crops() == 2_579_670
    assert flive.runs == 10 and flive.source == "estimate"
    speed = BUILT_IN["deiqt"]
    assert flive.gpu_hours == pytest.approx(
        10 * (flive.train_crops / speed.train_crops_per_s
              + flive.eval_crops / speed.eval_crops_per_s) / 3600)
    assert rows["brisque", "koniq"].gpu_hours is None  # fitted on the CPU, no SGD
    assert len(rows) == 9 * 8
    # the paper protocol trains on the whole 80 %: no validation part held out
    paper = {(r.entry, r.dataset): r
             for r in estimate_suite(params.suite("paper-protocol"), params.protocol)}
    assert paper["deiqt", "flive"].train_crops == round(0.8 * 39810) * 9 * 10


def test_a_profile_file_replaces_the_table_and_the_cli_prints_the_totals(tmp_path):
    figures = {"model": "deiqt", "device": "cuda", "precision": "bf16",
               "loop_images_per_s": 1000.0, "eval_images_per_s": 100.0, "test_crops": 10}
    profile = tmp_path / "deiqt.json"
    profile.write_text(json.dumps(figures))
    assert load_throughputs([profile])["deiqt"].eval_crops_per_s == 1000.0
    result = CliRunner().invoke(main, ["suite", "estimate", "--params", str(PARAMS), "--suite",
                                       "paper", "--profile", str(profile)])
    assert result.exit_code == 0, result.output
    line = next(l for l in result.output.splitlines() if l.startswith("deiqt      flive"))
    crops, evaluated, hours = re.findall(r"[\d,.]+", line.split("flive")[1])[1:4]
    assert int(crops.replace(",", "")) == _deiqt_flive_train_crops()
    expected = 10 * (_deiqt_flive_train_crops() + int(evaluated.replace(",", ""))) / 1000 / 3600
    assert float(hours) == pytest.approx(expected, abs=0.005) and f"{profile} (cuda, bf16)" in line
    totals = {m: float(h) for m, h in re.findall(r"total (\S+)\s+([\d.]+) GPU-hours",
                                                 result.output)}
    suite_total = float(re.search(r"total suite paper: ([\d.]+)", result.output).group(1))
    assert sum(totals.values()) == pytest.approx(suite_total, abs=0.1)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    refused = CliRunner().invoke(main, ["suite", "estimate", "--params", str(PARAMS),
                                        "--profile", str(bad)])
    assert refused.exit_code == 1 and "not a `bench profile --json` file" in refused.output


@pytest.mark.parametrize("text, message", [
    ("{not json", "unreadable profile file"),
    (json.dumps({"model": "deiqt", "loop_images_per_s": "fast", "eval_images_per_s": 1,
                 "test_crops": 1, "device": "cuda", "precision": "bf16"}),
     "a figure is not a number"),
])
def test_a_bad_profile_file_is_one_line_naming_it(tmp_path, text, message):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    refused = CliRunner().invoke(main, ["suite", "estimate", "--params", str(PARAMS),
                                        "--profile", str(bad)])
    assert refused.exit_code == 1 and message in refused.output and str(bad) in refused.output
    assert len(refused.output.strip().splitlines()) == 1
