"""QFM-IQM as reconstructed: equivalence with DEIQT, matching, perturbation, gate, teacher."""

from __future__ import annotations

import pytest
import torch

from baselines.deiqt import DEIQT, DEIQTConfig
from benchmark.models import ConfigError, TrainContext, config_to_dict, masked_mean
from qfm.gate import ChannelGate
from qfm.matching import Entries, Memory, match
from qfm.model import QFM, MissingTeacherError
from qfm.perturb import gaussian_noise, perturb, worst_direction
from qfm.presets import PRESETS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(backbone="vit_tiny_patch16_224", pretrained="false", img_size=64,
            backbone_kwargs={"depth": 2, "embed_dim": 48, "num_heads": 3}, decoder_dim=48)

CTX = TrainContext(epoch=0, step=0, steps_per_epoch=1, label_range=4.0, device=torch.device("cpu"))


def tiny_deiqt(seed: int = 0, **changes) -> DEIQT:
    torch.manual_seed(seed)
    return DEIQT(DEIQTConfig(**{**TINY, **changes}))


def tiny_qfm(seed: int = 0, teacher: DEIQT | None = None, **values) -> QFM:
    torch.manual_seed(seed)
    model = QFM(QFM.resolve_config({**TINY, **values}))
    if QFM.prerequisites(model.config):
        model.attach_teacher(teacher if teacher is not None else tiny_deiqt(seed=1))
    return model


def batch(size: int = 8) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"image": torch.rand(size, 3, 64, 64, generator=generator),
            "label": torch.linspace(1, 5, size), "index": torch.arange(size)}


def memory(features, labels, ids, teacher=None) -> Entries:
    features = torch.tensor(features, dtype=torch.float32)
    teacher = torch.tensor(teacher if teacher is not None else [False] * len(ids))
    return Entries(features, features, torch.tensor(labels, dtype=torch.float32),
                   torch.tensor(ids), teacher)


# -- QFM with every option off is DEIQT
def test_preset_deiqt_computes_exactly_what_deiqt_computes():
    reference = tiny_deiqt().eval()
    model = tiny_qfm(seed=5, preset="deiqt", loss_scale="raw").eval()  # DEIQT's raw-label loss
    assert model.gate is None and QFM.prerequisites(model.config) == []
    model.load_state_dict(reference.state_dict())  # strict: no extra parameters
    data = batch()
    assert torch.equal(model(data["image"]), reference(data["image"]))
    assert torch.equal(model.features(data["image"]), reference.features(data["image"]))
    ours, theirs = model.loss(data, CTX), reference.loss(data, CTX)
    assert torch.equal(ours["loss"], theirs["loss"]) and ours["adv"].item() == ours["kd"].item() == 0


def test_identity_gate_leaves_inference_equal_to_deiqt():
    reference = tiny_deiqt().eval()
    model = tiny_qfm(gate_init="2sigmoid_zero").eval()
    model.load_state_dict(reference.state_dict(), strict=False)
    images = batch()["image"]
    assert torch.equal(model(images), reference(images))


# -- matching on hand-built memories (tolerance 0.5, anchor label 3.0, anchor id 0)
ANCHOR = torch.tensor([[1.0, 0.0]])


def test_matching_picks_the_farthest_same_quality_entry_of_another_image():
    entries = memory([[-1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.1]],
                     [3.0, 3.2, 2.6, 4.0], [0, 1, 2, 3])
    # entry 0 is farthest but the same image; entry 3 is far but 1.0 away in quality
    found = match(ANCHOR, torch.tensor([3.0]), torch.tensor([0]), entries, 0.5)
    assert found.index[0, 0].item() == 2 and found.valid.all() and not found.fallback.any()
    l2 = match(ANCHOR, torch.tensor([3.0]), torch.tensor([0]), entries, 0.5, metric="l2")
    assert l2.index[0, 0].item() == 2
    two = match(ANCHOR, torch.tensor([3.0]), torch.tensor([0]), entries, 0.5, count=2)
    assert two.index[0].tolist() == [2, 1] and two.valid[0].tolist() == [True, True]


