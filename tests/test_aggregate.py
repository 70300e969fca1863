"""bench aggregate: cells, medians, incompleteness, configuration separation, paired tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from benchmark.report.aggregate import (aggregate, bootstrap_median_ci, config_identity,
                                        parse_expected, primary_cells, summarize)
from benchmark.records import iter_records
from synthetic_runs import write_run, write_suite


@pytest.fixture()
def suite(tmp_path):
    truth = write_suite(tmp_path, {("deiqt", "livec"): (0.87, 10), ("qfm", "livec"): (0.89, 10),
                                   ("qfm", "koniq"): (0.92, 7)})
    return tmp_path, truth


def test_medians_equal_independent_computation(suite):
    results, truth = suite
    summary = aggregate(results)["summary"]
    assert len(summary) == 3 * 3 * 7  # cells × rules × metrics
    for (model, dataset, rule), group in truth.groupby(["model", "dataset", "rule"]):
        for metric in ("srcc", "plcc", "krcc", "rmse"):
            row = summary[(summary["model"] == model) & (summary["dataset"] == dataset)
                          & (summary["rule"] == rule) & (summary["metric"] == metric)]
            assert len(row) == 1
            values = group[metric].to_numpy()
            assert row["median"].iloc[0] == pytest.approx(np.median(values), abs=1e-12)
            assert row["mean"].iloc[0] == pytest.approx(values.mean(), abs=1e-12)
            assert row["std"].iloc[0] == pytest.approx(values.std(ddof=1), abs=1e-12)
            assert row["n"].iloc[0] == len(values)


def test_incomplete_cells_are_flagged_not_hidden(suite):
    results, _ = suite
    summary = aggregate(results, expected=parse_expected(["10"]))["summary"]
    koniq = summary[summary["dataset"] == "koniq"]
    assert set(koniq["n"]) == {7} and not koniq["complete"].any()
    assert koniq["splits"].iloc[0] == "0,1,2,3,4,5,6"
    assert summary[summary["dataset"] == "livec"]["complete"].all()
    relaxed = aggregate(results, expected=parse_expected(["10", "koniq=7"]))["summary"]
    assert relaxed["complete"].all()


def test_parse_expected_rejects_bad_values():
    assert parse_expected(["5", "koniq=1"]) == {"*": 5, "koniq": 1}
    with pytest.raises(ValueError, match="koniq=x"):
        parse_expected(["koniq=x"])
    with pytest.raises(ValueError, match="at least 1"):
        parse_expected(["0"])


def test_configs_never_mix_but_plumbing_does_not_split(tmp_path):
    for split in range(3):
        write_run(tmp_path, "qfm", "livec", split, 0.9, seed=split, config={"preset": "full"})
        write_run(tmp_path, "qfm", "livec", split, 0.5, seed=10 + split, config={"preset": "-gate"})
    records = list(iter_records(tmp_path))
    # the synthetic records differ in run_config["workers"] per split: still one cell per config
    assert len({config_identity(r) for r in records}) == 2
    summary = aggregate(tmp_path, expected=3)["summary"]
    srcc = summary[(summary["metric"] == "srcc") & (summary["rule"] == "val")]
    assert sorted(srcc["n"]) == [3, 3]
    by_preset = dict(zip(srcc["preset"], srcc["median"]))
    assert by_preset["full"] > 0.85 and by_preset["-gate"] < 0.55
    # the main table shows the main preset even when an ablation preset has more splits ...
    for split in range(3, 6):
        write_run(tmp_path, "qfm", "livec", split, 0.5, seed=20 + split, config={"preset": "-gate"})
    summary = aggregate(tmp_path, expected=3)["summary"]
    chosen = primary_cells(summary).query("metric == 'srcc' and rule == 'val'")
    assert chosen["preset"].tolist() == ["full"] and chosen["n"].tolist() == [3]
    # ... and among main configurations the one with most splits
    for split in range(4):
        write_run(tmp_path, "qfm", "livec", split, 0.7, seed=99 - split, config={"lr": 5e-4})
    summary = aggregate(tmp_path, expected=3)["summary"]
    chosen = primary_cells(summary).query("metric == 'srcc' and rule == 'val'")
    assert len(chosen) == 1 and chosen["preset"].isna().all() and chosen["n"].iloc[0] == 4
    assert chosen["median"].iloc[0] == pytest.approx(0.7, abs=0.03)


def test_duplicate_split_of_one_config_is_an_error(tmp_path):
    write_run(tmp_path, "deiqt", "livec", 0, 0.9, seed=0)
    record = next(iter_records(tmp_path))
    copy = tmp_path / "runs" / "deiqt" / "livec" / "split0-ffffffffff"
    copy.mkdir()
    (copy / "record.json").write_text((tmp_path / record["_dir"] / "record.json").read_text())
    with pytest.raises(ValueError, match="two records of one configuration and split"):
        aggregate(tmp_path)


def test_wilcoxon_pairs_only_shared_splits(suite):
    results, truth = suite
    write_run(results, "brisque", "livec", 3, 0.6, seed=7)
    write_run(results, "brisque", "livec", 5, 0.6, seed=8)
    tests = aggregate(results)["wilcoxon"]
    row = tests[(tests["dataset"] == "livec") & (tests["rule"] == "val") & (tests["metric"] == "srcc")
                & (tests["model_a"] == "deiqt") & (tests["model_b"] == "qfm")]
    assert len(row) == 1 and row["n_pairs"].iloc[0] == 10
    livec = truth[(truth["dataset"] == "livec") & (truth["rule"] == "val")]
    a = livec[livec["model"] == "deiqt"].sort_values("split")["srcc"].to_numpy()
    b = livec[livec["model"] == "qfm"].sort_values("split")["srcc"].to_numpy()
    expected = stats.wilcoxon(a - b)
    assert row["p_value"].iloc[0] == pytest.approx(expected.pvalue)
    assert row["statistic"].iloc[0] == pytest.approx(expected.statistic)
    assert row["wins_a"].iloc[0] == int(((a - b) > 0).sum())
    assert row["median_diff"].iloc[0] == pytest.approx(np.median(a - b))
    partial = tests[(tests["model_a"] == "brisque") & (tests["model_b"] == "deiqt")
                    & (tests["rule"] == "val") & (tests["metric"] == "srcc")]
    assert partial["n_pairs"].iloc[0] == 2
    assert not (tests["dataset"] == "koniq").any()  # one model there: nothing to pair


def test_rmse_wins_count_lower_as_better(tmp_path):
    runs = pd.DataFrame({
        "model": ["a"] * 3 + ["b"] * 3, "dataset": "x", "config_id": "c", "rule": "val",
        "split": [0, 1, 2] * 2, "preset": None, "suite_tag": None,
        "srcc": [0.9, 0.9, 0.9, 0.8, 0.8, 0.8], "plcc": 0.5, "rmse": [0.1, 0.1, 0.3, 0.2, 0.2, 0.2]})
    from benchmark.report.aggregate import paired_tests

    tests = paired_tests(runs, metrics=("srcc", "rmse", "plcc"))
    wins = dict(zip(tests["metric"], tests["wins_a"]))
    assert wins == {"srcc": 3, "rmse": 2, "plcc": 0}
    plcc = tests[tests["metric"] == "plcc"].iloc[0]
    assert plcc["ties"] == 3 and np.isnan(plcc["p_value"])  # all-equal pairs: test undefined


def test_bootstrap_ci_is_seeded_and_brackets_the_median():
    values = np.array([0.80, 0.82, 0.85, 0.86, 0.87, 0.88, 0.90, 0.91, 0.93, 0.95])
    low, high = bootstrap_median_ci(values)
    assert (low, high) == bootstrap_median_ci(values)
    assert low <= np.median(values) <= high
    assert 0.80 <= low < 0.875 < high <= 0.95
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(values, size=(2000, 10), replace=True), axis=1)
    assert low == pytest.approx(np.percentile(medians, 2.5))
    assert bootstrap_median_ci([0.5]) == (0.5, 0.5)
    assert all(np.isnan(bootstrap_median_ci([])))


def test_summarize_ignores_nan_splits_but_counts_them():
    runs = pd.DataFrame({"model": "a", "dataset": "x", "config_id": "c", "rule": "val",
                         "split": [0, 1, 2], "preset": None, "suite_tag": None,
                         **{m: [0.5, np.nan, 0.7] for m in
                            ("srcc", "krcc", "plcc", "plcc_l4", "plcc_l5", "rmse", "rmse_l5")}})
    row = summarize(runs, expected=3).query("metric == 'srcc'").iloc[0]
    assert row["median"] == pytest.approx(0.6) and row["n"] == 2 and row["n_nan"] == 1
    assert not row["complete"]


def test_cli_writes_csv_and_parquet(suite):
    from benchmark.cli import main

    results, truth = suite
    out = results / "agg"
    outcome = CliRunner().invoke(main, ["aggregate", "--results", str(results), "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    for name in ("runs", "summary", "wilcoxon"):
        csv = pd.read_csv(out / f"{name}.csv")
        parquet = pd.read_parquet(out / f"{name}.parquet")
        assert len(csv) == len(parquet) > 0
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == len(truth)
    median = np.median(truth.query("model == 'qfm' and dataset == 'koniq' and rule == 'val'")["srcc"])
    row = next(line.split() for line in outcome.output.splitlines()
               if line.split()[:2] == ["koniq", "qfm"])
    assert row[2] == f"{median:.3f}" and row[4] == "7*"  # 7 of 10 splits: starred


def test_cli_reports_bad_expect_splits(tmp_path):
    from benchmark.cli import main

    outcome = CliRunner().invoke(main, ["aggregate", "--results", str(tmp_path),
                                        "--expect-splits", "koniq=none"])
    assert outcome.exit_code == 1 and "koniq=none" in outcome.output
