"""``bench data`` end to end with CliRunner: list, verify, prepare, info, download, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from benchmark.cli import main
from benchmark.datasets.base import Source
from benchmark.datasets.kadid import Kadid
from test_datasets_synthetic import make_csiq, make_kadid, make_live, shared_tid2013

SUMMARY_KEYS = {"name", "n_images", "n_content", "score_min", "score_max", "higher_is_better",
                "n_missing"}


def bench(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_user_error(result, *fragments: str) -> str:
    """Non-zero exit, one 'Error:' line naming the culprit, no traceback."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_list_shows_declarations():
    result = bench("data", "list")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}
    assert rows["live"][:6] == ["live", "synthetic", "779", "29", "DMOS", "lower"]
    assert rows["csiq"][:6] == ["csiq", "synthetic", "866", "30", "DMOS", "lower"]
    assert rows["tid2013"][:6] == ["tid2013", "synthetic", "3000", "25", "MOS", "higher"]
    assert rows["kadid"][:6] == ["kadid", "synthetic", "10125", "81", "MOS", "higher"]


@pytest.mark.parametrize("command", ["list", "download", "verify", "prepare", "info"])
def test_subcommand_help(command):
    result = bench("data", command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output


def test_kadid_verify_prepare_info(tmp_path):
    make_kadid(tmp_path)
    result = bench("data", "verify", "kadid", "--root", tmp_path)
    assert result.exit_code == 0, result.output
    assert "12 images listed (expected 10125), 3 content groups (expected 81)" in result.output
    assert "all 12 images present and decodable" in result.output

    before = json.loads(bench("data", "info", "kadid10k", "--root", tmp_path, "--json").output)
    assert SUMMARY_KEYS <= set(before)
    assert (before["name"], before["n_images"], before["n_content"], before["n_missing"],
            before["prepared"], before["higher_is_better"]) == ("kadid", 12, 3, 0, False, True)
    assert (before["score_min"], before["score_max"]) == (1.37, 2.65)

    result = bench("data", "prepare", "kadid", "--root", tmp_path, "--seeds", "0-2,7")
    assert result.exit_code == 0, result.output
    splits = json.loads((tmp_path / "bench" / "splits.json").read_text())
    assert [s["seed"] for s in splits["splits"]] == [0, 1, 2, 7]
    for split in splits["splits"]:  # 3 groups: round(2.4)=2 train+val (1 train, 1 val), 1 test
        assert (len(split["train"]), len(split["val"]), len(split["test"])) == (4, 4, 4)
    after = json.loads(bench("data", "info", "kadid", "--root", tmp_path, "--json").output)
    assert after["prepared"] is True and after["n_splits"] == 4
    assert {k: after[k] for k in SUMMARY_KEYS} == {k: before[k] for k in SUMMARY_KEYS}


def test_live_labels_option_recorded(tmp_path):
    make_live(tmp_path, images=True)
    result = bench("data", "prepare", "live", "--root", tmp_path, "--no-decode")
    assert result.exit_code == 0, result.output
    assert "779 images, 29 content groups, 10 split(s)" in result.output
    info = json.loads(bench("data", "info", "live", "--root", tmp_path, "--json").output)
    assert (info["n_images"], info["label"], info["higher_is_better"]) == (779, "realigned", False)

    result = bench("data", "prepare", "live", "--root", tmp_path, "-O", "label=original",
                   "--no-decode")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "bench" / "meta.json").read_text())
    assert meta["spec"]["label"] == "original" and meta["spec"]["label_file"] == "dmos.mat:dmos"

    assert_user_error(bench("data", "info", "live", "--root", tmp_path, "-O", "labels=x"),
                      "no option 'labels'", "label")


def test_csiq_verify(tmp_path):
    make_csiq(tmp_path, labels="xlsx", layout="nested")
    result = bench("data", "verify", "csiq", "--root", tmp_path)
    assert result.exit_code == 0, result.output
    assert "all 36 images present and decodable" in result.output


@pytest.mark.realdata
def test_tid2013_partial_copy(tmp_path):
    shared = shared_tid2013()
    for name in ("mos_with_names.txt", "distorted_images"):  # links: the shared copy is read-only
        (tmp_path / name).symlink_to(shared / name)
    assert_user_error(bench("data", "prepare", "tid2013", "--root", tmp_path),
                      "2997 of 3000", "distorted_images/I01_01_1.bmp", "--allow-missing")
    assert not (tmp_path / "bench").exists()
    assert_user_error(bench("data", "verify", "tid2013", "--root", tmp_path), "2997 of 3000")

    # 2 references present: train/test splits need val_fraction 0
    result = bench("data", "prepare", "tid2013", "--root", tmp_path, "--allow-missing",
                   "--val-fraction", "0")
    assert result.exit_code == 0, result.output
    assert "partial copy, 2997 of 3000" in result.output
    info = json.loads(bench("data", "info", "tid2013", "--root", tmp_path, "--json").output)
    assert (info["n_images"], info["n_listed"], info["n_missing"], info["n_content"]) == (
        3, 3000, 2997, 2)
    assert info["partial"] is True and info["first_missing"] == "distorted_images/I01_01_1.bmp"
    table = (tmp_path / "bench" / "table.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in table[1:]] == [
        "distorted_images/i01_01_5.bmp", "distorted_images/i07_08_4.bmp",
        "distorted_images/i07_08_5.bmp"]


