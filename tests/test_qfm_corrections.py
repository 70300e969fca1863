"""QFM-IQM corrections: one match space, scale-free loss balance, a gate that can move, true
controls, no double-counted L_reg, the SAM inner step's gate, QR projection, backbone lr."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from baselines.deiqt import DEIQT
from benchmark.models import TrainContext
from qfm.gate import ChannelGate
from qfm.matching import match
from qfm.model import QFM
from qfm.perturb import worst_direction
from test_qfm import TINY, batch, memory, tiny_deiqt, tiny_qfm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ctx(label_range: float = 4.0) -> TrainContext:
    return TrainContext(epoch=0, step=0, steps_per_epoch=1, label_range=label_range,
                        device=torch.device("cpu"))


def mirrored_teacher(student: QFM) -> DEIQT:
    """A DEIQT whose CLS is exactly minus the student's: its own space is the opposite one."""
    teacher = tiny_deiqt()
    teacher.load_state_dict({k: v for k, v in student.state_dict().items()
                             if k in teacher.state_dict()})
    with torch.no_grad():
        teacher.backbone.norm.weight.neg_()
        teacher.backbone.norm.bias.neg_()
    return teacher


def spy(monkeypatch, name: str) -> list:
    """Record what ``qfm.model.<name>`` returns (or receives, for perturb)."""
    import qfm.model

    seen, original = [], getattr(qfm.model, name)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append((args, kwargs, out))
        return out

    monkeypatch.setattr(qfm.model, name, wrapper)
    return seen


def test_teacher_entries_share_the_students_match_space(monkeypatch):
    shares = {}
    for key in ("shared", "own"):
        torch.manual_seed(0)
        model = tiny_qfm(memory_batches=0, tau=1.0, teacher_key=key)
        model.attach_teacher(mirrored_teacher(model))
        with torch.no_grad():
            cls, _ = model.forward_tokens(batch(16)["image"])
        found = spy(monkeypatch, "match")
        shares[key] = model.loss(batch(16), ctx())["stat_partner_from_teacher"].item()
        memory_keys = found[-1][0][3].keys
        if key == "shared":  # every entry, the teacher's included, is keyed by a student CLS
            torch.testing.assert_close(memory_keys, torch.cat([cls, cls]), atol=1e-5, rtol=0)
    # keyed by its own (opposite) CLS, the teacher block is always the farthest
    assert shares["own"] == 1.0
    assert 0.2 < shares["shared"] < 0.8


def test_equally_distant_entries_are_drawn_at_random():
    # entries 1 (student) and 2 (teacher) of image 1 share a key; entry 0 is the anchor's image
    entries = memory([[1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], [3.0, 3.0, 3.0], [0, 1, 1],
                     [False, False, True])
    anchors, labels, ids = torch.tensor([[1.0, 0.0]]).repeat(400, 1), torch.full((400,), 3.0), \
        torch.zeros(400, dtype=torch.long)
    torch.manual_seed(0)
    picked = match(anchors, labels, ids, entries, 0.5).index[:, 0]
    assert 150 < (picked == 2).sum().item() < 250 and set(picked.tolist()) == {1, 2}
    far = memory([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], [3.0, 4.0, 4.0], [0, 1, 1])
    nearest = match(anchors, labels, ids, far, 0.5).index[:, 0]  # the fallback ties too
    assert set(nearest.tolist()) == {1, 2}


def test_total_loss_is_the_same_under_a_label_rescaling():
    for scale_mode, equal in (("label_range", True), ("raw", False)):
        torch.manual_seed(0)
        model = tiny_qfm(loss_scale=scale_mode, lambda_sens=0.5)
        rescaled = copy.deepcopy(model)
        with torch.no_grad():  # predictions ×100, as a 0–100 label scale asks of a model
            rescaled.decoder.score.weight.mul_(100.0)
        data = batch()
        big = {**data, "label": data["label"] * 100.0}
        torch.manual_seed(1)
        ours = model.loss(data, ctx(4.0))
        torch.manual_seed(1)
        theirs = rescaled.loss(big, ctx(400.0))
        assert ours["adv"].item() > 0 and ours["kd"].item() > 0
        same = math.isclose(ours["loss"].item(), theirs["loss"].item(), rel_tol=1e-4)
        assert same is equal, (scale_mode, ours["loss"].item(), theirs["loss"].item())


def test_static_gate_can_move_under_deiqts_schedule():
    from benchmark.engine import lr_factor

    recipe = QFM.resolve_config(TINY)  # DEIQT's: 2e-4, 3 warm-up epochs, ×0.1 every 3, 9 epochs
    steps = 137  # LIVEC at batch 64 × 10 crops: Σ lr ≈ 0.05 over the run
    gate = ChannelGate(8, "static", "sigmoid_bias3")
    optimizer = torch.optim.AdamW(gate.parameters(), lr=recipe.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, recipe))
    for _ in range(recipe.epochs * steps):
        loss = (gate(torch.zeros(1, 8)) - 0.5).pow(2).sum()  # a loss that wants g = 0.5
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    assert gate(torch.zeros(1, 8)).max().item() < 0.6


