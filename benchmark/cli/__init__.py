"""The ``bench`` command: a lazy click group.

Each subcommand lives in its own module and is imported only when chosen, so
``bench --help`` never imports torch. Library code raises; only this layer turns
errors into one-line messages and exit codes.
"""

from __future__ import annotations

import importlib
import sys

import click

__all__ = ["main", "LAZY_COMMANDS"]

#: command name → "module:attribute"; each module holds one command or group
LAZY_COMMANDS = {
    "data": "benchmark.cli.data:data",
    "models": "benchmark.cli.run:models",
    "run": "benchmark.cli.run:run",
    "score": "benchmark.cli.run:score",
    "profile": "benchmark.cli.run:profile",
    "pretrain": "benchmark.cli.run:pretrain",
    "sweep": "benchmark.cli.sweep:sweep",
    "suite": "benchmark.cli.suite:suite",
    "aggregate": "benchmark.cli.report:aggregate",
    "report": "benchmark.cli.report:report",
    "analyze": "benchmark.cli.report:analyze",
    "cross": "benchmark.cli.report:cross",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(LAZY_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target.split(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


def _show_versions(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from benchmark.records import package_versions

    for package, version in package_versions().items():
        click.echo(f"{package}: {version}")
    ctx.exit()


#: Pillow's default limit, spelled here so `bench --help` needs no Pillow import
DEFAULT_MAX_PIXELS = 89_478_485


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--show-versions", is_flag=True, expose_value=False, is_eager=True,
              callback=_show_versions, help="Print package versions for bug reports and exit.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS,
              envvar="BENCH_MAX_PIXELS", show_default=True,
              help="Refuse images with more pixels (decompression bombs); raise it for "
                   "genuinely huge images. Also $BENCH_MAX_PIXELS, which sweep workers inherit.")
def main(max_pixels: int) -> None:
    """Reference harness for no-reference image quality assessment.

    \b
    Examples:
      bench data list
      bench data prepare demo --root data/demo
      bench run --model probe --dataset demo --split 0 --root data/demo
      bench aggregate && bench report
    """
    from benchmark.images import set_pixel_limit

    set_pixel_limit(max_pixels)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
