"""Bad input through the CLI: every case exits 1 with one line on stderr naming the culprit
(file, key or value), no traceback, and leaves every file as it was.

Each case sets up a workspace (a copy of the prepared tiny set, a results folder, whatever
broken file it needs), snapshots it, runs one ``bench`` command in-process and compares.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from benchmark.checkpoints import save_checkpoint
from benchmark.cli import main
from benchmark.datasets.base import Source
from benchmark.datasets.kadid import Kadid
from benchmark.engine import RunConfig
from benchmark.files import canonical_json, exclusive_lock, sha256_bytes
from benchmark.models import config_to_dict, create_backbone, get_model_class
from benchmark.runner import plan_run
from benchmark.grid.suite import load_params
from benchmark.grid.sweep import plan_sweep, sweep_id
from conftest import TINY_PROBE, bomb_png, write_tiny_params, write_tiny_set
from synthetic_runs import write_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IMAGE = "images/g00_0.png"  # an image of the tiny set (every part is decoded before a run)


def run_args(root: Path, results: Path, *extra: str) -> list[str]:
    """``bench run`` of the tiny probe; ``extra`` options come last, so they win."""
    sets = [f"--set={k}={json.dumps(v)}" for k, v in TINY_PROBE.items()]
    return ["run", "--model", "probe", "--dataset", "generic", "--split", "0", "--root",
            str(root), "--results", str(results), "--device", "cpu", "--quiet", *sets, *extra]


class Space:
    """One case's workspace under ``tmp``: ``data`` (the prepared tiny set), ``raw`` (the
    same set unprepared), ``results``; helpers spell the commands and break files."""

    def __init__(self, tmp: Path, tiny_root: Path, monkeypatch, held: ExitStack):
        self.tmp, self.mp, self.held = tmp, monkeypatch, held
        self.data = Path(shutil.copytree(tiny_root, tmp / "data"))
        self.raw = write_tiny_set(tmp / "raw")
        self.results = tmp / "results"

    def run(self, *extra: str, root: Path | None = None) -> list[str]:
        return run_args(root or self.data, self.results, *extra)

    def prepare(self, *extra: str) -> list[str]:
        return ["data", "prepare", "generic", "--root", str(self.raw), "--seeds", "0", *extra]

    def verify(self) -> list[str]:
        return ["data", "verify", "generic", "--root", str(self.raw)]

    def file(self, name: str, content: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def meta(self, change) -> None:
        path = self.data / "bench" / "meta.json"
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))

    def splits(self, change, update_meta: bool = True) -> None:
        """Edit the split file and re-hash it, as a careful tamperer would."""
        path = self.data / "bench" / "splits.json"
        body = {k: v for k, v in json.loads(path.read_text()).items() if k != "sha256"}
        change(body)
        digest = sha256_bytes(canonical_json(body).encode())
        path.write_text(canonical_json({**body, "sha256": digest}) + "\n")
        if update_meta:
            self.meta(lambda meta: meta.update(splits_sha256=digest))

    def run_dir(self) -> Path:
        return plan_run("probe", "generic", 0, self.data, dict(TINY_PROBE), RunConfig(),
                        self.results).directory

    def checkpoint(self, **changes) -> Path:
        """A bench checkpoint of the tiny probe (untrained), with ``changes`` applied."""
        cls = get_model_class("probe")
        model = cls(cls.Config(**TINY_PROBE))
        payload = {"model": "probe", "config": config_to_dict(model.config), "epoch": 0,
                   "state_dict": model.state_dict(), **changes}
        save_checkpoint(self.tmp / "model.pt", payload)
        return self.tmp / "model.pt"

    def score(self, checkpoint: Path, image: Path | None = None, *extra: str) -> list[str]:
        return ["score", str(image or self.data / IMAGE), "--checkpoint", str(checkpoint), *extra]

    def backbone(self) -> dict:
        return create_backbone("test_resnet", "false", num_classes=0).state_dict()

    def zip_over(self, members: dict[str, bytes]) -> list[str]:
        """KADID's archive placed by hand (no sha256 to check), holding ``members``, over a
        root that already holds kadid10k/images/I01_01_01.png."""
        root = self.tmp / "kadid"
        (root / "kadid10k" / "images").mkdir(parents=True)
        (root / "kadid10k" / "images" / "I01_01_01.png").write_bytes(b"a user's image")
        with zipfile.ZipFile(root / "kadid10k.zip", "w") as handle:
            for name, body in members.items():
                handle.writestr(name, body)
        self.mp.setattr(Kadid, "sources", (Source("archive", "https://example.org", "manual",
                                                  "kadid10k.zip"),))
        return ["data", "download", "kadid", "--root", str(root), "--no-progress"]

    def records(self, bad: str | None) -> list[str]:
        for split in range(3):
            write_run(self.results, "probe", "generic", split, 0.8, seed=split)
        if bad is not None:
            self.file("results/runs/probe/generic/split7-0123456789/record.json", bad)
        return ["aggregate", "--results", str(self.results)]

    def params(self, **suite) -> Path:
        (self.tmp / "sweep").mkdir(exist_ok=True)
        return write_tiny_params(self.tmp / "sweep", self.data, self.results, **suite)


def _pickle(s: Space) -> Path:
    return s.file("model.pt", pickle.dumps({"weights": {1, 2}}))


def _hold_run_lock(s: Space) -> list[str]:
    folder = s.run_dir()
    s.held.enter_context(exclusive_lock(folder.with_name(f".{folder.name}.lock"), "test"))
    return s.run()


def _hold_sweep_lock(s: Space) -> list[str]:
    params = load_params(s.params())
    suite = params.suite()
    ident = sweep_id(suite, plan_sweep(params, suite))
    s.held.enter_context(exclusive_lock(s.results / "sweeps" / ident / "lock", "test"))
    return ["sweep", "--params", str(params.path)]


def _resumable(s: Space) -> list[str]:
    folder = s.run_dir()
    s.file(str((folder.with_name(folder.name + ".partial") / "checkpoint.pt")
               .relative_to(s.tmp)), b"a checkpoint")
    return s.run()


def _mix_parts(body: dict) -> None:
    body["splits"][0]["test"] += body["splits"][0]["train"][:4]


def _move_one_of_a_group(body: dict) -> None:
    entry = body["splits"][0]
    entry["test"].append(entry["train"].pop(0))  # its twin stays in train


def _partial_state(s: Space) -> dict:
    own = s.backbone()
    first = next(iter(own))
    return {first: own[first]}


def _wrong_shape(s: Space) -> dict:
    state = s.backbone()
    key = next(k for k, v in state.items() if v.ndim == 4)
    return {**state, key: torch.zeros(1, 1, 1, 1)}


def _vit_other_size(s: Space) -> list[str]:
    import timm

    state = timm.create_model("test_vit", img_size=64, num_classes=0).state_dict()
    path = s.tmp / "vit.pt"
    torch.save(state, path)
    return s.run("--set", "backbone=test_vit", "--set", f"pretrained={path}")


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")


def weights(make, *needles: str):
    """A case running with pretrained= a file holding ``make(space)``."""
    def setup(s: Space):
        path = s.tmp / "weights.pt"
        torch.save(make(s), path)
        return s.run("--set", f"pretrained={path}"), ["weights.pt", *needles]
    return setup


CASES = [
    # config values: refused when the config is built, before any image is read
    ("lr-negative", lambda s: (s.run("--set", "lr=-1"), ["'lr'", "-1"])),
    ("lr-zero", lambda s: (s.run("--set", "lr=0"), ["'lr'", "positive"])),
    ("lr-nan", lambda s: (s.run("--set", "lr=.nan"), ["'lr'"])),
    ("lr-text", lambda s: (s.run("--set", "lr=fast"), ["'lr'", "fast"])),
    ("batch-size-zero", lambda s: (s.run("--set", "batch_size=0"), ["'batch_size'"])),
    ("batch-size-over-training-set", lambda s: (s.run("--set", "batch_size=15"),
                                                ["batch_size 15", "14 training crops"])),
    ("epochs-zero", lambda s: (s.run("--set", "epochs=0"), ["'epochs'", "at least 1"])),
    ("epochs-negative", lambda s: (s.run("--set", "epochs=-2"), ["'epochs'"])),
    ("train-crops-zero", lambda s: (s.run("--set", "train_crops=0"), ["'train_crops'"])),
    ("test-crops-zero", lambda s: (s.run("--set", "test_crops=0"), ["'test_crops'"])),
    ("img-size-negative", lambda s: (s.run("--set", "img_size=-16"), ["'img_size'"])),
    ("weight-decay-negative", lambda s: (s.run("--set", "weight_decay=-0.1"),
                                         ["'weight_decay'"])),
    ("momentum-over-one", lambda s: (s.run("--set", "momentum=1.5"), ["'momentum'"])),
    ("resize-zero", lambda s: (s.run("--set", "resize_hw=[0, 16]"), ["'resize_hw'"])),
    ("optimizer-unknown", lambda s: (s.run("--set", "optimizer=adamx"), ["'optimizer'",
                                                                        "adamx"])),
    ("config-key-unknown", lambda s: (s.run("--set", "learning_rate=1"), ["'learning_rate'"])),
    ("set-without-value", lambda s: (s.run("--set", "lr"), ["--set", "'lr'"])),
    pytest.param("device-cuda-absent", lambda s: (s.run("--device", "cuda"),
                                                  ["'cuda'", "CUDA is not available"]),
                 marks=NO_CUDA, id="device-cuda-absent"),
    ("device-unknown", lambda s: (s.run("--device", "tpu"), ["'tpu'"])),
    ("workers-negative", lambda s: (s.run("--workers", "-1"), ["workers", "-1"])),
    ("config-before-data", lambda s: (s.file(f"data/{IMAGE}", "garbage") and
                                      s.run("--set", "lr=-1"), ["'lr'"])),
    ("split-out-of-range", lambda s: (s.run("--split", "7"), ["split 7", "0..1"])),
    ("model-unknown", lambda s: (s.run("--model", "prob"), ["'prob'"])),
    ("prerequisite-malformed", lambda s: (s.run("--prerequisite", "deiqt"), ["'deiqt'"])),
    # pretrained files
    ("pretrained-missing", lambda s: (s.run("--set", f"pretrained={s.tmp}/none.pt"),
                                      ["none.pt", "does not exist"])),
    ("pretrained-text", lambda s: (s.run("--set", f"pretrained={s.file('w.pt', 'text')}"),
                                   ["w.pt", "not a state dict"])),
    ("pretrained-pickle", lambda s: (s.run("--set", f"pretrained={_pickle(s)}"),
                                     ["model.pt", "not a state dict"])),
    ("pretrained-one-tensor", weights(_partial_state, "fills 1 of", "missing", "partial:")),
    ("pretrained-shape", weights(_wrong_shape, "shape-mismatched 1 (")),
    ("pretrained-vit-resolution", lambda s: (_vit_other_size(s), ["vit.pt", "pos_embed",
                                                                  "partial:"])),
    # prepared files
    ("root-unprepared", lambda s: (s.run(root=s.raw), ["no prepared data", str(s.raw)])),
    ("meta-corrupt", lambda s: (s.file("data/bench/meta.json", "{not json") and s.run(),
                                ["meta.json", "unreadable"])),
    ("meta-missing-key", lambda s: (s.meta(lambda m: m.pop("table_sha256")) or s.run(),
                                    ["meta.json", "'table_sha256'"])),
    ("meta-other-dataset", lambda s: (s.meta(lambda m: m.update(dataset="kadid")) or s.run(),
                                      ["'kadid'", "not 'generic'"])),
    ("table-edited", lambda s: (s.file("data/bench/table.csv", "image,score\n") and s.run(),
                                ["table.csv", "checksum"])),
    ("splits-truncated", lambda s: (s.file("data/bench/splits.json", '{"format": "bench') and
                                    s.run(), ["splits.json", "not valid JSON"])),
    ("splits-rehashed", lambda s: (s.splits(_mix_parts, update_meta=False) or s.run(),
                                   ["splits.json", "meta.json"])),
    ("splits-overlap", lambda s: (s.splits(_mix_parts) or s.run(),
                                  ["splits.json", "in both train and test"])),
    ("splits-group-spans-parts", lambda s: (s.splits(_move_one_of_a_group) or s.run(),
                                            ["splits.json", "content group g", "spans"])),
    ("splits-other-dataset", lambda s: (s.splits(lambda b: b.update(dataset="kadid")) or
                                        s.run(), ["splits.json", "'kadid'"])),
    ("splits-unknown-image", lambda s: (s.splits(lambda b: b["splits"][0]["test"].append(
        "images/nope.png")) or s.run(), ["splits.json", "images/nope.png"])),
    # images that only a run decodes (prepare --no-decode)
    ("image-corrupt-at-run", lambda s: (s.file(f"data/{IMAGE}", "garbage") and s.run(),
                                        [IMAGE, "cannot decode"])),
    ("image-bomb-at-run", lambda s: (bomb_png(s.data / IMAGE) or s.run(),
                                     [IMAGE, "40,000,000,000 pixels", "--max-pixels"])),
    # a run folder in use or holding unfinished work
    ("run-locked", lambda s: (_hold_run_lock(s), [f"process {os.getpid()}", ".lock"])),
    ("run-resumable", lambda s: (_resumable(s), [".partial", "--resume", "--force"])),
    # bench score: checkpoints and images
    ("score-pickle", lambda s: (s.score(_pickle(s)), ["model.pt is not a bench checkpoint"])),
    ("score-empty", lambda s: (s.score(s.file("model.pt", b"")),
                               ["model.pt is not a bench checkpoint (empty"])),
    ("score-text", lambda s: (s.score(s.file("model.pt", "weights\n")),
                              ["model.pt is not a bench checkpoint"])),
    ("score-tensor", lambda s: (torch.save(torch.zeros(3), s.tmp / "t.pt") or
                                s.score(s.tmp / "t.pt"), ["t.pt is not a bench checkpoint",
                                                          "Tensor"])),
    ("score-state-dict", lambda s: (torch.save(s.backbone(), s.tmp / "sd.pt") or
                                    s.score(s.tmp / "sd.pt"),
                                    ["sd.pt is not a bench checkpoint", "'model'"])),
    ("score-unknown-model", lambda s: (s.score(s.checkpoint(model="nomodel")),
                                       ["model.pt is not a bench checkpoint", "nomodel"])),
    ("score-other-weights", lambda s: (s.score(s.checkpoint(state_dict=s.backbone())),
                                       ["model.pt is not a bench checkpoint of probe"])),
    ("score-no-file", lambda s: (s.score(s.tmp / "gone.pt"), ["gone.pt"])),
    ("score-image-bomb", lambda s: (bomb_png(s.tmp / "big.png") or
                                    s.score(s.checkpoint(), s.tmp / "big.png"),
                                    ["big.png", "pixels"])),
    ("score-image-corrupt", lambda s: (s.score(s.checkpoint(), s.file("bad.png", "x")),
                                       ["bad.png", "cannot decode"])),
    ("score-image-missing", lambda s: (s.score(s.checkpoint(), s.tmp / "none.png"),
                                       ["none.png"])),
    # bench data: labels, images, options
    ("prepare-bomb", lambda s: (bomb_png(s.raw / IMAGE) or s.prepare(), [IMAGE, "pixels"])),
    ("verify-bomb", lambda s: (bomb_png(s.raw / IMAGE) or s.verify(), [IMAGE, "pixels"])),
    ("verify-limit-lowered", lambda s: (["--max-pixels", "200", *s.verify()],
                                        ["256 pixels", "limit of 200"])),
    ("prepare-corrupt", lambda s: (s.file(f"raw/{IMAGE}", "x") and s.prepare(),
                                   [IMAGE, "cannot decode"])),
    ("verify-corrupt", lambda s: (s.file(f"raw/{IMAGE}", "x") and s.verify(), [IMAGE])),
    ("labels-no-score-column", lambda s: (s.file("raw/labels.csv", "file,ref\na.png,a\n") and
                                          s.prepare(), ["labels.csv", "'mos'"])),
    ("labels-text-score", lambda s: (s.file("raw/labels.csv", f"file,mos,ref\n{IMAGE},good,a\n")
                                     and s.prepare(), ["labels.csv", "'good'"])),
    ("labels-huge-scores", lambda s: (s.file("raw/labels.csv", "file,mos,ref\n"
                                             f"{IMAGE},1e308,a\nimages/g00_1.png,-1e308,a\n"
                                             "images/g01_0.png,0,b\n") and s.prepare(),
                                      ["finite unit score", "1e+308"])),
    ("labels-duplicate-image", lambda s: (s.file("raw/labels.csv", f"file,mos,ref\n{IMAGE},1,a\n"
                                                 f"{IMAGE},2,a\n") and s.prepare(),
                                          [IMAGE, "listed twice"])),
    ("labels-image-outside", lambda s: (s.file("raw/labels.csv", "file,mos,ref\n../x.png,1,a\n")
                                        and s.prepare(), ["labels.csv", "'../x.png'"])),
    ("yaml-unknown-key", lambda s: (s.file("raw/generic.yaml", "scores: mos\n") and
                                    s.prepare(), ["generic.yaml", "'scores'"])),
    ("yaml-broken", lambda s: (s.file("raw/generic.yaml", "image: [file\n") and s.prepare(),
                               ["generic.yaml"])),
    ("yaml-labels-outside-root", lambda s: (s.file("raw/generic.yaml", "labels: ../l.csv\n")
                                            and s.prepare(), ["generic.yaml", "'../l.csv'"])),
    ("yaml-labels-absolute", lambda s: (s.file("raw/generic.yaml", "labels: /etc/hosts\n")
                                        and s.prepare(), ["labels", "'/etc/hosts'"])),
    ("prepare-val-fraction", lambda s: (s.prepare("--val-fraction", "2"), ["val_fraction"])),
    ("prepare-seeds", lambda s: (s.prepare("--seeds", "a-b"), ["--seeds", "'a-b'"])),
    ("dataset-option-unknown", lambda s: (s.prepare("-O", "colour=red"), ["'colour'"])),
    # archives: never replace what is there
    ("zip-file-over-folder", lambda s: (s.zip_over({"kadid10k/images": b"x"}),
                                        ["'kadid10k/images'", "exists as a folder"])),
    ("zip-folder-over-file", lambda s: (s.zip_over({"kadid10k/images/I01_01_01.png/a": b"x"}),
                                        ["I01_01_01.png", "exists as a file"])),
    ("zip-other-content", lambda s: (s.zip_over({"kadid10k/images/I01_01_01.png": b"y"}),
                                     ["I01_01_01.png", "differs from the existing"])),
    ("zip-climbs-out", lambda s: (s.zip_over({"../evil.txt": b"x"}), ["'../evil.txt'"])),
    # run records
    ("record-truncated", lambda s: (s.records('{"schema": "bench-run/1", "mod'),
                                    ["split7-0123456789/record.json", "unreadable"])),
    ("record-empty", lambda s: (s.records(""), ["split7-0123456789/record.json"])),
    ("record-no-metrics", lambda s: (s.records(json.dumps({
        "schema": "bench-run/1", "model": "probe", "dataset": "generic", "split": 7,
        "config": {}, "config_hash": "0" * 64})), ["record.json", "'metrics'"])),
    ("record-a-list", lambda s: (s.records("[]"), ["record.json", "bench-run/2"])),
    # params.yaml and sweeps
    ("params-duplicate-key", lambda s: (s.file("sweep/params.yaml", s.params().read_text().replace(
        "  rounding: round\n", "  rounding: round\n  rounding: floor\n")) and
        ["suite", "check", "--params", str(s.tmp / "sweep/params.yaml")],
        ["params.yaml", "duplicate key 'rounding'"])),
    ("suite-check-lr", lambda s: (["suite", "check", "--params", str(s.params(
        models={"probe": {**TINY_PROBE, "lr": -1}}))], ["suites.tiny", "'lr'"])),
    ("suite-check-workers", lambda s: (["suite", "check", "--params", str(s.params(
        run={"workers": -1}))], ["suites.tiny.run", "workers"])),
    ("suite-check-device", lambda s: (["suite", "check", "--params", str(s.params(
        run={"device": "tpu"}))], ["suites.tiny.run", "'tpu'"])),
    ("sweep-twice", lambda s: (_hold_sweep_lock(s), ["already running",
                                                     f"process {os.getpid()}"])),
    ("sweep-state-corrupt", lambda s: (s.file("results/sweeps/x/state.json", "{") and
                                       ["sweep", "--params", str(s.params()), "--status"],
                                       ["state.json", "unreadable"])),
]


CASES = [case if isinstance(case, type(pytest.param())) else pytest.param(*case, id=case[0])
         for case in CASES]


def snapshot(root: Path) -> dict:
    """Every path with its bytes and mtime (a folder's own mtime moves with a temporary
    file made and removed inside it, which leaves nothing behind)."""
    return {p.relative_to(root).as_posix(): None if p.is_dir() else (p.stat().st_mtime_ns,
                                                                     p.read_bytes())
            for p in sorted(root.rglob("*"))}


@pytest.fixture(autouse=True)
def own_pixel_limit(monkeypatch):
    """`bench --max-pixels` sets Pillow's process-wide limit: restore it after each case."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