def test_cls_reliance_is_logged_as_a_share_of_the_label_range():
    model = tiny_qfm()
    data = batch()
    torch.manual_seed(0)
    out = model.loss(data, ctx(4.0))
    with torch.no_grad():
        cls, patches, _ = model.gated(*model.forward_tokens(data["image"]))
        expected = (model.decode(cls, patches)
                    - model.decode(torch.zeros_like(cls), patches)).abs().mean() / 4.0
    assert out["stat_cls_reliance"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_centred_noise_subtracts_the_memory_mean(monkeypatch):
    model = tiny_qfm(memory_batches=0, noise_center="memory_mean", perturb_form="add_raw")
    gathered = spy(monkeypatch, "match")
    added = spy(monkeypatch, "perturb")
    model.loss(batch(), ctx())
    (_, _, _, bank, _), _, found = gathered[-1]
    partner = found.index[:, 0]
    expected = bank.features[partner] - bank.features.mean(dim=0)
    torch.testing.assert_close(added[-1][0][1], expected)


def test_random_partner_control_draws_partners_at_random(monkeypatch):
    partners = {}
    for preset in ("full", "ctrl-random-partner"):
        found = spy(monkeypatch, "match")
        for seed in (0, 1):  # one memory source and every label admissible: no ties
            model = tiny_qfm(preset=preset, memory_batches=0, memory_sources="student", tau=1.0)
            torch.manual_seed(seed)
            model.loss(batch(16), ctx())
        partners[preset] = [call[2].index[:, 0].tolist() for call in found]
        assert found[-1][0][4] == (float("inf") if preset != "full" else 4.0)
    first, second = partners["full"]
    assert first == second  # farthest: the same batch gives the same partners
    first, second = partners["ctrl-random-partner"]
    assert first != second


def test_unperturbed_anchors_add_nothing_to_the_adversarial_term():
    torch.manual_seed(0)
    none = tiny_qfm(perturb_prob=0.0).loss(batch(), ctx())
    assert none["adv"].item() == 0.0 and none["sens"].item() == 0.0
    assert none["stat_perturbed"].item() == 0.0 and none["reg"].item() > 0
    torch.manual_seed(0)
    half = tiny_qfm(perturb_prob=0.5).loss(batch(16), ctx())
    assert 0.0 < half["stat_perturbed"].item() < 1.0 and half["adv"].item() > 0


def test_sam_inner_step_gates_with_the_clean_input():
    import torch.nn.functional as F

    model = tiny_qfm(preset="sam", gate_input="clean", sam_dirs=2, rho=0.5)
    with torch.no_grad():
        for parameter in model.gate.parameters():  # a gate that depends on its input
            parameter.normal_(0, 1)
        cls, patches = model.forward_tokens(batch()["image"])
    labels = batch()["label"]
    partners = torch.randn(8, 2, cls.shape[1], generator=torch.Generator().manual_seed(0))
    valid = torch.ones(8, 2, dtype=torch.bool)
    moved = model._sam_point(cls, patches, labels, partners, valid, 1.0, (cls, patches))
    point = cls.clone().requires_grad_(True)
    clean_gate = model.gate(cls)
    loss = F.smooth_l1_loss(model.decode(clean_gate * point, patches), labels, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, point)
    directions = partners / partners.norm(dim=2, keepdim=True)
    expected = 0.5 * cls.norm(dim=1, keepdim=True) * worst_direction(gradient, directions)
    torch.testing.assert_close(moved - cls, expected, atol=1e-5, rtol=1e-4)


def test_worst_direction_keeps_the_span_of_nearly_parallel_partners():
    angle = 1e-4  # the Gram matrix's condition number is ≈ 1e8: beyond fp32 for a pinv
    directions = torch.tensor([[[1.0, 0.0, 0.0], [math.cos(angle), math.sin(angle), 0.0]]])
    got = worst_direction(torch.tensor([[1.0, 1.0, 0.0]]), directions)
    torch.testing.assert_close(got, torch.tensor([[1.0, 1.0, 0.0]]) / 2 ** 0.5, atol=1e-3,
                               rtol=0)
    with_invalid = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    torch.testing.assert_close(worst_direction(torch.tensor([[1.0, -2.0, 0.0]]), with_invalid),
                               torch.tensor([[0.0, -1.0, 0.0]]))


@pytest.mark.parametrize("name", ["deiqt", "qfm"])
def test_backbone_lr_scale_sets_the_backbone_lr(name):
    torch.manual_seed(0)
    model = tiny_deiqt(lr=1e-3, backbone_lr_scale=0.1) if name == "deiqt" else \
        tiny_qfm(lr=1e-3, backbone_lr_scale=0.1)
    backbone = {id(p) for p in model.backbone.parameters()}
    lrs = {id(p): group["lr"] for group in model.param_groups() for p in group["params"]}
    assert set(lrs) == {id(p) for p in model.parameters()}
    assert sorted({round(lrs[i], 12) for i in backbone}) == [1e-4]
    assert sorted({lr for i, lr in lrs.items() if i not in backbone}) == [1e-3]
