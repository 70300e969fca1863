"""BRISQUE: the NSS features (baselines.nss) and the SVR model (baselines.brisque)."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage, special, stats
from sklearn.svm import SVR

from baselines import nss
from baselines.brisque import BRISQUE, BRISQUEConfig, _svm_scale
from benchmark.metrics import srcc
from benchmark.models import ConfigError, config_from_dict, get_model_class

TINY_GRID = {"svr_c": (1.0, 16.0), "svr_gamma": (0.05, 0.5), "workers": 1}
# the 2-D window's centre weight bounds every MSCN coefficient: |I − μ| ≤ σ·√((1 − w0)/w0)
CENTRE_WEIGHT = float(nss._WINDOW_1D[nss.WINDOW_SIZE // 2] ** 2)
MSCN_BOUND = np.sqrt((1 - CENTRE_WEIGHT) / CENTRE_WEIGHT)


def noise_image(rng: np.random.Generator, side: int, std: float) -> np.ndarray:
    luma = np.clip(np.round(128 + rng.normal(0, std, (side, side))), 0, 255).astype(np.uint8)
    return np.repeat(luma[..., None], 3, axis=2)


def local_std(luma: np.ndarray) -> np.ndarray:
    mu = nss._smooth(luma)
    return np.sqrt(np.abs(nss._smooth(luma * luma) - mu * mu))


# -- features
def test_feature_layout_and_orientations():
    assert nss.NUM_FEATURES == 36 and len(set(nss.FEATURE_NAMES)) == 36
    assert nss.FEATURE_NAMES[:6] == ("s1_mscn_shape", "s1_mscn_var", "s1_h_shape", "s1_h_mean",
                                     "s1_h_lvar", "s1_h_rvar")
    assert nss.FEATURE_NAMES[18] == "s2_mscn_shape" and nss.FEATURE_NAMES[35] == "s2_d2_rvar"

    # columns of noise, each constant down the image: vertical neighbours are equal, so the
    # vertical products are squares (no left side), and both diagonals pair the same values as
    # the horizontal products
    rng = np.random.default_rng(0)
    columns = np.clip(128 + rng.normal(0, 25, 96), 0, 255).astype(np.uint8)
    image = np.repeat(np.tile(columns, (80, 1))[..., None], 3, axis=2)
    f = nss.brisque_features(image)
    assert f.shape == (36,) and np.all(np.isfinite(f))
    index = {name: i for i, name in enumerate(nss.FEATURE_NAMES)}
    assert f[index["s1_v_lvar"]] == 0.0 and f[index["s1_v_mean"]] > 0
    assert f[index["s1_h_lvar"]] > 0.01
    np.testing.assert_allclose(f[2:6], f[10:14], rtol=1e-9)
    np.testing.assert_allclose(f[2:6], f[14:18], rtol=1e-9)

    # the second half is the same analysis of the half-size image
    natural = noise_image(rng, 64, 30)
    f = nss.brisque_features(natural)
    half = nss.mscn(nss.halve(nss.grey(natural)))
    assert half.shape == (32, 32)
    assert f[18:20].tolist() == list(nss.fit_ggd(half))
    assert f[24:28].tolist() == list(nss.fit_aggd(nss.pair_products(half)["v"]))
    shapes = f[[0, 2, 6, 10, 14, 18, 20, 24, 28, 32]]
    assert np.all((shapes >= 0.2) & (shapes <= 10.0))


def test_constant_image_is_the_documented_degenerate_fit():
    image = np.full((40, 50, 3), 77, dtype=np.uint8)
    assert np.abs(nss.mscn(nss.grey(image))).max() < 1e-9  # zero up to rounding
    expected = ([2.0, 0.0] + [2.0, 0.0, 0.0, 0.0] * 4) * 2
    assert nss.brisque_features(image).tolist() == expected
    assert nss.fit_ggd(np.zeros(10)) == (2.0, 0.0)
    assert nss.fit_aggd(np.zeros(10)) == (2.0, 0.0, 0.0, 0.0)


def test_bad_images_are_refused_with_their_shape():
    with pytest.raises(ValueError, match=r"\(8, 40, 3\)"):
        nss.brisque_features(np.zeros((8, 40, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(20, 20, 4\)"):
        nss.brisque_features(np.zeros((20, 20, 4), np.uint8))


@pytest.mark.parametrize("shape", [0.5, 1.0, 2.0, 3.0])
def test_ggd_fit_recovers_the_shape_of_ggd_samples(shape):
    samples = stats.gennorm.rvs(shape, scale=3.0, size=400_000, random_state=1)
    fitted, variance = nss.fit_ggd(samples)
    assert abs(fitted - shape) < 0.03 * shape + 0.01
    assert variance == pytest.approx(np.mean(samples**2))


def test_aggd_fit_recovers_an_asymmetric_ggd():
    shape, left_scale, right_scale, n = 0.8, 0.5, 1.2, 400_000
    rng = np.random.default_rng(2)
    left = rng.random(n) < left_scale / (left_scale + right_scale)  # the AGGD's mass per side
    magnitude = np.abs(stats.gennorm.rvs(shape, size=n, random_state=3))
    samples = np.where(left, -left_scale, right_scale) * magnitude
    fitted, mean, left_var, right_var = nss.fit_aggd(samples)
    assert abs(fitted - shape) < 0.03
    moment = np.exp(special.gammaln(3 / shape) - special.gammaln(1 / shape))
    assert left_var == pytest.approx(left_scale**2 * moment, rel=0.03)
    assert right_var == pytest.approx(right_scale**2 * moment, rel=0.03)
    assert mean == pytest.approx(samples.mean(), rel=0.03)


def test_white_noise_mscn_is_bounded_and_lighter_tailed_than_gaussian():
    """Gaussian samples fit shape 2; the MSCN of Gaussian *noise images* do not.

    Dividing by a local standard deviation that includes the centre pixel bounds every
    coefficient by √((1 − w0)/w0) ≈ 2.75, which trims the tails: the fitted shape of white
    noise is ≈ 2.9–3.0 (measured: 2.97 at σ = 20, 2.99 at σ = 30), not 2.
    """
    gaussian = np.random.default_rng(4).normal(0, 1, 300_000)
    assert abs(nss.fit_ggd(gaussian)[0] - 2.0) < 0.05
    for std in (20, 30):
        image = noise_image(np.random.default_rng(5), 256, std)
        coefficients = nss.mscn(nss.grey(image))
        assert np.abs(coefficients).max() < MSCN_BOUND
        shape = nss.brisque_features(image)[0]
        assert 2.8 <= shape <= 3.1


def test_blur_shrinks_the_mscn_variance_as_the_bound_requires():
    """|MSCN| ≤ √((1 − w0)/w0)·σ/(σ + 1) at every pixel, σ the local std.

    Blur lowers σ, so past some blur the bound alone forces a smaller MSCN variance. The shape
    has no such guarantee (on natural photos it usually falls, towards Laplacian; not asserted).
    """
    sharp = nss.grey(noise_image(np.random.default_rng(6), 128, 30))
    blurred = ndimage.gaussian_filter(sharp, 12.0, mode="reflect")
    for luma in (sharp, blurred):
        sigma = local_std(luma)
        assert np.all(np.abs(nss.mscn(luma)) <= MSCN_BOUND * sigma / (sigma + 1) + 1e-9)
    sigma = local_std(blurred)
    bound = float(np.max((MSCN_BOUND * sigma / (sigma + 1)) ** 2))
    sharp_variance = nss.fit_ggd(nss.mscn(sharp))[1]
    assert bound < sharp_variance
    assert nss.fit_ggd(nss.mscn(blurred))[1] <= bound


def test_feature_cache_is_keyed_by_content():
    cache = nss.FeatureCache()
    rng = np.random.default_rng(7)
    a, b = noise_image(rng, 32, 20), noise_image(rng, 32, 20)
    first = cache.features([a, b, a.copy()], workers=2)
    assert (cache.misses, cache.hits, len(cache)) == (2, 1, 2)
    assert np.array_equal(first[0], first[2]) and not np.array_equal(first[0], first[1])
    again = cache.features([b], workers=2)
    assert (cache.misses, cache.hits) == (2, 2) and np.array_equal(again[0], first[1])
    changed = a.copy()
    changed[0, 0, 0] ^= 1
    cache.features([changed])
    assert cache.misses == 3


def test_svm_scale_maps_the_training_range_to_unit_interval():
    x = np.array([[0.0, 5.0, 3.0], [2.0, 5.0, -1.0], [1.0, 5.0, 1.0]])
    scale, offset = _svm_scale(x)
    scaled = x * scale + offset
    np.testing.assert_allclose(scaled[:, 0], [-1.0, 1.0, 0.0])
    np.testing.assert_allclose(scaled[:, 2], [1.0, -1.0, 0.0])
    assert scaled[:, 1].tolist() == [0.0, 0.0, 0.0]  # a constant feature drops out


# -- the model
def graded_images(rng: np.random.Generator, count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Smooth scenes with added noise; the label falls with the noise level."""
    images, labels = [], []
    for _ in range(count):
        level = rng.uniform(0, 40)
        scene = ndimage.gaussian_filter(rng.uniform(0, 255, (48, 48)), 3)
        luma = np.clip(scene + rng.normal(0, level, scene.shape), 0, 255).astype(np.uint8)
        images.append(np.repeat(luma[..., None], 3, axis=2))
        labels.append(100 - 2 * level)
    return images, np.array(labels)


