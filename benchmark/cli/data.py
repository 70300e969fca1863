"""``bench data``: list, download, verify, prepare and describe datasets.

Every command takes the dataset by registered name or alias and works on the original files
under ``--root``; ``prepare`` writes ``<root>/bench/``. Nothing here imports torch.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import click

from benchmark.cli.options import BenchError, json_option, root_option, user_errors

__all__ = ["data"]

option_option = click.option(
    "-O", "--option", "options", multiple=True, metavar="KEY=VALUE",
    help="Dataset option, e.g. -O label=original for LIVE's dmos.mat labels (repeatable).",
)


def load_dataset(name: str, options: tuple[str, ...] = ()):
    """The registered dataset ``name`` built with ``KEY=VALUE`` options; user errors raise."""
    from benchmark.registry import dataset_registry

    cls = dataset_registry().get(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    kwargs = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise BenchError(f"dataset option {option!r} is not KEY=VALUE")
        if key not in accepted:
            known = ", ".join(accepted) if accepted else "none"
            raise BenchError(f"dataset {cls.name} has no option {key!r} (options: {known})")
        kwargs[key] = value
    return cls(**kwargs)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``0-9`` or ``0,3,5`` or a mix (``0-4,7``), in the order given, without repeats."""
    from benchmark.grid.suite import SuiteError, parse_indices

    try:
        return parse_indices(text, "--seeds")
    except SuiteError as error:
        raise BenchError(str(error)) from None


def _plain(value):
    """JSON-safe: NaN becomes null so the output stays valid JSON."""
    return None if isinstance(value, float) and math.isnan(value) else value


@click.group()
def data() -> None:
    """List, download, verify, prepare and describe datasets.

    \b
    Examples:
      bench data list
      bench data download kadid --root data/kadid
      bench data verify tid2013 --root data/tid2013
      bench data prepare live --root data/live -O label=realigned --seeds 0-9
      bench data info tid2013 --root data/tid2013 --json
    """


@data.command("list")
@user_errors
def list_() -> None:
    """Registered datasets with kind, expected counts, score type and direction."""
    from benchmark.registry import dataset_registry

    registry = dataset_registry()
    click.echo(f"{'name':<10} {'kind':<10} {'images':>7} {'groups':>7}  {'score':<5} "
               f"{'better':<7} title")
    for name in registry.names():
        try:
            cls = registry.get(name)
        except ImportError as error:  # a registered module not (yet) in this checkout
            click.echo(f"{name:<10} unavailable ({type(error).__name__}: {error})")
            continue
        images = cls.expected_images if cls.expected_images is not None else "-"
        groups = cls.expected_groups if cls.expected_groups is not None else "-"
        better = "higher" if cls.higher_is_better else "lower"
        click.echo(f"{name:<10} {cls.kind:<10} {images:>7} {groups:>7}  {cls.score_type:<5} "
                   f"{better:<7} {cls.title}")


@data.command()
@click.argument("name")
@root_option
@click.option("--password", envvar="BENCH_ARCHIVE_PASSWORD", default=None,
              help="Password of a protected zip (LIVE); read from $BENCH_ARCHIVE_PASSWORD too. "
              "Never stored.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@option_option
@user_errors
def download(name: str, root: Path, password: str | None, no_progress: bool,
             options: tuple[str, ...]) -> None:
    """Fetch, check and unpack NAME's files into --root, or print the manual steps."""
    from benchmark.datasets.download import fetch, manual_steps

    dataset = load_dataset(name, options)
    if dataset.generated:
        dataset.generate(root)
        click.echo(f"{dataset.name}: generated under {root}")
        return
    result = fetch(dataset, root, password.encode() if password else None,
                   progress=not no_progress)
    if result.already_complete:
        click.echo(f"{dataset.name}: labels and images already in place under {root}")
        return
    for path in result.extracted:
        click.echo(f"unpacked {path}")
    if result.pending:
        click.echo(manual_steps(dataset, root, result.pending))
        raise BenchError(
            f"{dataset.name}: {len(result.pending)} file(s) must be placed by hand "
            f"(first: {result.pending[0].source.filename}); see the steps above"
        )
    click.echo(f"{dataset.name}: files in place under {root}; "
               f"next: bench data verify {dataset.name} --root {root}")


@data.command()
@click.argument("name")
@root_option
@option_option
@user_errors
def verify(name: str, root: Path, options: tuple[str, ...]) -> None:
    """Check that NAME's labels parse and every listed image exists and decodes."""
    from tqdm import tqdm

    from benchmark.datasets.prepare import decode_check, missing_images

    dataset = load_dataset(name, options)
    table = dataset.parse(root)
    n_groups = table["group"].nunique()
    click.echo(f"{dataset.name}: {len(table)} images listed (expected {dataset.expected_images}), "
               f"{n_groups} content groups (expected {dataset.expected_groups})")
    missing = missing_images(table, root)
    if missing:
        raise BenchError(f"{dataset.name}: {len(missing)} of {len(table)} listed images are "
                         f"missing under {root}, first {missing[0]}")
    failures = [reason for image in tqdm(table["image"], desc="decoding", unit="img",
                                         disable=None, leave=False)
                if (reason := decode_check(root / image))]
    if failures:
        raise BenchError(f"{len(failures)} image(s) do not decode; first {failures[0]}")
    if dataset.expected_images is not None and len(table) != dataset.expected_images:
        click.echo(f"warning: {len(table)} images listed, the full dataset has "
                   f"{dataset.expected_images}")
    click.echo(f"{dataset.name}: all {len(table)} images present and decodable")


@data.command()
@click.argument("name")
@root_option
@click.option("--allow-missing", is_flag=True,
              help="Keep only the listed images that are present (partial copies).")
@click.option("--official", is_flag=True, help="Use the dataset's official split.")
@click.option("--seeds", default="0-9", show_default=True, help="Split seeds: 0-9 or 0,3,5.")
@click.option("--rounding", type=click.Choice(["round", "floor"]), default="round",
              show_default=True, help="Training groups: round(0.8 N) (HyperIQA/DEIQT) or int().")
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="Share of the training groups held out for model selection (0: none).")
@click.option("--min-val-groups", type=int, default=3, show_default=True,
              help="Hold out at least this many groups for validation (when a fraction is set).")