def test_random_selections_stay_admissible():
    entries = memory([[-1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.1], [0.5, 0.5]],
                     [3.0, 3.2, 2.6, 4.0, 3.1], [0, 1, 2, 3, 4])
    anchors = ANCHOR.repeat(200, 1)
    labels, ids = torch.full((200,), 3.0), torch.zeros(200, dtype=torch.long)
    torch.manual_seed(0)
    for mode in ("random", "topm_random", "softmax"):
        found = match(anchors, labels, ids, entries, 0.5, mode=mode, topm=2, temperature=1.0)
        picked = set(found.index[:, 0].tolist())
        counts = found.index[:, 0].bincount(minlength=5)
        assert picked <= {1, 2, 4} and found.valid.all()
        if mode == "topm_random":
            assert picked == {2, 4}  # the two farthest admissible
        else:
            assert picked == {1, 2, 4}
        if mode == "softmax":  # p ∝ exp(distance): entry 2 (distance 1.0) about half the time
            assert counts[2] > counts[4] > 0 and counts[2] > counts[1] > 0


def test_matching_falls_back_to_the_nearest_label_or_skips():
    entries = memory([[-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], [3.0, 4.0, 1.5], [0, 1, 2])
    found = match(ANCHOR, torch.tensor([3.0]), torch.tensor([0]), entries, 0.5)
    assert found.index[0, 0].item() == 1 and found.valid[0, 0] and found.fallback[0]
    skipped = match(ANCHOR, torch.tensor([3.0]), torch.tensor([0]), entries, 0.5, fallback="skip")
    assert not skipped.valid.any() and not skipped.fallback.any()
    alone = memory([[-1.0, 0.0], [0.0, 1.0]], [3.0, 3.1], [0, 0])
    nobody = match(ANCHOR, torch.tensor([3.0]), torch.tensor([0]), alone, 0.5)
    assert not nobody.valid.any()  # only crops of the anchor's own image: never matched
    kept = match(ANCHOR, torch.tensor([3.0]), torch.tensor([0]), alone, 0.5,
                 exclude_same_image=False)
    assert kept.index[0, 0].item() == 0  # the farthest entry, now allowed although same image


def test_memory_is_a_fifo_of_k_batches():
    fifo = Memory(batches=2)
    for step in range(4):
        fifo.push([memory([[float(step), 1.0]], [float(step)], [step])])
    assert [e.ids.tolist() for e in fifo.queue] == [[3], [2]]
    gathered = fifo.gather([memory([[9.0, 1.0]], [9.0], [9])])
    assert gathered.ids.tolist() == [9, 3, 2]
    restored = Memory(batches=2)
    restored.load_state(fifo.state())
    assert [e.ids.tolist() for e in restored.queue] == [[3], [2]]
    none = Memory(batches=0)
    none.push([memory([[1.0, 1.0]], [1.0], [1])])
    assert none.queue == []


# -- perturbation
def test_masked_mean_is_the_mean_of_the_kept_rows_and_exact_when_all_are_kept():
    values = torch.tensor([0.3, 1.7, 2.9, 4.1, 0.123456789], requires_grad=True)
    keep = torch.tensor([True, False, True, False, True])
    masked = masked_mean(values, keep)
    masked.backward()
    assert masked.item() == pytest.approx(values[keep].mean().item(), rel=1e-6)
    assert values.grad.tolist() == pytest.approx([1 / 3, 0, 1 / 3, 0, 1 / 3])
    every = torch.ones(5, dtype=torch.bool)
    assert masked_mean(values, every).item() == values.mean().item()  # bit for bit
    assert masked_mean(values, ~every).item() == 0.0


def test_normmatched_perturbation_has_norm_alpha_times_the_anchor():
    torch.manual_seed(0)
    c, n = torch.randn(5, 48), 7.0 * torch.randn(5, 48)
    for alpha in (0.25, 1.0):
        step = perturb(c, n, "add_normmatched", alpha) - c
        torch.testing.assert_close(step.norm(dim=1), alpha * c.norm(dim=1))
        torch.testing.assert_close(torch.cosine_similarity(step, n, dim=1), torch.ones(5))
    patches, noise = torch.randn(5, 16, 48), torch.randn(5, 16, 48)
    step = perturb(patches, noise, "add_normmatched", 0.5) - patches
    torch.testing.assert_close(step.flatten(1).norm(dim=1), 0.5 * patches.flatten(1).norm(dim=1))
    torch.testing.assert_close(perturb(c, n, "add_raw", 0.5), c + 0.5 * n)
    torch.testing.assert_close(perturb(c, n, "interp", 0.25), 0.75 * c + 0.25 * n)
    torch.testing.assert_close(gaussian_noise(c).norm(dim=1), c.norm(dim=1))


def test_worst_direction_is_the_signed_partner_direction():
    gradient = torch.tensor([[1.0, -2.0, 0.0], [-1.0, 0.0, 3.0]])
    directions = torch.tensor([[[0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]]])
    torch.testing.assert_close(worst_direction(gradient, directions),
                               torch.tensor([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]))
    span = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    expected = torch.tensor([[1.0, -2.0, 0.0]]) / 5 ** 0.5
    torch.testing.assert_close(worst_direction(gradient[:1], span), expected)


# -- gate
def test_gate_lies_in_unit_interval_and_starts_near_095():
    gate = ChannelGate(384)
    assert sum(p.numel() for p in gate.parameters()) == 74_976
    values = gate(10 * torch.randn(16, 384))
    torch.testing.assert_close(values, torch.full_like(values, torch.sigmoid(torch.tensor(3.0)).item()))
    with torch.no_grad():
        for parameter in gate.parameters():
            parameter.normal_(0, 5)
    values = gate(10 * torch.randn(64, 384))
    assert values.min().item() >= 0.0 and values.max().item() <= 1.0
    assert values.std().item() > 0.1
    static = ChannelGate(8, "static", "2sigmoid_zero")
    assert torch.equal(static(torch.randn(3, 8)), torch.ones(3, 8))


# -- teacher
def test_teacher_gets_no_gradient_and_does_not_change():
    teacher = tiny_deiqt(seed=1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    model = tiny_qfm(teacher=teacher, lr=1e-3)
    model.train()
    assert not teacher.training
    assert not any(k.startswith(("teacher", "_aux")) for k in model.state_dict())
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not any(id(p) in teacher_ids for g in model.param_groups() for p in g["params"])
    optimizer = torch.optim.AdamW(model.param_groups())
    for _ in range(3):
        out = model.loss(batch(), CTX)
        assert out["kd"].item() > 0 and out["adv"].item() > 0
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_frozen_teacher_comes_from_a_deiqt_checkpoint(tmp_path):
    source = tiny_deiqt(seed=3).eval()
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": "deiqt", "config": config_to_dict(source.config),
                "state_dict": source.state_dict()}, path)
    model = tiny_qfm(preset="+distill", teacher=tiny_deiqt())
    assert QFM.prerequisites(model.config) == ["deiqt"]
    model.attach_prerequisites({"deiqt": path})
    images = batch()["image"]
    with torch.no_grad():
        torch.testing.assert_close(model._aux["teacher"](images), source(images), rtol=0, atol=1e-6)
    wrong = tmp_path / "probe.pt"
    torch.save({"model": "probe", "config": {}, "state_dict": {}}, wrong)
    with pytest.raises(ConfigError, match="holds model 'probe', not 'deiqt'"):
        model.attach_prerequisites({"deiqt": wrong})
    with pytest.raises(MissingTeacherError, match="no deiqt checkpoint was given"):
        model.attach_prerequisites({})
    with pytest.raises(MissingTeacherError, match="no teacher was attached"):
        QFM(QFM.resolve_config(TINY)).loss(batch(), CTX)
    with pytest.raises(ConfigError, match="img_size"):
        model.attach_teacher(tiny_deiqt(img_size=32))


