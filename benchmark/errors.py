"""The one base class of every failure a user causes (a bad file, key, value or name).

Library modules raise subclasses of :class:`UserError` whose message is already one line
naming the culprit; the CLI turns exactly these into that line and exit status 1, in one
place (:func:`benchmark.cli.options.user_errors`). Anything else is a programming error and
keeps its traceback. This module imports nothing, so every layer can use it.
"""

from __future__ import annotations

__all__ = ["UserError", "DatasetError"]


class UserError(Exception):
    """A failure the user can fix; ``str(error)``'s first line says what and where."""


class DatasetError(UserError):
    """Bad or missing dataset files or images; the message is one line naming the culprit.
    Here, not in ``benchmark.datasets``, so that image reading below the datasets can raise it."""