@click.option("--decode/--no-decode", default=True, show_default=True,
              help="Fully decode every image before writing anything.")
@option_option
@user_errors
def prepare(name: str, root: Path, allow_missing: bool, official: bool, seeds: str,
            rounding: str, val_fraction: float, min_val_groups: int, decode: bool,
            options: tuple[str, ...]) -> None:
    """Write the standard table and the seeded splits of NAME to <root>/bench/."""
    from benchmark.datasets.prepare import PREPARED_DIR
    from benchmark.datasets.prepare import prepare as prepare_dataset
    from benchmark.datasets.splits import SplitProtocol

    dataset = load_dataset(name, options)
    try:
        protocol = SplitProtocol(seeds=parse_seeds(seeds), rounding=rounding,
                                 val_fraction=val_fraction, min_val_groups=min_val_groups,
                                 official=official)
        prepared = prepare_dataset(dataset, root, protocol, allow_missing=allow_missing,
                                   decode=decode)
    except ValueError as error:  # split protocol: bad fraction, too few groups, no official split
        raise BenchError(f"{dataset.name}: {error}") from None
    meta = prepared.meta
    n_splits = 1 if official else len(protocol.seeds)
    click.echo(f"{dataset.name}: {meta['n_images']} images, {prepared.table['group'].nunique()} "
               f"content groups, {n_splits} split(s) written to {root / PREPARED_DIR}")
    if meta["partial"]:
        click.echo(f"warning: partial copy, {meta['n_missing']} of {meta['n_listed']} listed "
                   f"images missing (first {meta['first_missing']})")


@data.command()
@click.argument("name")
@root_option
@json_option
@option_option
@user_errors
def info(name: str, root: Path, as_json: bool, options: tuple[str, ...]) -> None:
    """Counts and score statistics of NAME (the prepared table if present, else the labels)."""
    from benchmark.datasets.prepare import PREPARED_DIR, load_prepared, missing_images, summarize

    dataset = load_dataset(name, options)
    if (root / PREPARED_DIR / "meta.json").is_file():
        prepared = load_prepared(root, dataset.name)
        meta = prepared.meta
        summary = summarize(dataset, prepared.table, meta["n_missing"])
        protocol = meta["protocol"]
        summary.update(prepared=True, n_listed=meta["n_listed"], partial=meta["partial"],
                       first_missing=meta["first_missing"],
                       n_splits=1 if protocol["official"] else len(protocol["seeds"]))
        for key in ("label", "label_file"):
            if key in meta["spec"]:
                summary[key] = meta["spec"][key]
    else:
        table = dataset.parse(root)
        missing = missing_images(table, root)
        summary = summarize(dataset, table, len(missing))
        summary.update(prepared=False, n_listed=int(len(table)), partial=bool(missing),
                       first_missing=missing[0] if missing else None)
        described = dataset.describe()
        summary.update({k: described[k] for k in ("label", "label_file") if k in described})
    summary.update(expected_images=dataset.expected_images,
                   expected_groups=dataset.expected_groups)
    summary = {key: _plain(value) for key, value in summary.items()}
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
        return
    for key, value in summary.items():
        click.echo(f"{key}: {value}")


try:
    from benchmark.cli.data_pyiqa import export_pyiqa, import_pyiqa
except ModuleNotFoundError as error:  # the pyiqa commands live in their own, optional module
    if error.name != "benchmark.cli.data_pyiqa":
        raise
else:
    data.add_command(import_pyiqa)
    data.add_command(export_pyiqa)
