"""The prepared device check parses and, at CPU scale (``--tiny``), prints its one JSON object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"


def test_gpu_check_runs_at_cpu_scale_and_prints_one_json_object(tmp_path):
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    env = {**os.environ, "PYTHON": sys.executable,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(SCRIPT.parent.parent), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(["bash", str(SCRIPT), "--tiny", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert sorted(report["profiles"]) == ["deiqt", "hyperiqa", "maniqa", "qfm"]
    for figures in report["profiles"].values():
        assert figures["batch_size"] == 4 and 0 < figures["engine_efficiency"] < 2
    assert report["run"]["images"] == 40 and report["run"]["train_images_per_s"] > 0
    assert report["run"]["data_path"] == "device"
