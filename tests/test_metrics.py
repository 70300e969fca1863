import warnings

import numpy as np
import pytest
from scipy import stats

from benchmark import metrics


def test_rank_correlations_match_hand_computed_values():
    pred = [1.0, 2.0, 3.0, 4.0, 5.0]
    label = [2.0, 1.0, 4.0, 3.0, 5.0]
    # d = (1, -1, 1, -1, 0): 1 - 6·4 / (5·24) = 0.8
    assert metrics.srcc(pred, label) == pytest.approx(0.8)
    # 10 pairs, 2 discordant: (8 - 2) / 10
    assert metrics.krcc(pred, label) == pytest.approx(0.6)
    assert metrics.srcc(pred, label[::-1]) < 0


def test_plcc_and_rmse_match_scipy_and_numpy():
    rng = np.random.default_rng(0)
    label = rng.uniform(0, 100, 200)
    pred = label + rng.normal(0, 10, 200)
    assert metrics.plcc(pred, label) == pytest.approx(stats.pearsonr(pred, label).statistic)
    assert metrics.rmse(pred, label) == pytest.approx(np.sqrt(np.mean((pred - label) ** 2)))
    assert metrics.srcc(pred, label) == pytest.approx(stats.spearmanr(pred, label).statistic)


@pytest.mark.parametrize("params", [4, 5])
def test_logistic_fit_linearises_a_monotonic_nonlinear_predictor(params):
    rng = np.random.default_rng(1)
    label = rng.uniform(0.02, 0.98, 300)
    pred = np.log(label / (1 - label))  # labels are a logistic function of the predictions
    raw, fitted = metrics.plcc(pred, label), metrics.plcc(pred, label, fit=params)
    assert fitted > 0.99 > raw
    assert metrics.rmse(pred, label, fit=params) < 0.03


def test_degenerate_inputs_give_nan_with_a_warning():
    with pytest.warns(RuntimeWarning, match="constant"):
        assert np.isnan(metrics.srcc([1, 1, 1, 1], [1, 2, 3, 4]))
    with pytest.warns(RuntimeWarning, match="2 samples"):
        assert np.isnan(metrics.plcc([1, 2], [1, 2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = metrics.all_metrics([3.0] * 5, [1, 2, 3, 4, 5])
    assert all(np.isnan(v) for k, v in values.items() if k != "rmse")


def test_a_logistic_with_as_many_parameters_as_samples_is_nan_not_a_crash():
    pred, label = [0.1, 0.4, 0.35, 0.9], [1.0, 2.0, 3.0, 4.0]
    with pytest.warns(RuntimeWarning, match="5-parameter logistic needs more than 5 samples, got 4"):
        assert np.isnan(metrics.plcc(pred, label, fit=5))
    with pytest.warns(RuntimeWarning, match="4-parameter logistic needs more than 4 samples"):
        assert np.isnan(metrics.rmse(pred, label, fit=4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = metrics.all_metrics(pred, label)  # a 4-image test split: raw metrics survive
    assert values["srcc"] == pytest.approx(0.8) and np.isnan(values["plcc_l5"])


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="lengths differ"):
        metrics.srcc([1, 2, 3], [1, 2])
