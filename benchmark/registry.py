"""Lazy name → class registries backed by Python entry points.

Datasets and models register in ``pyproject.toml`` (groups ``bench.datasets`` and
``bench.models``), so adding one never means editing a list here, and nothing is
imported until a name is asked for: ``bench --help`` stays free of torch.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Generic, TypeVar

from benchmark.errors import UserError

__all__ = ["Registry", "UnknownNameError", "DATASETS_GROUP", "MODELS_GROUP"]

DATASETS_GROUP = "bench.datasets"
MODELS_GROUP = "bench.models"

T = TypeVar("T")


@functools.cache
def _installed(group: str) -> tuple[EntryPoint, ...]:
    # the installed packages do not change while a process runs, and reading every
    # distribution's metadata costs milliseconds a call: costing a suite asks hundreds of times
    return tuple(entry_points(group=group))


class UnknownNameError(UserError, KeyError):
    """An unknown dataset or model name; the message suggests close matches."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want a plain sentence
        return str(self.args[0])


@dataclass
class Registry(Generic[T]):
    """Entry points of one group, loaded on first use and checked against ``base``."""

    group: str
    kind: str
    _loaded: dict[str, T] = field(default_factory=dict)

    def _entry_points(self) -> dict[str, EntryPoint]:
        found: dict[str, EntryPoint] = {}
        for ep in _installed(self.group):
            if ep.name in found and found[ep.name].value != ep.value:
                raise RuntimeError(
                    f"{self.kind} name {ep.name!r} is registered twice: "
                    f"{found[ep.name].value} and {ep.value}"
                )
            found[ep.name] = ep
        return found

    def names(self) -> list[str]:
        return sorted(self._entry_points())

    def aliases(self) -> dict[str, str]:
        """alias → canonical name, from each loaded class's ``aliases`` attribute."""
        table: dict[str, str] = {}
        for name in self.names():
            for alias in getattr(self.get(name), "aliases", ()):
                table[alias.lower()] = name
        return table

    def canonical(self, name: str) -> str:
        key = name.lower()
        eps = self._entry_points()
        if key in eps:
            return key
        table = self.aliases()
        if key in table:
            return table[key]
        close = difflib.get_close_matches(key, [*eps, *table], n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(eps))})"
        )

    def get(self, name: str) -> T:
        key = name.lower()
        eps = self._entry_points()
        if key not in eps:
            key = self.canonical(name)
        if key not in self._loaded:
            obj = eps[key].load()
            if getattr(obj, "name", key) != key:
                raise RuntimeError(
                    f"{self.kind} entry point {key!r} loads {eps[key].value}, "
                    f"whose name is {getattr(obj, 'name', None)!r}"
                )
            self._loaded[key] = obj
        return self._loaded[key]

    def declared(self, name: str, attribute: str) -> str | None:
        """The string that ``name``'s registered class assigns to ``attribute`` in its own
        body, read from the module's source without importing it (a model module imports
        torch; reports must not); None for an unregistered name or an attribute the class
        body does not assign a string literal."""
        ep = self._entry_points().get(name.lower())
        return None if ep is None else _class_literal(ep.value, attribute)


@functools.cache
def _class_literal(value: str, attribute: str) -> str | None:
    module, _, qualname = value.partition(":")
    spec = importlib.util.find_spec(module)  # imports the parent packages only
    if spec is None or not (spec.origin or "").endswith(".py"):
        return None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    body = next((node.body for node in tree.body
                 if isinstance(node, ast.ClassDef) and node.name == qualname), [])
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign):
            target = node.target
        else:
            continue
        if isinstance(target, ast.Name) and target.id == attribute and \
                isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return node.value.value
    return None


def dataset_registry() -> Registry:
    return Registry(DATASETS_GROUP, "dataset")


def model_registry() -> Registry:
    return Registry(MODELS_GROUP, "model")
