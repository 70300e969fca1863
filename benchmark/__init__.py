"""iqa-bench: a harness for no-reference image quality assessment.

``from benchmark import load_metric`` gives a trained run as a metric (:mod:`benchmark.metric`).
It is resolved on first use, so importing the package (and ``bench --help``) stays free of torch.
"""

from __future__ import annotations

__all__ = ["load_metric", "Metric"]


def __getattr__(name: str):
    if name in __all__:
        from benchmark import metric

        return getattr(metric, name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