@pytest.fixture(scope="module")
def graded():
    rng = np.random.default_rng(8)
    return graded_images(rng, 40), graded_images(rng, 8), graded_images(rng, 20)


def test_registered_with_a_fit_config():
    cls = get_model_class("brisque")
    assert cls is BRISQUE and cls.training_kind == "fit"
    config = config_from_dict(BRISQUEConfig, {"svr_c": [2, 8], "svr_epsilon": "0.2"})
    assert config.svr_c == (2, 8) and config.svr_epsilon == 0.2
    assert (config.train_crops, config.test_crops, config.label_scale) == (1, 1, "raw")
    # no SGD, so no SGD settings: a recipe that sets one fails, naming the key
    assert not hasattr(config, "lr") and BRISQUE.recipe(config).stages == ()
    with pytest.raises(ConfigError, match="unknown config key 'epochs' for BRISQUEConfig"):
        config_from_dict(BRISQUEConfig, {"epochs": 3})


def test_fit_selects_on_val_and_predicts_as_sklearn(graded):
    (train, train_y), (val, val_y), (test, test_y) = graded
    model = BRISQUE(BRISQUEConfig(**TINY_GRID))
    with pytest.raises(RuntimeError, match="not been fitted"):
        model.predict(test)
    facts = model.fit(train, train_y, val, val_y)
    assert facts["selection"] == "val" and facts["grid_size"] == 4
    assert facts["svr_c"] in TINY_GRID["svr_c"] and facts["svr_gamma"] in TINY_GRID["svr_gamma"]
    assert facts["val_srcc"] > 0.8 and (facts["n_train"], facts["n_val"]) == (40, 8)
    prediction = model.predict(test)
    assert srcc(prediction, test_y) > 0.8

    # the tensor expansion reproduces scikit-learn's fit with the chosen values
    x = nss.feature_matrix(train)
    scale, offset = _svm_scale(x)
    svr = SVR(kernel="rbf", C=facts["svr_c"], gamma=facts["svr_gamma"], epsilon=0.1)
    svr.fit(x * scale + offset, (train_y - train_y.mean()) / train_y.std())
    expected = svr.predict(nss.feature_matrix(test) * scale + offset)
    np.testing.assert_allclose(prediction, expected * train_y.std() + train_y.mean(), atol=1e-8)

    # forward() and features() take [0, 1] tensors and agree with predict()
    batch = torch.from_numpy(np.stack(test[:4])).permute(0, 3, 1, 2).float() / 255
    np.testing.assert_allclose(model(batch).numpy(), prediction[:4], rtol=1e-6)
    assert model.features(batch).shape == (4, 36)