def test_ema_teacher_follows_the_student():
    model = tiny_qfm(preset="ema-teacher", lr=1e-3, ema_momentum=0.9)
    assert QFM.prerequisites(model.config) == []
    optimizer = torch.optim.AdamW(model.param_groups())
    out = model.loss(batch(), CTX)
    optimizer.zero_grad()
    out["loss"].backward()
    teacher = model._aux["teacher"]
    old = teacher.decoder.score.weight.detach().clone()
    optimizer.step()
    model.loss(batch(), CTX)
    expected = 0.9 * old + 0.1 * model.decoder.score.weight.detach()
    torch.testing.assert_close(teacher.decoder.score.weight, expected)
    assert not torch.equal(teacher.decoder.score.weight, old)
    state = model.train_state()
    assert any(k.startswith("ema.") for k in state) and any(k.startswith("memory.") for k in state)


# -- configuration
def test_resolve_config_expands_presets_and_explicit_keys_win():
    assert QFM.resolve_config({}).teacher == "deiqt_frozen"
    base = QFM.resolve_config({"preset": "A4"})
    assert (base.preset, base.teacher, base.adv_mode, base.gate) == ("+gate", "none", "none", "se_mlp")
    mixed = QFM.resolve_config({"preset": "+match", "gate": "static", "tau": 0.1})
    assert (mixed.gate, mixed.tau, mixed.adv_mode) == ("static", 0.1, "matched")
    with pytest.raises(ConfigError, match="unknown QFM preset"):
        QFM.resolve_config({"preset": "nope"})
    with pytest.raises(ConfigError, match="teacher=none"):
        QFM.resolve_config({"teacher": "none"})
    with pytest.raises(ConfigError, match="match_select"):
        QFM.resolve_config({"match_select": "closest"})
    for name in PRESETS:
        QFM.resolve_config({"preset": name})  # every preset is a valid config


