"""The training loop's device traffic and ``--compile``: counted, not timed."""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.deiqt import DEIQT
from benchmark import engine
from benchmark.batches import training_batches
from benchmark.loader import ImageArrays, TrainCrops
from benchmark.engine import NonFiniteLossError, RunConfig, train_epoch
from benchmark.models import get_model_class
from benchmark.runner import resolve_config
from benchmark.train_step import Trainer
from qfm.model import QFM
from qfm.teacher import deiqt_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"backbone": "test_resnet", "pretrained": "false", "img_size": 32, "train_crops": 1,
        "batch_size": 2, "epochs": 1, "warmup_epochs": 0.0, "head_init": "random"}
IMAGES = 24  # 12 steps of 2
#: every way a tensor's value reaches the host
READS = ("item", "__float__", "__int__", "__bool__", "tolist")
TORCH_DIR = str(Path(torch.__file__).parent)


def _setup(run: RunConfig, name: str = "probe", values: dict | None = None):
    torch.manual_seed(0)
    cls, config = resolve_config(name, "demo", TINY if values is None else values)
    model = cls(config)
    if name == "qfm":  # its teacher: a random DEIQT of the same tiny recipe
        model.attach_teacher(DEIQT(deiqt_config(config, pretrained="false")))
    rng = np.random.default_rng(0)
    side = 2 * config.img_size
    cache = ImageArrays([rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                         for _ in range(IMAGES)])
    labels = np.linspace(0.0, 1.0, IMAGES)
    train_set = TrainCrops(cache, labels, labels, config.img_size, 1, run.seed)
    trainer = Trainer.build(model, config, run, torch.device("cpu"), IMAGES // 2)
    return trainer, training_batches(train_set, config.batch_size, run, torch.device("cpu")), config


def _count_reads(monkeypatch) -> list[str]:
    """Calls of READS from outside torch: torch's own (the optimiser's step counters, the
    sampler's permutation) read host-resident tensors, which costs no device sync."""
    calls: list[str] = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            if not sys._getframe(1).f_code.co_filename.startswith(TORCH_DIR):
                calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


@pytest.mark.parametrize("sync_every, reads", [(4, 3), (5, 3), (50, 1), (1, 12)])
def test_the_loop_reads_the_device_once_per_sync_every_steps(monkeypatch, sync_every, reads):
    run = RunConfig(progress=False, sync_every=sync_every)
    trainer, train_set, config = _setup(run)
    calls = _count_reads(monkeypatch)
    means = train_epoch(trainer, train_set, 0, IMAGES // 2, config, run, 1.0)
    monkeypatch.undo()
    assert len(calls) == reads == math.ceil(IMAGES // 2 / sync_every)
    assert math.isfinite(means["loss"]) and means["loss"] > 0


@pytest.mark.parametrize("changes", [{}, {"adv_mode": "sam_line", "perturb_target": "cls"},
                                     {"perturb_prob": 0.5}],
                         ids=["matched", "sam_line", "half_perturbed"])
def test_the_qfm_step_reads_nothing_from_the_device(monkeypatch, changes):
    """Its teacher pass, memory, matching and masked adversarial pass stay on the device:
    the loop's one read per sync_every steps is all."""
    tiny = {key: value for key, value in QFM.tiny_config.items() if key != "teacher"}
    values = {**tiny, "batch_size": 2, "epochs": 1, "warmup_epochs": 0.0, **changes}
    run = RunConfig(progress=False, sync_every=50)
    trainer, train_set, config = _setup(run, "qfm", values)
    calls = _count_reads(monkeypatch)
    means = train_epoch(trainer, train_set, 0, IMAGES // 2, config, run, 1.0)
    monkeypatch.undo()
    assert calls == ["tolist"]
    assert means["stat_matched"] == 1.0 and means["adv"] > 0
    assert means["stat_perturbed"] == (1.0 if "perturb_prob" not in changes
                                       else pytest.approx(0.5, abs=0.25))


def test_a_late_check_still_names_the_first_bad_step(monkeypatch):
    probe = get_model_class("probe")
    original_loss, seen = probe.loss, []

    def diverging(self, batch, ctx):
        seen.append(ctx.step)
        terms = original_loss(self, batch, ctx)
        return {**terms, "loss": terms["loss"] * float("nan")} if ctx.step >= 5 else terms

    monkeypatch.setattr(probe, "loss", diverging)
    run = RunConfig(progress=False, sync_every=4)
    trainer, train_set, config = _setup(run)
    with pytest.raises(NonFiniteLossError, match=r"\(nan\) at epoch 1, step 6; kept"):
        train_epoch(trainer, train_set, 0, IMAGES // 2, config, run, 1.0, "kept")
    assert seen == list(range(8))  # found at the read after step 8, not at the epoch's end


def test_compile_compiles_the_objective_the_loop_calls(monkeypatch):
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    plain_run = RunConfig(progress=False)
    trainer, train_set, config = _setup(plain_run)
    plain = train_epoch(trainer, train_set, 0, 3, config, plain_run, 1.0)
    counter = CompileCounter()  # the eager backend, counting what dynamo hands it
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=counter))
    run = RunConfig(progress=False, compile=True)
    trainer, train_set, config = _setup(run)
    compiled = train_epoch(trainer, train_set, 0, 3, config, run, 1.0)
    assert counter.frame_count >= 1 and counter.op_count > 10  # the backbone's ops, not a stub
    assert counter.frame_count <= 2  # no recompilation per step as ctx.step changes
    assert compiled["loss"] == pytest.approx(plain["loss"], rel=1e-5)


def test_the_record_says_how_many_graphs_were_compiled(tiny_root, tmp_path, monkeypatch):
    from conftest import TINY_PROBE
    from torch._dynamo.testing import CompileCounter

    from benchmark.runner import run_one

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile",
                        functools.partial(torch.compile, backend=CompileCounter()))
    small = {**TINY_PROBE, "epochs": 1}
    compiled = run_one("probe", "generic", 0, tiny_root, small,
                       RunConfig(progress=False, compile=True), tmp_path, log=lambda _: None)
    plain = run_one("probe", "generic", 0, tiny_root, small, RunConfig(progress=False), tmp_path,
                    log=lambda _: None)
    assert compiled["compile"]["enabled"] and compiled["compile"]["graphs"] >= 1
    assert plain["compile"] == {"enabled": False, "graphs": 0}
    assert compiled["config_hash"] != plain["config_hash"]  # compiled kernels may round apart


def test_sync_every_is_checked():
    from benchmark.models import ConfigError

    with pytest.raises(ConfigError, match="sync_every must be 1 or more"):
        RunConfig(sync_every=0)
    assert "sync_every" not in RunConfig.RESULT_FIELDS and engine.RunConfig is RunConfig