def test_without_val_images_selection_falls_back_to_cross_validation(graded):
    (train, train_y), _, (test, test_y) = graded
    model = BRISQUE(BRISQUEConfig(**TINY_GRID))
    facts = model.fit(train, train_y, [], [])
    assert facts["selection"] == "cv5" and facts["n_val"] == 0
    assert srcc(model.predict(test), test_y) > 0.8


def test_state_dict_round_trips_through_weights_only_load(graded):
    (train, train_y), (val, val_y), (test, _) = graded
    model = BRISQUE(BRISQUEConfig(**TINY_GRID))
    facts = model.fit(train, train_y, val, val_y)
    state = model.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["support_vectors"].shape == (facts["n_support_vectors"], 36)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = BRISQUE(BRISQUEConfig(**TINY_GRID))
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert np.array_equal(restored.predict(test), model.predict(test))
    with pytest.raises(RuntimeError, match="Missing key"):
        BRISQUE().load_state_dict({k: v for k, v in state.items() if k != "gamma"})


def test_constant_images_fit_without_nan():
    images = [np.full((32, 32, 3), v, np.uint8) for v in (10, 90, 200)] * 3
    model = BRISQUE(BRISQUEConfig(**TINY_GRID))
    facts = model.fit(images[:6], np.arange(6.0), images[6:], np.arange(3.0))
    # every constant image has the same (degenerate) features, so every grid point predicts a
    # constant: no SRCC, and the tie rule keeps the first grid point
    assert facts["val_srcc"] is None
    assert (facts["svr_c"], facts["svr_gamma"]) == (1.0, 0.05)
    prediction = model.predict(images)
    assert np.all(np.isfinite(prediction)) and np.ptp(prediction) == 0


