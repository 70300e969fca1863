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
        return plan["identity"]["run"]["amp"]

    assert amp("hyperiqa", "auto") == "off"  # same hash as an explicit fp32 run
    assert amp("deiqt", "auto") == "auto" and amp("hyperiqa", "bf16") == "bf16"
