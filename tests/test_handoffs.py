"""What one command hands the next stays consistent: epoch numbers, warm-up, scoring rules."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from benchmark.report.aggregate import runs_table
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


def test_score_uses_the_weights_the_record_reports_and_says_which(probe_run, demo_root, tmp_path):
    import shutil

    import torch
    from click.testing import CliRunner

    from benchmark.cli import main

    _, record, _ = probe_run
    run_dir = tmp_path / "run"
    shutil.copytree(record["_dir"], run_dir)
    # best_val.pt and checkpoint.pt may hold one epoch: tell them apart by a known shift
    best = torch.load(run_dir / "best_val.pt", weights_only=True)
    best["state_dict"]["head.bias"] += 1.0
    torch.save(best, run_dir / "best_val.pt")
    row = pd.read_csv(run_dir / "predictions.csv").query("part == 'test'").iloc[2]
    image = str(demo_root / row["image"])

    def score(*args):
        result = CliRunner().invoke(main, ["score", image, "--checkpoint", *args])
        assert result.exit_code == 0, result.output
        return float(result.stdout.split("\t")[1]), result.stderr.strip()

    # the probe learns unit labels; bench score answers in the demo's MOS (0-100)
    a, b = record["labels"]["unit_map"]
    value, said = score(str(run_dir))
    assert value == pytest.approx((row["pred_val"] + 1.0 - b) / a, abs=1e-4)
    assert said.startswith(f"probe: epoch {record['metrics']['val']['epoch']}, rule val (")
    value, said = score(str(run_dir), "--rule", "last")
    assert value == pytest.approx((row["pred_last"] - b) / a, abs=1e-4)
    assert said.startswith(f"probe: epoch {record['metrics']['last']['epoch']}, rule last (")
    refused = CliRunner().invoke(main, ["score", image, "--checkpoint",
                                        str(run_dir / "best_val.pt"), "--rule", "last"])
    assert refused.exit_code == 1 and "holds the weights of rule val, not last" in refused.output


def _cross_setup(tmp_path, demo_root, monkeypatch):
    """A source run on koniq (three splits) and stand-ins that count decodes and loads."""
    import numpy as np

    import benchmark.loader
    import benchmark.engine
    import benchmark.trained
    from benchmark.models import get_model_class
    from synthetic_runs import write_run

    results = tmp_path / "results"
    for split in range(3):
        write_run(results, "deiqt", "koniq", split, 0.9, seed=split, config={"test_crops": 1})
    counts = {"decoded": 0, "loaded": []}

    class Stub:
        config = get_model_class("deiqt").Config(img_size=32, test_crops=1)

        def to(self, device):
            return self

    def fake_load(path, rule):
        counts["loaded"].append(rule)
        return benchmark.trained.Trained(Stub(), {}, rule, 3, path / "best_val.pt")

    def counting_decode(path, spec):
        counts["decoded"] += 1
        return np.zeros((32, 32, 3), dtype=np.uint8)

    def fake_predict(model, cache, crop, n_crops, seed, device, batch_size):
        return np.random.default_rng(len(counts["loaded"])).uniform(size=len(cache))

    monkeypatch.setattr(benchmark.trained, "load_trained", fake_load)
    monkeypatch.setattr(benchmark.engine, "predict", fake_predict)
    monkeypatch.setattr(benchmark.loader, "decode_image", counting_decode)
    return results, counts


def test_cross_decodes_the_test_set_once_for_all_splits(tmp_path, demo_root, monkeypatch):
    from benchmark.datasets.prepare import load_prepared
    from benchmark.report.cross import evaluate_cross

    results, counts = _cross_setup(tmp_path, demo_root, monkeypatch)
    n_images = len(load_prepared(demo_root, "demo").table)
    written = evaluate_cross("deiqt", "koniq", "demo", demo_root, results, log=lambda _: None)
    assert len(written) == 3 and counts["decoded"] == n_images


def test_cross_records_are_reused_only_for_the_same_rule_root_and_table(tmp_path, demo_root,
                                                                        monkeypatch):
    import shutil

    from benchmark.files import sha256_bytes
    from benchmark.report.cross import cross_runs, evaluate_cross
    from conftest import link_dataset

    results, counts = _cross_setup(tmp_path, demo_root, monkeypatch)
    messages: list[str] = []

    def cross(root, rule="val"):
        messages.clear()
        evaluate_cross("deiqt", "koniq", "demo", root, results, rule=rule, log=messages.append)
        return sum(m.startswith("already done") for m in messages)

    assert cross(demo_root) == 0 and cross(demo_root) == 3
    assert cross(demo_root, "last") == 0 and cross(demo_root, "last") == 3
    copy = link_dataset(demo_root, tmp_path / "copy")  # the same table in another folder
    assert cross(copy) == 0
    assert cross(copy) == 3
    other = tmp_path / "other"  # a folder of the same name whose table lacks one image
    other.mkdir()
    for entry in demo_root.iterdir():
        if entry.name != "bench":
            (other / entry.name).symlink_to(entry.resolve())
    shutil.copytree(demo_root / "bench", other / "bench")
    text = "".join((demo_root / "bench" / "table.csv").read_text().splitlines(True)[:-1])
    (other / "bench" / "table.csv").write_text(text)
    meta = json.loads((other / "bench" / "meta.json").read_text())
    meta["table_sha256"] = sha256_bytes(text.encode())
    (other / "bench" / "meta.json").write_text(json.dumps(meta))
    assert cross(other) == 0 and cross(other) == 3
    runs = cross_runs(results)
    assert runs.groupby(["rule", "config_id"]).size().tolist() == [3, 3, 3, 3]
    assert len(counts["loaded"]) == 12


def test_missing_teacher_message_is_the_command_that_makes_an_accepted_teacher(demo_root,
                                                                               tmp_path):
    import shlex

    from click.testing import CliRunner

    from benchmark.cli import main
    from benchmark.cli.run import parse_sets
    from benchmark.models import config_to_dict
    from benchmark.runner import resolve_config

    results = tmp_path / "my results"  # a space: the command must quote it
    recipe = ["backbone=vit_tiny_patch16_224", "pretrained=false", "img_size=64",
              "backbone_kwargs={depth: 2, embed_dim: 48, num_heads: 3}", "decoder_dim=48",
              "epochs=1", "train_crops=1", "test_crops=1", "batch_size=32", "warmup_epochs=0"]
    student = ["run", "--model", "qfm", "--dataset", "demo", "--split", "1", "--root",
               str(demo_root), "--results", str(results), "--seed", "3", "--quiet",
               *(f"--set={pair}" for pair in [*recipe, "lambda_kd=0.5"])]

    def bench(args):
        return CliRunner().invoke(main, args)

    missing = bench(student)
    lines = missing.output.strip().splitlines()
    assert missing.exit_code == 1 and len(lines) == 1, missing.output
    command = shlex.split(lines[0].split("needs a finished deiqt run first: ")[1])
    assert command[:4] == ["bench", "run", "--model", "deiqt"]
    assert {"--results", str(results), "--seed", "3", "--root", str(demo_root)} <= set(command)
    sets = [command[i + 1] for i, word in enumerate(command) if word == "--set"]
    assert "img_size=64" in sets and not any(s.startswith("lambda_kd") for s in sets)
    # parsed as --set parses it, the command rebuilds exactly the DEIQT part of the student
    _, qfm = resolve_config("qfm", "demo", parse_sets(tuple(recipe)))
    _, deiqt = resolve_config("deiqt", "demo", parse_sets(tuple(sets)))
    assert config_to_dict(deiqt) == {k: v for k, v in config_to_dict(qfm).items()
                                     if k in config_to_dict(deiqt)}
    made = bench([*command[1:], "--quiet"])
    assert made.exit_code == 0, made.output
    accepted = bench(student)
    assert accepted.exit_code == 0, accepted.output
    # a teacher of another crop side is refused with the command for a matching one
    refused = bench([*student, "--set", "img_size=32"])
    lines = refused.output.strip().splitlines()
    assert refused.exit_code == 1 and len(lines) == 1 and "img_size" in lines[0]
    assert "make one it accepts with: bench run --model deiqt" in lines[0]
    assert "--set img_size=32" in lines[0]
