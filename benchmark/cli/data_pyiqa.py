"""``bench data import-pyiqa`` / ``export-pyiqa``: splits to and from pyiqa's files.

The part mapping, the CLIVE row offset and the JSON-only rule are described in
:mod:`benchmark.datasets.pyiqa_interop`, the split columns and dataset classes of the export in
:mod:`benchmark.datasets.pyiqa_export`. Both commands work on a prepared dataset (``bench data
prepare``) and never import torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from benchmark.cli.options import json_option, root_option, user_errors

__all__ = ["import_pyiqa", "export_pyiqa"]

IMPORTED_NAME = "splits_pyiqa.json"


def _prepared(name: str, root: Path):
    from benchmark.datasets.prepare import load_prepared
    from benchmark.registry import dataset_registry

    return load_prepared(root, dataset_registry().canonical(name))


def _report(counts: list[dict[str, int]], notes: list[str], payload: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({**payload, "counts": counts, "notes": notes}, sort_keys=True))
        return
    for number, count in enumerate(counts):
        click.echo(f"split {number}: " + ", ".join(f"{p} {n}" for p, n in count.items()))
    for note in notes:
        click.echo(f"note: {note}")


@click.command("import-pyiqa")
@click.argument("name")
@root_option
@click.option("--meta", "meta_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="pyiqa meta-info CSV (e.g. meta_info_KonIQ10kDataset.csv).")
@click.option("--splits", "split_path", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="pyiqa split file as JSON ({\"1\": {\"train\": [...], \"val\": [...]}}); "
              "pickles are refused, never loaded. Default: the meta CSV's split columns.")
@click.option("--column", "columns", multiple=True,
              help="Split column of the meta CSV to import (repeatable) [default: every column "
              "whose name contains 'split', as pyiqa lists them].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"Split file to write [default: <root>/bench/{IMPORTED_NAME}]. Pass "
              "<root>/bench/splits.json to make `bench run` use it.")
@click.option("--row-offset", type=click.IntRange(min=0), default=None,
              help="Index i means meta row i+OFFSET. Default: 0, or 7 when a CLIVE meta CSV "
              "opens with t1..t7 and the indices cover exactly the rows after them.")
@click.option("--allow-missing", is_flag=True,
              help="Drop split rows whose image is not in the prepared table (partial copies).")
@json_option
@user_errors
def import_pyiqa(name: str, root: Path, meta_path: Path, split_path: Path | None,
                 columns: tuple[str, ...], out: Path | None, row_offset: int | None,
                 allow_missing: bool, as_json: bool) -> None:
    """Turn pyiqa's meta CSV + split file (or the CSV's split columns) into a checksummed
    split file for NAME.

    \b
    Examples:
      bench data import-pyiqa koniq --root data/koniq \\
        --meta meta_info_KonIQ10kDataset.csv --splits koniq10k_official.json
      bench data import-pyiqa livec --root data/livec \\
        --meta meta_info_LIVEChallengeDataset.csv --splits livechallenge_seed123.json
      bench data import-pyiqa tid2013 --root data/tid2013 \\
        --meta pyiqa_files/meta_info_tid2013.csv --column bench_split_00
    """
    from benchmark.datasets.prepare import PREPARED_DIR, adopt_split_file
    from benchmark.datasets.pyiqa_interop import import_splits
    from benchmark.datasets.splits import save_split_file

    prepared = _prepared(name, root)
    result = import_splits(prepared.table, prepared.name, meta_path, split_path,
                           row_offset=row_offset, allow_missing=allow_missing,
                           columns=list(columns))
    target = out or root / PREPARED_DIR / IMPORTED_NAME
    if target.resolve() == prepared.split_path.resolve():  # runs check it against meta.json
        adopt_split_file(prepared, result.split_file)
    else:
        save_split_file(target, result.split_file)
    source = split_path.name if split_path else f"the split columns of {meta_path.name}"
    if not as_json:
        click.echo(f"{prepared.name}: {len(result.counts)} split(s) from {source} "
                   f"written to {target}")
    _report(result.counts, result.notes,
            {"dataset": prepared.name, "out": str(target), "sha256": result.split_file["sha256"]},
            as_json)


@click.command("export-pyiqa")
@click.argument("name")
@root_option
@click.option("--splits", "split_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Our split file [default: <root>/bench/splits.json].")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for meta_info_<name>.csv (and split_<name>.pkl with --pickle).")
@click.option("--parts", type=click.Choice(["auto", "holdout", "same"]), default="auto",
              show_default=True,
              help="holdout: our train+val -> pyiqa train, our test -> pyiqa val (its 10-split "
              "layout); same: parts by name (official splits); auto: same for official splits.")
@click.option("--pickle", "write_pickle", is_flag=True,
              help="Also write the pickle split file pyiqa's split_file option opens (the meta "
              "CSV's split columns need none).")
@json_option
@user_errors
def export_pyiqa(name: str, root: Path, split_path: Path | None, out_dir: Path, parts: str,
                 write_pickle: bool, as_json: bool) -> None:
    """Write NAME's prepared table and splits as a pyiqa meta CSV with split columns.

    \b
    Example:
      bench data export-pyiqa spaq --root data/spaq --out pyiqa_files
    then, in pyiqa: type GeneralNRDataset, dataroot_target data/spaq,
      meta_info_file pyiqa_files/meta_info_spaq.csv, split_index bench_split_00, phase val
    """
    import pickle

    from benchmark.files import atomic_write_bytes, atomic_write_text
    from benchmark.datasets.pyiqa_export import export_splits
    from benchmark.datasets.splits import load_split_file

    prepared = _prepared(name, root)
    split_file = load_split_file(split_path or prepared.split_path)
    result = export_splits(prepared.table, split_file, parts)
    meta_out = out_dir / f"meta_info_{prepared.name}.csv"
    pickle_out = out_dir / f"split_{prepared.name}.pkl"
    atomic_write_text(meta_out, result.meta_csv)
    if write_pickle:  # written for pyiqa to open; this project never loads a pickle
        atomic_write_bytes(pickle_out, pickle.dumps(result.pickle_splits, protocol=4))
    written = [str(meta_out)] + ([str(pickle_out)] if write_pickle else [])
    if not as_json:
        click.echo(f"{prepared.name}: wrote {' and '.join(written)} for pyiqa's "
                   f"{result.pyiqa_class}")
    _report(result.counts, result.notes,
            {"dataset": prepared.name, "meta_csv": str(meta_out), "pyiqa_class": result.pyiqa_class,
             "columns": result.columns, "split_pickle": str(pickle_out) if write_pickle else None},
            as_json)
