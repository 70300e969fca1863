"""A suite's grid resolved against the models and the engine, which this module imports
(:mod:`benchmark.grid.suite` reads params.yaml without them): every cell's config and
prerequisites, and the suite's run settings. Whatever a run would refuse fails here, naming
the params.yaml key, before ``bench suite check`` passes or a sweep starts a run.
"""

from __future__ import annotations

from typing import Any

from benchmark.grid.suite import Params, Suite, SuiteError

__all__ = ["check_params", "check_order", "run_settings"]


def check_params(params: Params) -> dict[str, int]:
    """Resolve every cell of every suite and its run settings (imports the models): every
    value a run would refuse fails here; returns cells per suite."""
    counts = {}
    for name in params.suites:
        suite = params.suite(name)
        check_order(suite, f"{params.path}: suites.{name}")
        run_settings(suite, f"{params.path}: suites.{name}.run")
        counts[name] = len(suite.cells())
    return counts


def check_order(suite: Suite, where: str, declared: bool = True) -> dict[str, tuple[str, ...]]:
    """Resolve every cell's config; returns each entry's prerequisites (registered models).

    ``declared``: the suite's lists come from params.yaml, so dvc.yaml's order must hold:
    its models need nothing first and its students need only the teacher.
    """
    from benchmark.models import ConfigError
    from benchmark.runner import resolve_config

    needs: dict[str, tuple[str, ...]] = {}
    for entry in suite.entries:
        found: list[str] = []
        for dataset in suite.datasets:
            try:
                cls, config = resolve_config(entry.model, dataset, entry.overrides)
            except (ConfigError, TypeError, ValueError) as error:
                raise SuiteError(f"{where}: {entry.name} on {dataset}: {error}") from None
            found += [n for n in cls.prerequisites(config) if n not in found]
        needs[entry.name] = tuple(found)
        if not declared or not found:
            continue
        if not entry.student:
            raise SuiteError(f"{where}.models.{entry.name}: needs a {found[0]} run first; "
                             f"list it under students")
        if set(found) != {suite.teacher_model}:
            raise SuiteError(f"{where}.students.{entry.name}: needs {', '.join(found)}, but the "
                             f"teacher {suite.teacher!r} runs {suite.teacher_model!r}")
    return needs


def run_settings(suite: Suite, where: str, device: str | None = None) -> dict[str, Any]:
    """The suite's ``run`` section (``device`` replaced when given) as RunConfig fields,
    checked by building the RunConfig a run would get."""
    from benchmark.engine import RunConfig
    from benchmark.models import ConfigError

    run = dict(suite.run)
    if device:
        run["device"] = device
    try:
        RunConfig(**run)
    except (ConfigError, TypeError) as error:
        raise SuiteError(f"{where}: {error}") from None
    return run
