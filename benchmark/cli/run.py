"""``bench models``, ``bench run``, ``bench score``, ``bench profile``, ``bench pretrain``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from benchmark.cli.options import BenchError, json_option, user_errors

__all__ = ["models", "run", "score", "profile", "pretrain", "parse_sets"]


def parse_sets(pairs: tuple[str, ...]) -> dict:
    """``key=value`` pairs; values are YAML scalars/lists (``3``, ``true``, ``[512, 384]``)."""
    import yaml

    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise BenchError(f"--set expects key=value, got {pair!r}")
        try:
            values[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise BenchError(f"--set {key}: cannot parse value {text!r}") from None
    return values


def _parse_pins(pins: tuple[str, ...]) -> dict[str, str]:
    parsed = {}
    for text in pins:
        model, _, prefix = text.partition("=")
        if not model or len(prefix) < 6 or any(c not in "0123456789abcdef" for c in prefix):
            raise BenchError(f"--prerequisite {text!r}: expected MODEL=HASH with at least 6 hex "
                             f"digits of the run's config hash (its folder's suffix)")
        parsed[model] = prefix
    return parsed


@click.command()
@click.option("--recipe", "recipe_of", default=None, metavar="MODEL",
              help="Print MODEL's paper recipe: training settings, stages, per-dataset changes.")
@click.option("--dataset", default=None,
              help="With --recipe: the recipe as a run on this dataset resolves it.")
@user_errors
def models(recipe_of: str | None, dataset: str | None) -> None:
    """List the registered models, or print one model's training recipe."""
    from benchmark.models import get_model_class, list_models

    if recipe_of is None:
        if dataset is not None:
            raise BenchError("--dataset needs --recipe MODEL")
        for name in list_models():
            cls = get_model_class(name)
            click.echo(f"{name:10s} {cls.training_kind:8s} {cls.paper}")
        return
    from dataclasses import fields

    from benchmark.model_config import ModelConfig, config_to_dict
    from benchmark.recipe import recipe_lines
    from benchmark.runner import dataset_recipe, resolve_config

    cls = get_model_class(recipe_of)
    if dataset is None:
        config = cls.resolve_config({})
        per_dataset = dict(cls.Config.dataset_overrides)
    else:
        config = resolve_config(cls.name, dataset)[1]
        per_dataset = {dataset: dataset_recipe(cls, dataset)} if dataset_recipe(cls, dataset) else {}
    values = config_to_dict(config)
    settings = {f.name: values[f.name] for f in fields(ModelConfig) if f.name in values}
    for line in recipe_lines(cls.name, settings, cls.recipe(config), per_dataset):
        click.echo(line)


run_options = [
    click.option("--model", required=True, help="Registered model name (bench models)."),
    click.option("--dataset", required=True, help="Registered dataset name (bench data list)."),
    click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Prepared dataset folder [default: data/<dataset>]."),
    click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                 help="Override a model config key (repeatable)."),
    click.option("--results", type=click.Path(file_okay=False, path_type=Path),
                 default=Path("results"), show_default=True),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto."),
    click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto",
                 show_default=True),
    click.option("--workers", type=int, default=None,
                 help="Loader workers [default: half the cores, at most 8; none up to 4 cores]."),
    click.option("--data-on-device", type=click.Choice(["auto", "on", "off"]), default="auto",
                 show_default=True,
                 help="Keep the decoded training images on the device and crop there (auto: "
                      "on CUDA when they fit in 40% of its free memory; off: the CPU loader)."),
    click.option("--threads", type=int, default=0, show_default=True,
                 help="CPU threads (0: torch's default, one per core); recorded in the run."),
    click.option("--cache", type=click.Choice(["memory", "disk"]), default="memory",
                 show_default=True, help="Decoded-image cache."),
    click.option("--compile", "use_compile", is_flag=True,
                 help="torch.compile the model's training objective (hashed)."),
    click.option("--protocol", type=click.Choice(["honest", "paper"]), default="honest",
                 show_default=True,
                 help="honest: train on the train part, report the validation-selected epoch; "
                      "paper: train on train + val (80 %) and report the original's test-set "
                      "epoch rule, as published (hashed)."),
    click.option("--quiet", is_flag=True, help="No progress bars."),
]