def test_there_are_fifty_cases():
    assert len(CASES) >= 50


@pytest.mark.parametrize("name, setup", CASES)
def test_bad_input_is_one_line_naming_the_culprit_and_writes_nothing(name, setup, tiny_root,
                                                                     tmp_path, monkeypatch):
    with ExitStack() as held:
        space = Space(tmp_path, tiny_root, monkeypatch, held)
        argv, needles = setup(space)
        before = snapshot(tmp_path)
        result = CliRunner().invoke(main, [str(a) for a in argv], env={"BENCH_MAX_PIXELS": None})
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit), result.exception  # no traceback
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        for needle in needles:
            assert needle in lines[0]
        assert snapshot(tmp_path) == before


def test_the_pixel_limit_can_be_raised(tiny_root, tmp_path):
    root = shutil.copytree(tiny_root, tmp_path / "data")
    verify = ["data", "verify", "generic", "--root", str(root)]
    assert CliRunner().invoke(main, ["--max-pixels", "200", *verify]).exit_code == 1
    result = CliRunner().invoke(main, verify, env={"BENCH_MAX_PIXELS": "256"})
    assert result.exit_code == 0, result.output


def test_a_partial_pretrained_load_is_an_explicit_choice_the_record_keeps(tiny_root, tmp_path):
    own = create_backbone("test_resnet", "false", num_classes=0).state_dict()
    first = next(iter(own))
    torch.save({first: own[first] + 1}, tmp_path / "w.pt")
    results = tmp_path / "results"
    result = CliRunner().invoke(main, run_args(tiny_root, results, "--set",
                                               f"pretrained=partial:{tmp_path}/w.pt"))
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(p.read_text()) for p in results.rglob("record.json")]
    assert record["config"]["pretrained"] == f"partial:{tmp_path}/w.pt"
