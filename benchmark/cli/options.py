"""Options and error handling shared by every subcommand, spelled once."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import click

from benchmark.errors import UserError

__all__ = ["root_option", "json_option", "user_errors", "BenchError"]


class BenchError(UserError):
    """A user-facing failure whose message is already one clear line."""


def user_errors(command: Callable) -> Callable:
    """The one place where library errors become the CLI's one-line message and exit code 1:
    every :class:`~benchmark.errors.UserError`, and a missing file (a path the user gave).
    Programming errors (IndexError, KeyError, ...) are not among them: they keep their
    traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (UserError, FileNotFoundError) as error:
            raise click.ClickException(str(error).splitlines()[0] if str(error) else
                                       type(error).__name__) from None

    return wrapper


root_option = click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), required=True,
    help="Folder holding the dataset's original files (and, after prepare, bench/).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