def _apply(options):
    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function
    return decorate


def make_run_config(*, seed: int = 0, device: str = "auto", amp: str = "auto",
                    workers: int | None = None, data_on_device: str = "auto", threads: int = 0,
                    cache: str = "memory", use_compile: bool = False, protocol: str = "honest",
                    quiet: bool = False, max_steps: int = 0):
    from benchmark.batches import default_workers
    from benchmark.engine import RunConfig

    return RunConfig(seed=seed, device=device, amp=amp,
                     workers=default_workers() if workers is None else workers,
                     data_on_device=data_on_device, threads=threads, cache=cache,
                     compile=use_compile, protocol=protocol, progress=not quiet,
                     max_steps_per_epoch=max_steps)


@click.command()
@_apply(run_options)
@click.option("--split", type=int, required=True, help="Split index (0..9 by default).")
@click.option("--force", is_flag=True, help="Rerun even if a record with this config exists.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--prerequisite", "pins", multiple=True, metavar="MODEL=HASH",
              help="Use the MODEL run (e.g. QFM-IQM's deiqt teacher) whose config hash starts "
                   "with HASH, not the newest one (repeatable).")
@user_errors
def run(model, dataset, root, sets, results, seed, device, amp, workers, data_on_device,
        threads, cache, use_compile, protocol, quiet, split, force, resume, pins) -> None:
    """Train and evaluate one (model, dataset, split) and write its run record."""
    from benchmark.runner import run_one

    run_config = make_run_config(seed=seed, device=device, amp=amp, workers=workers,
                                 data_on_device=data_on_device, threads=threads, cache=cache,
                                 use_compile=use_compile, protocol=protocol, quiet=quiet)
    record = run_one(model, dataset, split, root or Path("data") / dataset,
                     parse_sets(sets), run_config, results, force=force, resume=resume,
                     pins=_parse_pins(pins))
    # the paper protocol reports the original's test-set rule; it has no validation part
    shown = ("test_oracle",) if protocol == "paper" else tuple(record["metrics"])
    for rule in shown:
        chosen, test = record["metrics"][rule], record["metrics"][rule]["test"]
        click.echo(f"{rule:12s} epoch {chosen['epoch']:3d}  test SRCC {test['srcc']:.4f}  "
                   f"PLCC {test['plcc']:.4f}")


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--checkpoint", required=True,
              help="A run directory, its checkpoint.pt / best_val.pt, or a pyiqa checkpoint "
                   "as pyiqa:MODEL:FILE.")
@click.option("--rule", type=click.Choice(["val", "last"]), default=None,
              help="Which epoch of a run directory: val, the validation-selected one the record "
                   "reports [default], or last.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Config value of a pyiqa checkpoint's model (repeatable).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the scores to FILE.csv (image,score) or FILE.json.")
@json_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def score(images, checkpoint, rule, sets, device, out, as_json, quiet) -> None:
    """Score image files and folders (recursive) with a trained model, on the scale of its
    training labels (e.g. MOS), with the run's own evaluation crops.

    stdout is one ``path<TAB>score`` line per image (or one JSON object with --json); the
    model, epoch, rule and scale go to stderr. Files that do not decode are reported one line
    each on stderr and the rest are scored; the exit code is then 1.

    \b
    Examples:
      bench score photos/ --checkpoint results/runs/probe/demo/split0-<hash>
      bench score a.jpg b.png --checkpoint run_dir --out scores.csv
      bench score photos/ --checkpoint pyiqa:dbcnn:DBCNN_KonIQ.pth
    """
    from benchmark.metric import collect_images, load_metric

    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise BenchError(f"--out {out}: the file must end in .csv or .json")
    metric = load_metric(checkpoint, device=device, rule=rule,
                         overrides=parse_sets(sets))
    paths, missing = collect_images(list(images))
    scored = metric.score_files(paths, progress=not quiet)
    failed = missing + scored.failed
    if len(failed) == 1 and not scored.paths:  # nothing to score: one line, as any bad input
        raise BenchError(failed[0][1])
    click.echo(metric.origin(), err=True)
    click.echo(f"scale: {metric.scale.describe()}", err=True)
    for _, reason in failed:
        click.echo(reason, err=True)
    if out is not None:
        _write_scores(out, metric, scored, failed)
    if as_json:
        click.echo(json.dumps(_scores_payload(metric, scored, failed)))
    else:
        for path, value in zip(scored.paths, scored.scores):
            click.echo(f"{path}\t{value:.6f}")
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(paths) + len(missing)} input(s) "
                                   "could not be scored (listed above)")


