"""IQA correlation metrics as pure functions of (prediction, label) arrays.

Degenerate input (fewer than 3 samples, constant predictions or labels) gives NaN with a
warning instead of an exception, so one collapsed epoch never kills a sweep.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import optimize, stats

__all__ = ["srcc", "krcc", "plcc", "rmse", "logistic4", "logistic5", "fit_logistic", "all_metrics",
           "HIGHER_IS_BETTER"]

HIGHER_IS_BETTER = {"srcc": True, "krcc": True, "plcc": True, "plcc_l4": True, "plcc_l5": True,
                    "rmse": False, "rmse_l5": False}


def _clean(pred, label) -> tuple[np.ndarray, np.ndarray] | None:
    pred = np.asarray(pred, dtype=np.float64).ravel()
    label = np.asarray(label, dtype=np.float64).ravel()
    if pred.shape != label.shape:
        raise ValueError(f"prediction and label lengths differ: {pred.size} vs {label.size}")
    if pred.size < 3:
        warnings.warn(f"correlation of {pred.size} samples is undefined; returning NaN",
                      RuntimeWarning, stacklevel=3)
        return None
    if np.ptp(pred) == 0 or np.ptp(label) == 0:
        warnings.warn("constant predictions or labels; correlation is NaN", RuntimeWarning,
                      stacklevel=3)
        return None
    return pred, label


def srcc(pred, label) -> float:
    clean = _clean(pred, label)
    return float("nan") if clean is None else float(stats.spearmanr(*clean).statistic)


def krcc(pred, label) -> float:
    clean = _clean(pred, label)
    return float("nan") if clean is None else float(stats.kendalltau(*clean).statistic)


def logistic4(x, b1, b2, b3, b4):
    """Four-parameter logistic of the VQEG reports: (b1 − b2) / (1 + exp(−(x − b3)/|b4|)) + b2."""
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / np.abs(b4))) + b2


def logistic5(x, b1, b2, b3, b4, b5):
    """Five-parameter logistic (Sheikh et al. 2006): b1·(½ − 1/(1 + exp(b2(x − b3)))) + b4·x + b5."""
    return b1 * (0.5 - 1.0 / (1.0 + np.exp(b2 * (x - b3)))) + b4 * x + b5


def fit_logistic(pred: np.ndarray, label: np.ndarray, params: int = 5) -> np.ndarray:
    """Map predictions onto the label scale with a monotonic logistic (least squares)."""
    x = (pred - pred.mean()) / pred.std()  # standardised so one initial guess fits every scale
    if params == 4:
        function, p0 = logistic4, [label.max(), label.min(), 0.0, 1.0]
    elif params == 5:
        function, p0 = logistic5, [np.ptp(label), 1.0, 0.0, 0.0, label.mean()]
    else:
        raise ValueError(f"logistic mapping has 4 or 5 parameters, not {params}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            coefficients, _ = optimize.curve_fit(function, x, label, p0=p0, maxfev=20000)
        return function(x, *coefficients)
    except (RuntimeError, optimize.OptimizeWarning):
        warnings.warn("logistic fit did not converge; using the linear fit", RuntimeWarning,
                      stacklevel=2)
        slope, intercept = np.polyfit(x, label, 1)
        return slope * x + intercept


def _mapped(pred, label, fit: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Cleaned (prediction, label), the prediction logistic-mapped when ``fit`` is 4 or 5."""
    clean = _clean(pred, label)
    if clean is None or fit is None:
        return clean
    pred, label = clean
    if pred.size <= fit:  # curve_fit refuses more parameters than points
        warnings.warn(f"a {fit}-parameter logistic needs more than {fit} samples, got "
                      f"{pred.size}; returning NaN", RuntimeWarning, stacklevel=3)
        return None
    return fit_logistic(pred, label, fit), label


def plcc(pred, label, fit: int | None = None) -> float:
    """Pearson correlation on raw predictions, or after a 4-/5-parameter logistic mapping."""
    mapped = _mapped(pred, label, fit)
    if mapped is None or np.ptp(mapped[0]) == 0:
        return float("nan")
    return float(stats.pearsonr(*mapped).statistic)


def rmse(pred, label, fit: int | None = None) -> float:
    mapped = _mapped(pred, label, fit)
    if mapped is None:
        return float("nan")
    return float(np.sqrt(np.mean((mapped[0] - mapped[1]) ** 2)))


def all_metrics(pred, label) -> dict[str, float]:
    """Every metric the run record stores, keyed as in :data:`HIGHER_IS_BETTER`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "srcc": srcc(pred, label),
            "krcc": krcc(pred, label),
            "plcc": plcc(pred, label),
            "plcc_l4": plcc(pred, label, fit=4),
            "plcc_l5": plcc(pred, label, fit=5),
            "rmse": rmse(pred, label),
            "rmse_l5": rmse(pred, label, fit=5),
        }
