"""benchmarks/qfm_vs_deiqt.py: paired differences and the Wilcoxon p over splits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from benchmark.records import iter_records
from synthetic_runs import write_run

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "qfm_vs_deiqt.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("qfm_vs_deiqt", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_differences_and_wilcoxon_p_on_synthetic_runs(script, tmp_path):
    for split in range(6):
        write_run(tmp_path, "deiqt", "livec", split, 0.85, seed=split)
        write_run(tmp_path, "qfm", "livec", split, 0.86, seed=100 + split,
                  config={"preset": "full"})
    records = {(r["model"], r["split"]): r for r in iter_records(tmp_path)}
    pairs = [(records["deiqt", s], records["qfm", s]) for s in range(6)]
    table, summary = script.paired_comparison(pairs, rule="val", metric="srcc")
    expected = np.array([records["qfm", s]["metrics"]["val"]["test"]["srcc"]
                         - records["deiqt", s]["metrics"]["val"]["test"]["srcc"]
                         for s in range(6)])
    assert table["split"].tolist() == list(range(6))
    assert table["diff"].to_numpy() == pytest.approx(expected)
    assert summary["p_value"] == pytest.approx(stats.wilcoxon(expected).pvalue)
    assert summary["median_diff"] == pytest.approx(float(np.median(expected)))
    assert summary["qfm_wins"] == int((expected > 0).sum()) and summary["n"] == 6
    text = script.format_comparison(table, summary)
    assert f"Wilcoxon p = {summary['p_value']:.4g}" in text
    _, oracle = script.paired_comparison(pairs, rule="test_oracle", metric="srcc")
    assert oracle["median_diff"] != summary["median_diff"]  # the rule picks other metrics
    lines = script.format_ablation([("A1", table, summary), ("A3", table, oracle)]).splitlines()
    assert lines[0].startswith("test SRCC (val-selected), preset − DEIQT")
    assert lines[1].split()[:7] == ["A1", *(f"{d:+.3f}" for d in expected)]
    assert f"median {summary['median_diff']:+.4f}" in lines[1]
    assert f"wins {summary['qfm_wins']}/6" in lines[1] and f"p = {summary['p_value']:.4g}" in lines[1]
    assert f"median {oracle['median_diff']:+.4f}" in lines[2]


def test_bad_splits_are_one_line(script):
    result = CliRunner().invoke(script.main, ["--dataset", "demo", "--root", ".",
                                              "--splits", "one-two"])
    assert result.exit_code == 1 and "--splits: 'one-two' is not a list" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_trains_each_split_pair_with_its_own_teacher(script, demo_root, tmp_path):
    recipe = ["backbone=vit_tiny_patch16_224", "pretrained=false", "img_size=64",
              "backbone_kwargs={depth: 2, embed_dim: 48, num_heads: 3}", "decoder_dim=48",
              "epochs=1", "train_crops=1", "test_crops=1", "batch_size=32", "warmup_epochs=0"]
    args = ["--dataset", "demo", "--root", str(demo_root), "--splits", "0-1", "--results",
            str(tmp_path), "--max-steps", "2", "--quiet", *(f"--set={s}" for s in recipe)]
    result = CliRunner().invoke(script.main, args)
    assert result.exit_code == 0, result.output
    records = list(iter_records(tmp_path))
    teachers = {r["split"]: r["config_hash"] for r in records if r["model"] == "deiqt"}
    students = {r["split"]: r["prerequisites"]["deiqt"]["config_hash"]
                for r in records if r["model"] == "qfm"}
    assert sorted(teachers) == [0, 1] and students == teachers
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("test SRCC (val-selected), QFM-IQM − DEIQT")
    assert "QFM-IQM better on" in lines[-1]