# -------------------------------------------------------------------------------- bad input


def _jpeg_bytes() -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("damage, culprit", [
    (lambda path: path.write_bytes(b"\x89PNG\r\n\x1a\n not really"), "I02_25_01.png"),
    (lambda path: path.write_bytes(_jpeg_bytes()[:300]), "I02_25_01.png"),  # truncated JPEG
])
@pytest.mark.parametrize("command", ["verify", "prepare"])
def test_undecodable_image(tmp_path, damage, culprit, command):
    make_kadid(tmp_path)
    damage(tmp_path / "kadid10k" / "images" / "I02_25_01.png")
    assert_user_error(bench("data", command, "kadid", "--root", tmp_path), culprit,
                      "cannot decode")
    assert not (tmp_path / "bench").exists()


def test_missing_and_malformed_label_files(tmp_path):
    assert_user_error(bench("data", "prepare", "kadid", "--root", tmp_path),
                      "label file dmos.csv not found")
    make_kadid(tmp_path)
    (tmp_path / "kadid10k" / "dmos.csv").write_text("image;score\nI01_01_01.png;4.2\n")
    assert_user_error(bench("data", "prepare", "kadid", "--root", tmp_path), "dmos.csv",
                      "no column dist_img")
    live = tmp_path / "live"
    make_live(live)
    (live / "databaserelease2" / "dmos.mat").write_text("not a mat file")
    assert_user_error(bench("data", "prepare", "live", "--root", live), "dmos.mat",
                      "not a readable MATLAB file")
    assert not (tmp_path / "bench").exists() and not (live / "bench").exists()


def test_unknown_dataset_name(tmp_path):
    assert_user_error(bench("data", "info", "kadd", "--root", tmp_path), "unknown dataset 'kadd'",
                      "did you mean", "kadid")


def test_bad_seeds(tmp_path):
    make_kadid(tmp_path)
    assert_user_error(bench("data", "prepare", "kadid", "--root", tmp_path, "--seeds", "a-b"),
                      "--seeds")
    assert not (tmp_path / "bench").exists()


def test_download_manual_prints_steps(tmp_path):
    result = bench("data", "download", "live", "--root", tmp_path)
    assert_user_error(result, "placed by hand", "databaserelease2.zip")
    assert "https://live.ece.utexas.edu/research/quality/subjective.htm" in result.output
    assert f"put it at {tmp_path / 'dmos_realigned.mat'}" in result.output


def test_download_refuses_archive_member_climbing_out(tmp_path):
    with zipfile.ZipFile(tmp_path / "databaserelease2.zip", "w") as handle:
        handle.writestr("databaserelease2/dmos.mat", b"x")
        handle.writestr("../evil.txt", b"evil")
    assert_user_error(bench("data", "download", "live", "--root", tmp_path),
                      "databaserelease2.zip", "'../evil.txt'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["databaserelease2.zip"]
    assert not (tmp_path.parent / "evil.txt").exists()


def test_download_checksum_mismatch(tmp_path, monkeypatch):
    served = tmp_path / "served" / "kadid10k.zip"
    served.parent.mkdir()
    served.write_bytes(b"not the archive you are looking for")
    wrong = hashlib.sha256(b"the real archive").hexdigest()
    monkeypatch.setattr(Kadid, "sources", (Source("archive", served.as_uri(), "direct",
                                                  "kadid10k.zip", wrong),))
    root = tmp_path / "root"
    actual = hashlib.sha256(served.read_bytes()).hexdigest()
    assert_user_error(bench("data", "download", "kadid", "--root", root, "--no-progress"),
                      "kadid10k.zip", wrong, actual)
    # the bad file is kept aside (a rerun fetches afresh), nothing unpacked
    assert [p.name for p in root.iterdir()] == ["kadid10k.zip.sha256-mismatch"]


# ---------------------------------------------------------------------------- light imports


@pytest.mark.parametrize("invocations", [
    [["--help"]],  # formats every lazy command's help: each command module must stay light
    [["data", "--help"], ["data", "list"]],
])
def test_cli_does_not_import_torch(invocations):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from benchmark.cli import main\n"
        f"for args in {invocations!r}:\n"
        "    result = CliRunner().invoke(main, args)\n"
        "    assert result.exit_code == 0, (args, result.output, repr(result.exception))\n"
        "print('torch' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_download_generates_generated_datasets(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(Kadid, "generated", True)
    monkeypatch.setattr(Kadid, "generate", lambda self, root: made.append(root))
    result = bench("data", "download", "kadid", "--root", tmp_path)
    assert result.exit_code == 0, result.output
    assert made == [tmp_path] and list(tmp_path.iterdir()) == []  # nothing fetched