# -- real data: the partial LIVEC copy
def livec_root() -> Path:
    shared = os.environ.get("BENCH_SHARED_DATA")
    root = Path(shared or "") / "livec" / "ChallengeDB_release"
    if not shared or not (root / "Data" / "AllMOS_release.mat").is_file():
        pytest.skip("BENCH_SHARED_DATA/livec is not available")
    return root


@pytest.mark.slow  # 20–35 s on 2 busy cores
@pytest.mark.realdata
def test_livec_partial_copy_reaches_published_range():
    from PIL import Image
    from scipy.io import loadmat

    root = livec_root()
    names = [c[0][0] for c in loadmat(root / "Data" / "AllImages_release.mat")["AllImages_release"]]
    mos = loadmat(root / "Data" / "AllMOS_release.mat")["AllMOS_release"][0]
    present = [(name, score) for name, score in zip(names[7:], mos[7:])
               if (root / "Images" / name).is_file()]
    assert len(present) >= 300
    images = [np.asarray(Image.open(root / "Images" / name).convert("RGB")) for name, _ in present]
    labels = np.array([score for _, score in present])

    order = np.random.default_rng(0).permutation(len(images))
    n_test = round(0.2 * len(order))
    test, train = order[:n_test], order[n_test:]
    n_val = round(0.1 * len(train))
    val, train = train[:n_val], train[n_val:]
    started = time.perf_counter()
    nss.feature_matrix(images, workers=2)  # fills the cache that fit() and predict() read
    per_image = (time.perf_counter() - started) / len(images)
    model = BRISQUE()
    facts = model.fit([images[i] for i in train], labels[train],
                      [images[i] for i in val], labels[val])
    test_srcc = srcc(model.predict([images[i] for i in test]), labels[test])
    print(f"\nLIVEC partial: {len(images)} images, {per_image * 1000:.1f} ms features/image, "
          f"C={facts['svr_c']:g} gamma={facts['svr_gamma']:g} val SRCC={facts['val_srcc']:.3f} "
          f"test SRCC={test_srcc:.3f}")
    assert test_srcc >= 0.45
