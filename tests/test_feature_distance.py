"""Feature-distance statistics on constructed examples with known answers."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark.report import feature_distance as fd


def circle(angles) -> np.ndarray:
    angles = np.asarray(angles, float)
    return np.c_[np.cos(angles), np.sin(angles)]


def test_hand_computed_example():
    labels = np.array([0.0, 0.1, 0.5, 1.0])
    angles = np.array([0.0, 1.0, 0.05, 2.2])
    # nearest other by angle: 0→2, 1→2, 2→0, 3→1; gaps 0.5, 0.4, 0.5, 0.9
    nbrs = fd.neighbours(circle(angles), k=3)
    assert nbrs[:, 0].tolist() == [2, 2, 0, 1]
    assert nbrs[0].tolist() == [2, 1, 3]
    gaps = fd.knn_gaps(labels, nbrs)
    assert gaps[:, 0].tolist() == pytest.approx([0.5, 0.4, 0.5, 0.9])
    assert fd.gap_share(gaps[:, :1], 0.3) == 1.0
    assert fd.gap_share(gaps[:, :1], 0.45) == 0.75
    # all six pairs: gaps .1 .5 1 .4 .9 .5
    assert fd.random_gap_share(labels, 0.3) == pytest.approx(5 / 6)
    assert fd.random_gap_share(labels, 0.45) == pytest.approx(4 / 6)
    assert fd.random_mean_gap(labels) == pytest.approx(3.4 / 6)
    row = fd.analyse(circle(angles), labels, ks=(1,), thetas=(0.3,), n_boot=0)
    assert row["S1_0.3"] == 1.0 and row["Srand_0.3"] == pytest.approx(5 / 6)
    assert row["R1_0.3"] == pytest.approx(1.2)
    assert row["gap_ratio_1"] == pytest.approx(0.575 / (3.4 / 6))
    pair_angles = [1.0, 0.05, 2.2, 0.95, 1.2, 2.15]  # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    pair_gaps = [0.1, 0.5, 1.0, 0.4, 0.9, 0.5]
    assert row["n_pairs"] == 6
    assert row["rho"] == pytest.approx(stats.spearmanr(pair_angles, pair_gaps).statistic)
    # leave-one-out mean of the 3 others is (sum − y)/3: perfectly anti-ordered
    assert row["knn_srcc"] == pytest.approx(-1.0)


def test_features_that_order_quality():
    rng = np.random.default_rng(1)
    labels = rng.uniform(1, 5, 300)  # a MOS scale: normalised internally
    features = circle((labels - 1) / 4 * np.pi / 2)
    row = fd.analyse(features, labels, n_boot=20)
    for k in (1, 5):
        for theta in (0.1, 0.2, 0.3):
            assert row[f"S{k}_{theta:g}"] == 0.0 and row[f"R{k}_{theta:g}"] == 0.0
    assert row["gap_ratio_1"] < 0.02
    assert row["rho"] == pytest.approx(1.0, abs=1e-9)
    assert row["rho_lo"] == pytest.approx(1.0, abs=1e-9) and row["rho_hi"] == pytest.approx(1.0)
    assert row["rho_closest"] > 0.99 and row["n_closest"] == 448  # 1 % of 44,850 pairs
    assert row["knn_srcc"] > 0.99


def test_features_independent_of_quality():
    rng = np.random.default_rng(2)
    labels = rng.uniform(0, 1, 400)
    features = rng.normal(size=(400, 16))
    row = fd.analyse(features, labels, n_boot=30)
    for theta in (0.1, 0.2, 0.3):
        assert abs(row[f"R1_{theta:g}"] - 1.0) < 0.15
        assert abs(row[f"R5_{theta:g}"] - 1.0) < 0.08
    assert abs(row["gap_ratio_5"] - 1.0) < 0.08
    assert abs(row["rho"]) < 0.03 and row["rho_lo"] < row["rho"] < row["rho_hi"]
    assert row["rho_hi"] - row["rho_lo"] < 0.1
    assert abs(row["knn_srcc"]) < 0.15
    # the random baseline is exact: compare with brute force
    y = (labels - labels.min()) / np.ptp(labels)
    brute = np.abs(y[:, None] - y[None, :])[np.triu_indices(400, 1)]
    assert row["Srand_0.2"] == pytest.approx(np.mean(brute > 0.2), abs=1e-12)


def test_same_and_cross_reference_relations():
    rng = np.random.default_rng(3)
    n_groups, per_group = 30, 10
    groups = np.repeat(np.arange(n_groups), per_group)
    labels = rng.uniform(0, 1, n_groups * per_group)
    content = rng.normal(size=(n_groups, 8))
    content = np.repeat(content / np.linalg.norm(content, axis=1, keepdims=True) * 10, per_group, 0)
    # equal norms: within a reference the cosine distance orders quality exactly (the same way
    # in every reference); across references the content part dominates
    features = np.c_[content, circle(labels * np.pi / 2)]
    same = fd.analyse(features, labels, groups, "same", n_boot=10)
    cross = fd.analyse(features, labels, groups, "cross", n_boot=10)
    assert same["n_pairs"] == n_groups * per_group * (per_group - 1) // 2
    assert same["rho"] == pytest.approx(1.0, abs=1e-9)
    assert same["S1_0.2"] < 0.05 and same["knn_srcc"] > 0.8
    # across references distance follows content, not quality ...
    assert abs(cross["rho"]) < 0.05
    # ... yet the nearest other-reference image is the quality-closest one of the nearest
    # reference, since content ties within it: the kNN share is low, the pair correlation not
    assert cross["R1_0.2"] < 0.1
    # every nearest neighbour under "same" shares the group; under "cross" none does
    nbrs_same = fd.neighbours(features, 5, groups=groups, relation="same")
    nbrs_cross = fd.neighbours(features, 5, groups=groups, relation="cross")
    assert (groups[nbrs_same] == groups[:, None]).all()
    assert (groups[nbrs_cross] != groups[:, None]).all()


def test_random_baselines_by_relation_match_brute_force():
    rng = np.random.default_rng(4)
    labels = rng.uniform(size=60)
    groups = rng.integers(0, 7, 60)
    pairs = list(itertools.combinations(range(60), 2))
    for relation, keep in (("all", lambda a, b: True), ("same", lambda a, b: groups[a] == groups[b]),
                           ("cross", lambda a, b: groups[a] != groups[b])):
        gaps = np.array([abs(labels[a] - labels[b]) for a, b in pairs if keep(a, b)])
        assert fd.random_gap_share(labels, 0.25, groups, relation) == pytest.approx(np.mean(gaps > 0.25))
        assert fd.random_mean_gap(labels, groups, relation) == pytest.approx(gaps.mean())


def test_sample_pairs():
    rng = np.random.default_rng(5)
    i, j = fd.sample_pairs(50, rng)
    assert len(i) == 1225 and (i < j).all()
    i, j = fd.sample_pairs(3000, rng, max_pairs=20000)
    assert len(i) == 20000 and (i < j).all() and j.max() < 3000
    groups = np.arange(3000) % 11
    i, j = fd.sample_pairs(3000, rng, max_pairs=5000, groups=groups, relation="cross")
    assert len(i) == 5000 and (groups[i] != groups[j]).all()
    i, j = fd.sample_pairs(3000, rng, max_pairs=5000, groups=groups, relation="same")
    assert len(i) == 5000 and (groups[i] == groups[j]).all() and (i < j).all()
    with pytest.raises(ValueError, match="needs content groups"):
        fd.sample_pairs(10, rng, relation="same")


def test_weighted_spearman_equals_expanded_data():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 15, 500).astype(float)  # many ties
    y = x + rng.integers(0, 6, 500)
    weights = rng.integers(0, 4, 500)
    expected = stats.spearmanr(np.repeat(x, weights), np.repeat(y, weights)).statistic
    assert fd.weighted_spearman(x, y, weights) == pytest.approx(expected, abs=1e-12)
    assert fd.weighted_spearman(x, y, np.ones(500)) == pytest.approx(stats.spearmanr(x, y).statistic,
                                                                     abs=1e-12)


def test_l2_distance_and_bad_input():
    features = np.array([[0.0, 1.0], [0.0, 3.0], [0.0, 10.0]])
    # cosine sees three identical directions; l2 orders them by length
    assert fd.neighbours(features, 1, metric="l2")[:, 0].tolist() == [1, 0, 1]
    assert fd.pair_distances(features, np.array([0]), np.array([2]), "l2") == pytest.approx([9.0])
    with pytest.raises(ValueError, match="all labels are equal"):
        fd.analyse(features, [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="all zeros"):
        fd.neighbours(np.zeros((3, 2)), 1)


def test_percentile_bins_follow_the_data():
    rng = np.random.default_rng(7)
    d = rng.uniform(size=4000)
    gaps = d.copy()  # gap equals distance
    bins = fd.percentile_bins(d, gaps, n_bins=20)
    assert len(bins["centres"]) == 20 and bins["centres"][0] == pytest.approx(2.5)
    assert (np.diff(bins["median"]) > 0).all() and (bins["p90"] >= bins["median"]).all()
    in_first = np.sort(d)[:200]
    assert bins["median"][0] == pytest.approx(np.median(in_first))


def test_distance_report_writes_rows_and_figures(tmp_path: Path):
    from benchmark.report.features import Selection, distance_report, format_summary

    rng = np.random.default_rng(8)
    n = 120
    labels = rng.uniform(size=n)
    groups = (np.arange(n) % 12).astype(str)
    selection = Selection([f"{i}.png" for i in range(n)], [Path(f"{i}.png") for i in range(n)],
                          labels, groups, split=0, part="test")
    sources = {"F0": rng.normal(size=(n, 8)), "F1": circle(labels * np.pi / 2)}
    summary = distance_report(sources, selection, synthetic=True, out=tmp_path,
                              meta={"dataset": "demo"}, n_boot=5, log=lambda _: None)
    assert len(summary) == 2 * 3 * 2  # sources × relations × distances
    written = pd.read_csv(tmp_path / "summary.csv")
    assert len(written) == 12 and set(written["relation"]) == {"all", "same", "cross"}
    f1 = written.query("source == 'F1' and relation == 'all' and distance == 'cosine'").iloc[0]
    assert f1["rho"] == pytest.approx(1.0, abs=1e-6) and f1["S1_0.2"] == 0.0
    for stem in ("distance_gap", "gap_share"):
        for suffix in (".png", ".pdf"):
            assert (tmp_path / f"{stem}{suffix}").stat().st_size > 1000
    assert "F1" in format_summary(summary)
    with pytest.raises(ValueError, match="source F2: 3 features for 120 images"):
        distance_report({"F2": np.ones((3, 2))}, selection, False, tmp_path, {}, n_boot=0)
