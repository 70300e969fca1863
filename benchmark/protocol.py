"""What each original's published protocol did: its test-set epoch rule and its precision.

A model declares both as class attributes (:class:`benchmark.models.IQAModel`):
``paper_selection`` names the rule its released code uses to pick the reported epoch on the
*test* split (the ``test_oracle`` selection of a record, kept to measure its optimism), and
``original_precision`` says whether that code trained in full precision (``"fp32"``: no
autocast anywhere) or with mixed precision (``"mixed"``). Pure functions; no model is imported.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["PAPER_RULES", "PRECISIONS", "paper_epoch", "resolve_amp", "precision_facts"]

#: test-set epoch rules of the released codes
PAPER_RULES = {
    "plcc": "the epoch with the best test PLCC",
    "srcc": "the epoch with the best test SRCC",
    # MANIQA's train loop: save when SRCC or PLCC beats its best, then take both as the bests
    "srcc+plcc": "the last epoch whose test SRCC or PLCC beat the running best pair",
}
#: what an original trained in; "" when unknown or when there is no original code
PRECISIONS = ("fp32", "mixed", "")


def _metric(entry: dict[str, Any], name: str) -> float:
    return entry["test"].get(name, float("nan"))


def paper_epoch(history: list[dict[str, Any]], rule: str) -> dict[str, Any]:
    """The history entry ``rule`` reports; the last epoch when no test metric is finite."""
    if rule not in PAPER_RULES:
        raise ValueError(f"unknown paper selection rule {rule!r} ({', '.join(PAPER_RULES)})")
    chosen = None
    if rule == "srcc+plcc":
        best = (-math.inf, -math.inf)
        for entry in history:
            srcc, plcc = _metric(entry, "srcc"), _metric(entry, "plcc")
            if srcc > best[0] or plcc > best[1]:  # False for NaN, as in the original's test
                chosen, best = entry, (srcc, plcc)
    else:
        for entry in history:  # strictly better: the earliest of tied epochs
            value = _metric(entry, rule)
            if not math.isnan(value) and (chosen is None or value > _metric(chosen, rule)):
                chosen = entry
    return chosen if chosen is not None else history[-1]


def resolve_amp(amp: str, original: str) -> str:
    """The run's amp mode: ``auto`` means the original's precision (``off`` for an fp32
    original, the device's mixed precision otherwise); any other mode is the user's choice."""
    return "off" if amp == "auto" and original == "fp32" else amp


def precision_facts(dtype: str, original: str) -> dict[str, Any]:
    """For the record: the dtype the run computed in, the original's precision, and whether
    they differ (None when the original's is unknown)."""
    if original not in PRECISIONS:
        raise ValueError(f"unknown original precision {original!r} ({', '.join(PRECISIONS)})")
    differs = None if not original else (dtype == "fp32") != (original == "fp32")
    return {"dtype": dtype, "original": original or None, "differs": differs}