def test_qfm_adds_exactly_one_cls_gate():
    deiqt = sum(p.numel() for p in DEIQT(DEIQTConfig(pretrained="false")).parameters())
    qfm = sum(p.numel() for p in QFM(QFM.resolve_config({"pretrained": "false"})).parameters())
    assert deiqt == 24_043_776 and qfm - deiqt == 74_976


# -- every variant trains; the full model overfits
@pytest.mark.parametrize("preset", ["sam", "ctrl-gaussian", "ctrl-random-partner", "both-target"])
def test_variants_produce_finite_losses_without_stray_gradients(preset):
    model = tiny_qfm(preset=preset, sam_inner="grid" if preset == "sam" else "first_order")
    out = model.loss(batch(), CTX)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert out["adv"].item() > 0
    assert all(p.grad is None for p in model.parameters())  # the SAM inner step is autograd.grad


def test_frozen_imagenet_match_space_caches_one_key_per_image():
    model = tiny_qfm(preset="+match-nomem", match_space="frozen_imagenet_cls")
    data = batch()
    data["index"] = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    model.loss(data, CTX)
    assert sorted(model._imagenet_keys) == [0, 1, 2, 3]
    assert model._imagenet_keys[0].shape == (48,)


def test_full_qfm_overfits_a_fixed_batch():
    model = tiny_qfm(lr=1e-3)
    optimizer = torch.optim.AdamW(model.param_groups())
    first = last = None
    for _ in range(40):
        out = model.loss(batch(), CTX)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        first = first or {k: v.item() for k, v in out.items()}
        last = {k: v.item() for k, v in out.items()}
    assert first["stat_fallback"] == 1.0  # labels 4/7 apart, tolerance 0.2: nothing within τ·R
    assert last["stat_memory_size"] == 80  # (K + 1) batches × 2 sources × 8
    assert last["loss"] < first["loss"] / 20 and last["reg"] < first["reg"] / 20
    assert 0.9 < last["stat_gate_mean"] < 1.0


def test_train_state_restores_memory_ema_teacher_and_frozen_keys(tmp_path):
    model = tiny_qfm(preset="ema-teacher", match_space="frozen_imagenet_cls", perturb_target="both")
    for _ in range(3):
        model.loss(batch(), CTX)
    torch.save(model.train_state(), tmp_path / "state.pt")
    restored = QFM(model.config)
    restored.load_state_dict(model.state_dict())
    restored.load_train_state(torch.load(tmp_path / "state.pt", weights_only=True))
    assert [e.ids.tolist() for e in restored._memory.queue] == \
        [e.ids.tolist() for e in model._memory.queue] and len(restored._memory.queue) == 3
    assert restored._memory.queue[0].patches.shape == (16, 16, 48)
    assert sorted(restored._imagenet_keys) == list(range(8))
    ours, theirs = restored._aux["teacher"].state_dict(), model._aux["teacher"].state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize("preset", ["full", "sam"])