def _scores_payload(metric, scored, failed) -> dict:
    scale = metric.scale
    return {"metric": metric.name, "model": metric.trained.model.name,
            "rule": metric.trained.rule, "epoch": metric.trained.epoch,
            "checkpoint": str(metric.trained.path),
            "scale": {"score_type": scale.score_type, "higher_is_better": scale.higher_is_better,
                      "score_range": list(scale.score_range) if scale.score_range else None},
            "scores": [{"image": str(p), "score": float(v)}
                       for p, v in zip(scored.paths, scored.scores)],
            "failed": [{"image": str(p), "error": reason} for p, reason in failed]}


def _write_scores(out: Path, metric, scored, failed) -> None:
    import csv
    import io

    from benchmark.files import atomic_write_text

    if out.suffix.lower() == ".json":
        atomic_write_text(out, json.dumps(_scores_payload(metric, scored, failed), indent=1) + "\n")
        return
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", "score"])
    writer.writerows((str(p), repr(float(v))) for p, v in zip(scored.paths, scored.scores))
    atomic_write_text(out, text.getvalue())


@click.command()
@click.option("--model", required=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE")
@click.option("--recipe", "dataset", default="profile", show_default=True, metavar="DATASET",
              help="Use this dataset's recipe for the model (demo: the CPU-sized one).")
@click.option("--device", default="auto", show_default=True)
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto")
@click.option("--batch-size", type=int, default=None, help="Override the model's batch size.")
@click.option("--steps", type=click.IntRange(1), default=20, show_default=True,
              help="Timed training steps, for the step and for the loop each.")
@click.option("--image-size", default="512x384", show_default=True, metavar="WxH",
              help="Size of the synthetic decoded images the crops are cut from.")
@click.option("--workers", type=int, default=None,
              help="Loader workers [default: half the cores, at most 8; none up to 4 cores].")
@click.option("--data-on-device", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True,
              help="Keep the decoded training images on the device and crop there (auto: "
                   "on CUDA when they fit in 40% of its free memory; off: the CPU loader).")
@click.option("--compile", "use_compile", is_flag=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the figures to this JSON file.")
@user_errors
def profile(model, sets, dataset, device, amp, batch_size, steps, image_size, workers,
            data_on_device, use_compile, json_out) -> None:
    """Images/s of the training step alone and of the engine's loop (their ratio: the engine
    efficiency), of evaluation and of the loader; peak memory; MFU on a GPU."""
    from benchmark.files import atomic_write_json
    from benchmark.batches import default_workers
    from benchmark.profiling import profile_model

    try:
        width, height = (int(v) for v in image_size.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{image_size!r} is not WxH", param_hint="--image-size") from None
    overrides = parse_sets(sets)
    if batch_size:
        overrides["batch_size"] = batch_size
    workers = default_workers() if workers is None else workers
    report = profile_model(model, overrides, device, amp, steps, workers, use_compile,
                           dataset, (height, width), data_on_device=data_on_device)
    for key, value in report.items():
        click.echo(f"{key:28s} {value}")
    if json_out:
        atomic_write_json(json_out, report)


@click.command()
@click.option("--model", required=True, help="Model whose pre-training step to run (dbcnn).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE")
@user_errors
def pretrain(model, out, sets) -> None:
    """Run a model's own pre-training step (DBCNN's SCNN distortion classifier)."""
    from benchmark.models import get_model_class

    cls = get_model_class(model)
    if cls.pretrain is None:
        raise BenchError(f"model {model!r} has no pre-training step")
    facts = cls.pretrain(out, **parse_sets(sets))
    click.echo(f"wrote {out}" + (f"  {facts}" if facts else ""))
