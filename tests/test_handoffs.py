"""What one command hands the next stays consistent: epoch numbers, warm-up, scoring rules."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from benchmark.aggregate import runs_table
from benchmark.engine import RunConfig
from benchmark.metrics import srcc
from benchmark.records import load_record
from benchmark.runner import run_one

TINY = {"backbone": "test_efficientnet", "pretrained": "false", "img_size": 64, "epochs": 2,
        "train_crops": 1, "test_crops": 1, "batch_size": 32, "lr": 3e-3, "warmup_epochs": 0.0}
QUIET = RunConfig(progress=False)


@pytest.fixture(scope="module")
def probe_run(demo_root, tmp_path_factory):
    """One tiny probe run: its results folder, record and log lines."""
    results = tmp_path_factory.mktemp("results")
    lines: list[str] = []
    record = run_one("probe", "demo", 0, demo_root, TINY, QUIET, results, log=lines.append)
    return results, record, lines


def test_log_record_and_tables_number_epochs_alike(probe_run):
    results, record, lines = probe_run
    logged = {int(m[1]): float(m[2]) for m in
              (re.match(r"epoch (\d+): .* val srcc (\S+)", line) for line in lines) if m}
    assert sorted(logged) == [1, 2]
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    for entry in record["history"]:
        assert entry["val"]["srcc"] == pytest.approx(logged[entry["epoch"]], abs=5e-5)
    chosen = record["metrics"]["val"]["epoch"]
    assert logged[chosen] == pytest.approx(max(logged.values()), abs=5e-5)
    table = runs_table([record])
    assert table.set_index("rule").loc["val", "epoch"] == chosen
    assert table.set_index("rule").loc["last", "epoch"] == 2
    # the predictions of each rule are those of the epoch the rule names
    test = pd.read_csv(f"{record['_dir']}/predictions.csv").query("part == 'test'")
    for rule in ("val", "last", "test_oracle"):
        assert srcc(test[f"pred_unit_{rule}"], test["score_unit"]) == pytest.approx(
            record["metrics"][rule]["test"]["srcc"])


def test_records_written_with_epochs_from_zero_still_read(probe_run, tmp_path):
    _, record, _ = probe_run
    old = {k: v for k, v in record.items() if k != "_dir"}
    old = json.loads(json.dumps(old))
    old["schema"] = "bench-run/1"
    for entry in [*old["history"], *old["metrics"].values()]:
        entry["epoch"] -= 1
    path = tmp_path / "record.json"
    path.write_text(json.dumps(old))
    loaded = load_record(path)
    assert [h["epoch"] for h in loaded["history"]] == [1, 2]
    assert {r: m["epoch"] for r, m in loaded["metrics"].items()} == \
        {r: m["epoch"] for r, m in record["metrics"].items()}


def test_warmup_as_long_as_the_run_warns(demo_root, tmp_path):
    lines: list[str] = []
    short = {**TINY, "epochs": 1, "warmup_epochs": 1.0, "test_crops": 1}
    one_step = RunConfig(progress=False, max_steps_per_epoch=1)
    run_one("probe", "demo", 0, demo_root, short, one_step, tmp_path, log=lines.append)
    warnings = [line for line in lines if line.startswith("warning: warmup_epochs")]
    assert warnings == ["warning: warmup_epochs 1 >= epochs 1: the whole run is linear warm-up "
                        "and the lr never reaches 0.003; set warmup_epochs below epochs"]
    lines.clear()
    run_one("probe", "demo", 0, demo_root, {**short, "warmup_epochs": 0.5}, one_step, tmp_path,
            log=lines.append)
    assert not [line for line in lines if line.startswith("warning:")]
