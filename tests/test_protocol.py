"""Each original's test-set epoch rule and precision (benchmark.protocol), and where they land."""

from __future__ import annotations

import math

import pytest

from benchmark.engine import RunConfig
from benchmark.models import get_model_class
from benchmark.protocol import paper_epoch, precision_facts, resolve_amp
from benchmark.runner import plan_run

NAN = math.nan


def history(*test_pairs: tuple[float, float]) -> list[dict]:
    return [{"epoch": e, "val": {}, "test": {"srcc": s, "plcc": p}}
            for e, (s, p) in enumerate(test_pairs)]


#: the rules disagree here: best SRCC at 1, best PLCC at 2, MANIQA's running pair last beaten at 3
RUN = history((0.80, 0.80), (0.90, 0.81), (0.85, 0.95), (0.86, 0.82), (0.84, 0.80))


@pytest.mark.parametrize("rule, epoch", [("srcc", 1), ("plcc", 2), ("srcc+plcc", 3)])
def test_each_paper_rule_picks_its_epoch(rule, epoch):
    assert paper_epoch(RUN, rule)["epoch"] == epoch


def test_ties_keep_the_earliest_epoch_and_nan_is_skipped():
    tied = history((0.5, NAN), (0.7, NAN), (0.7, NAN), (NAN, NAN))
    assert paper_epoch(tied, "srcc")["epoch"] == 1
    assert paper_epoch(tied, "plcc")["epoch"] == 3  # nothing finite: the last epoch
    assert paper_epoch(tied, "srcc+plcc")["epoch"] == 1
    with pytest.raises(ValueError, match="unknown paper selection rule 'krcc'"):
        paper_epoch(tied, "krcc")


def test_each_model_names_its_originals_rule_and_precision():
    rules = {name: (get_model_class(name).paper_selection, get_model_class(name).original_precision)
             for name in ("hyperiqa", "dbcnn", "tres", "maniqa", "deiqt")}
    assert rules == {"hyperiqa": ("srcc", "fp32"), "dbcnn": ("srcc", "fp32"),
                     "tres": ("srcc", "fp32"), "maniqa": ("srcc+plcc", "fp32"),
                     "deiqt": ("plcc", "mixed")}


def test_auto_precision_is_the_originals_and_an_override_is_flagged():
    assert resolve_amp("auto", "fp32") == "off"
    assert resolve_amp("auto", "mixed") == resolve_amp("auto", "") == "auto"
    assert resolve_amp("bf16", "fp32") == "bf16"  # a suite may override
    assert precision_facts("bf16", "fp32") == {"dtype": "bf16", "original": "fp32", "differs": True}
    assert precision_facts("fp32", "fp32")["differs"] is False
    assert precision_facts("fp32", "mixed")["differs"] is True
    assert precision_facts("bf16", "")["differs"] is None


def test_the_run_identity_holds_the_resolved_precision(demo_root, tmp_path):
    def amp(model: str, mode: str) -> str:
        plan = plan_run(model, "demo", 0, demo_root, run=RunConfig(amp=mode), results=tmp_path)
        return plan.identity["run"]["amp"]

    assert amp("hyperiqa", "auto") == "off"  # same hash as an explicit fp32 run
    assert amp("deiqt", "auto") == "auto" and amp("hyperiqa", "bf16") == "bf16"


# --- the two protocols: honest (train / val / test) and paper (train + val / test) ---------

PAPER = RunConfig(protocol="paper", progress=False)
PROBE = {"backbone": "test_resnet", "pretrained": "false", "img_size": 32, "epochs": 3,
         "train_crops": 1, "test_crops": 1, "batch_size": 32, "lr": 3e-3, "head_init": "random"}


def test_the_paper_protocol_trains_on_train_and_val_and_is_hashed_apart(demo_root, tmp_path):
    honest = plan_run("probe", "demo", 0, demo_root, PROBE, RunConfig(), tmp_path)
    paper = plan_run("probe", "demo", 0, demo_root, PROBE, PAPER, tmp_path)
    assert paper.parts["train"] == honest.parts["train"] + honest.parts["val"]
    assert paper.parts["val"] == [] and paper.parts["test"] == honest.parts["test"]
    assert paper.identity["run"]["protocol"] == "paper" and paper.config_hash != honest.config_hash
    # honest runs keep the hash they had before there were two protocols
    assert "protocol" not in honest.identity["run"]
    with pytest.raises(Exception, match="protocol 'heldout' is not one of honest, paper"):
        RunConfig(protocol="heldout")


def test_a_paper_run_reports_its_test_rule_in_the_tables_beside_the_published(demo_root, tmp_path):
    from benchmark.report.aggregate import runs_table, summarize
    from benchmark.report.published import load_published
    from benchmark.report.tables import HONEST_NOTE, SECTION, protocol_table, published_table
    from benchmark.runner import run_one

    quiet = {"log": lambda _: None}
    honest = run_one("probe", "demo", 0, demo_root, PROBE, RunConfig(progress=False), tmp_path,
                     **quiet)
    paper = run_one("probe", "demo", 0, demo_root, PROBE, PAPER, tmp_path, **quiet)
    assert paper["protocol"] == "paper" and paper["data"]["n_val"] == 0
    assert paper["data"]["n_train"] == honest["data"]["n_train"] + honest["data"]["n_val"]
    runs = runs_table([honest, paper])
    assert sorted(runs["rule"]) == ["last", "paper", "test_oracle", "val"]
    row = runs[runs["rule"] == "paper"].iloc[0]
    assert row["srcc"] == paper["metrics"]["test_oracle"]["test"]["srcc"]
    summary = summarize(runs, expected=1)
    table = protocol_table(summary)
    body = next(line for line in table.splitlines() if line.startswith("Probe"))
    cells = [c.strip(" \\").replace("$-$", "-") for c in body.split("&")]
    val, paper_srcc, delta = float(cells[2]), float(cells[4]), float(cells[5])
    assert paper_srcc == round(row["srcc"], 3) and delta == pytest.approx(paper_srcc - val, abs=2e-3)
    published = published_table(summary, load_published())
    assert SECTION not in published and HONEST_NOTE not in published
    honest_only = published_table(summarize(runs_table([honest]), expected=1), load_published())
    assert SECTION in honest_only and HONEST_NOTE in honest_only


def test_a_paper_student_learns_from_a_paper_teacher(tmp_path):
    import json

    from benchmark.records import RECORD_SCHEMA, RunKey, latest_record

    for name, protocol in (("split0-aaaaaaaaaa", "honest"), ("split0-bbbbbbbbbb", "paper")):
        folder = tmp_path / "runs" / "deiqt" / "demo" / name
        folder.mkdir(parents=True)
        (folder / "record.json").write_text(json.dumps(
            {"schema": RECORD_SCHEMA, "model": "deiqt", "dataset": "demo", "split": 0,
             "config": {}, "metrics": {"val": {"test": {"srcc": 0.5}}},
             "config_hash": name[7:] + "0" * 54, "protocol": protocol}))
    key = RunKey("deiqt", "demo", 0)
    assert latest_record(tmp_path, key, protocol="paper").parent.name == "split0-bbbbbbbbbb"
    assert latest_record(tmp_path, key, protocol="honest").parent.name == "split0-aaaaaaaaaa"
