"""``bench aggregate``, ``bench report``, ``bench analyze feature-distance`` and ``bench cross``.

Every import of pandas, matplotlib or torch happens inside a command body, so resolving
these commands for ``--help`` stays light.
"""

from __future__ import annotations

from pathlib import Path

import click

from benchmark.cli.options import BenchError, root_option, user_errors

__all__ = ["aggregate", "report", "analyze", "cross"]

results_option = click.option(
    "--results", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
    show_default=True, help="Results folder holding runs/ (and cross/).")
expect_option = click.option(
    "--expect-splits", "expect", multiple=True, metavar="N|DATASET=N",
    help="Splits a complete cell has (default 10); repeat as DATASET=N for one dataset "
         "(e.g. koniq=1 for an official split).")


def _expected(values: tuple[str, ...]) -> dict[str, int]:
    from benchmark.aggregate import parse_expected

    try:
        return parse_expected(values)
    except ValueError as error:
        raise BenchError(str(error)) from None


def _has_records(results: Path) -> None:
    if not any((results / "runs").glob("*/*/split*-*/record.json")):
        raise BenchError(f"no finished run records under {results / 'runs'}")


@click.command()
@results_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the tables go (default: RESULTS/aggregate).")
@expect_option
@user_errors
def aggregate(results: Path, out: Path | None, expect: tuple[str, ...]) -> None:
    """Collect every run record into tidy tables (CSV + Parquet).

    \b
    Writes runs (one row per record × selection rule), summary (median, mean, std,
    bootstrap 95 % CI of the median and split counts per model × dataset × config ×
    rule × metric) and wilcoxon (paired tests between cells over shared splits).

    \b
    Example:
      bench aggregate --results results --expect-splits 10 --expect-splits koniq=1
    """
    from benchmark.aggregate import aggregate as run_aggregate
    from benchmark.aggregate import format_medians

    expected = _expected(expect)
    _has_records(results)
    out = out or results / "aggregate"
    try:
        tables = run_aggregate(results, out, expected)
    except ValueError as error:
        raise BenchError(str(error)) from None
    click.echo(format_medians(tables["summary"]))
    click.echo(f"wrote {', '.join(sorted(tables))} tables (.csv, .parquet) to {out}")
