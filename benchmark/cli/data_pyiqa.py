"""``bench data import-pyiqa`` / ``export-pyiqa``: splits to and from pyiqa's files.

The part mapping, the CLIVE row offset and the JSON-only rule are described in
:mod:`benchmark.pyiqa_interop`. Both commands work on a prepared dataset (``bench data
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
@click.option("--splits", "split_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="pyiqa split file as JSON ({\"1\": {\"train\": [...], \"val\": [...]}}); "
              "pickles are refused, never loaded.")
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
def import_pyiqa(name: str, root: Path, meta_path: Path, split_path: Path, out: Path | None,
                 row_offset: int | None, allow_missing: bool, as_json: bool) -> None:
    """Turn pyiqa's meta CSV + split file into a checksummed split file for NAME.

    \b
    Examples:
      bench data import-pyiqa koniq --root data/koniq \\
        --meta meta_info_KonIQ10kDataset.csv --splits koniq10k_official.json
      bench data import-pyiqa livec --root data/livec \\
        --meta meta_info_LIVEChallengeDataset.csv --splits livechallenge_seed123.json
    """
    from benchmark.datasets.prepare import PREPARED_DIR, adopt_split_file
    from benchmark.pyiqa_interop import import_splits
    from benchmark.splits import save_split_file

    prepared = _prepared(name, root)
    result = import_splits(prepared.table, prepared.name, meta_path, split_path,
                           row_offset=row_offset, allow_missing=allow_missing)
    target = out or root / PREPARED_DIR / IMPORTED_NAME
    if target.resolve() == prepared.split_path.resolve():  # runs check it against meta.json
        adopt_split_file(prepared, result.split_file)
    else:
        save_split_file(target, result.split_file)
    if not as_json:
        click.echo(f"{prepared.name}: {len(result.counts)} split(s) from {split_path.name} "
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
              help="Folder for meta_info_<name>.csv and split_<name>.json.")
@click.option("--parts", type=click.Choice(["auto", "holdout", "same"]), default="auto",
              show_default=True,
              help="holdout: our train+val -> pyiqa train, our test -> pyiqa val (its 10-split "
              "layout); same: parts by name (official splits); auto: same for official splits.")
@json_option
@user_errors
def export_pyiqa(name: str, root: Path, split_path: Path | None, out_dir: Path, parts: str,
                 as_json: bool) -> None:
    """Write NAME's prepared table and splits as a pyiqa meta CSV and split JSON.

    \b
    Example:
      bench data export-pyiqa spaq --root data/spaq --out pyiqa_files
    """
    from benchmark.io import atomic_write_text
    from benchmark.pyiqa_interop import export_splits
    from benchmark.splits import load_split_file

    prepared = _prepared(name, root)
    split_file = load_split_file(split_path or prepared.split_path)
    result = export_splits(prepared.table, split_file, parts)
    meta_out = out_dir / f"meta_info_{prepared.name}.csv"
    split_out = out_dir / f"split_{prepared.name}.json"
    split_text = json.dumps(result.splits) + "\n"
    atomic_write_text(meta_out, result.meta_csv)
    atomic_write_text(split_out, split_text)
    if not as_json:
        click.echo(f"{prepared.name}: wrote {meta_out} and {split_out}")
    counts = [{part: len(v) for part, v in split.items()} for split in result.splits.values()]
    _report(counts, result.notes,
            {"dataset": prepared.name, "meta_csv": str(meta_out), "split_json": str(split_out)},
            as_json)
