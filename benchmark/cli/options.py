"""Options and error handling shared by every subcommand, spelled once."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import click

__all__ = ["root_option", "json_option", "user_errors", "BenchError"]


class BenchError(Exception):
    """A user-facing failure whose message is already one clear line."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    # imported here: these modules are light (no torch), but the CLI root must stay lighter.
    # Programming errors (IndexError, KeyError…) are not among them: they keep their traceback
    from benchmark.datasets.base import DatasetError
    from benchmark.io import DiskFullError, LockedError
    from benchmark.model_config import ConfigError
    from benchmark.records import RecordError
    from benchmark.registry import UnknownNameError
    from benchmark.splits import SplitFileError

    return (BenchError, ConfigError, DatasetError, DiskFullError, LockedError, RecordError,
            SplitFileError, UnknownNameError)


def user_errors(command: Callable) -> Callable:
    """Turn the library's user-facing exceptions into a one-line message and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except _user_error_types() as error:
            raise click.ClickException(str(error).splitlines()[0] if str(error) else
                                       type(error).__name__) from None

    return wrapper


root_option = click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), required=True,
    help="Folder holding the dataset's original files (and, after prepare, bench/).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