def test_objective_runs_under_bf16_autocast_with_fp32_matching(preset):
    model = tiny_qfm(preset=preset, sam_dirs=2 if preset == "sam" else 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.loss(batch(), CTX)
        assert distances_dtype() == torch.float32
    assert torch.isfinite(out["loss"]) and out["adv"].item() > 0


def distances_dtype() -> torch.dtype:
    from qfm.matching import distances

    return distances(torch.randn(3, 8), torch.randn(5, 8)).dtype


def test_new_crop_teacher_sees_an_independent_crop_of_the_same_image(demo_root, tmp_path,
                                                                     monkeypatch):
    import math

    from benchmark.engine import RunConfig
    from benchmark.runner import run_one

    recipe = {**TINY, "epochs": 1, "train_crops": 1, "test_crops": 1, "batch_size": 32,
              "warmup_epochs": 0.0}
    quiet = {"run": RunConfig(progress=False), "results": tmp_path, "log": lambda _: None}
    run_one("deiqt", "demo", 0, demo_root, recipe, **quiet)
    pairs = []
    original = QFM._teacher_outputs

    def recording(self, batch):
        pairs.append((batch["image"].clone(), batch.get("teacher_image")))
        return original(self, batch)

    monkeypatch.setattr(QFM, "_teacher_outputs", recording)
    record = run_one("qfm", "demo", 0, demo_root, {**recipe, "teacher_input": "new_crop"}, **quiet)
    assert math.isfinite(record["history"][0]["train"]["loss"])
    student, teacher = pairs[0]
    assert teacher is not None and teacher.shape == student.shape
    # an independent crop of each image: no sample of the batch sees the student's pixels
    assert all(not torch.equal(s, t) for s, t in zip(student, teacher))
    pairs.clear()
    run_one("qfm", "demo", 0, demo_root, recipe, **quiet)
    assert pairs[0][1] is None  # same_crop: the loader draws no second crop


def test_prerequisite_pin_picks_an_older_teacher_and_bad_pins_fail_in_one_line(demo_root,
                                                                                tmp_path):
    from click.testing import CliRunner

    from benchmark.cli import main
    from benchmark.engine import RunConfig
    from benchmark.runner import run_one

    recipe = {**TINY, "epochs": 1, "train_crops": 1, "test_crops": 1, "batch_size": 32,
              "warmup_epochs": 0.0}
    quiet = {"run": RunConfig(progress=False), "results": tmp_path, "log": lambda _: None}
    older = run_one("deiqt", "demo", 0, demo_root, recipe, **quiet)
    newer = run_one("deiqt", "demo", 0, demo_root, {**recipe, "lr": 1e-4}, **quiet)
    default = run_one("qfm", "demo", 0, demo_root, recipe, **quiet)
    assert default["prerequisites"]["deiqt"]["config_hash"] == newer["config_hash"]
    pinned = run_one("qfm", "demo", 0, demo_root, recipe, **quiet,
                     pins={"deiqt": older["config_hash"][:8]})
    assert pinned["prerequisites"]["deiqt"]["config_hash"] == older["config_hash"]
    assert pinned["config_hash"] != default["config_hash"]  # the teacher is part of the identity

    def cli(*args):
        return CliRunner().invoke(main, ["run", "--dataset", "demo", "--split", "0", "--root",
                                         str(demo_root), "--results", str(tmp_path), "--quiet",
                                         *args])

    for args, fragment in [
        (["--model", "qfm", "--prerequisite", "deiqt=abcdef12"],
         "no finished deiqt run on demo split 0 has a config hash starting with 'abcdef12'"),
        (["--model", "qfm", "--prerequisite", "deiqt=xyz"], "expected MODEL=HASH"),
        (["--model", "probe", "--prerequisite", f"deiqt={older['config_hash'][:8]}"],
         "probe needs no deiqt run, so it cannot be pinned"),
    ]:
        result = cli(*args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and fragment in lines[0], result.output
