"""MUSIQ's released Flax checkpoints mapped key by key onto :class:`baselines.musiq.MUSIQ`.

The official release (google-research ``musiq/README.md``) publishes ``.npz`` files whose keys
are the Flax parameter paths joined by ``/`` under ``opt/target/`` (``run_predict_image.py``
reads them so), among them ``imagenet_pretrain.npz``, the ImageNet pre-training the paper
fine-tunes from. The npz is read with ``allow_pickle=False``: arrays only, no code.

Layouts converted: Dense kernels are (in, out) and become (out, in); convolution kernels are
HWIO and become OIHW; the attention's query/key/value kernels are (D, heads, head dim) and
its output kernel (heads, head dim, D), flattened to D x D and stacked into timm's single
qkv projection; norm ``scale`` is torch's ``weight``. The classifier (``head``, 1000 classes
for ImageNet) and ``pre_logits`` are not taken: a fine-tuned MUSIQ starts from a zero
one-score head, as the official fine-tuning does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmark.models import ConfigError
from benchmark.weights import WeightFile

__all__ = ["IMAGENET", "official_state_dict", "load_official_npz"]

#: no sha256 could be computed for this file when the loader was written (it was not
#: reachable), so it is not pinned: fetch_weights never downloads it and uses a copy the user
#: placed in the cache; pin it here once the file's hash is known
IMAGENET = WeightFile(name="imagenet_pretrain.npz",
                      url="https://storage.googleapis.com/gresearch/musiq/imagenet_pretrain.npz",
                      sha256="", what="MUSIQ's official ImageNet checkpoint")

_ROOT = "opt/target/"
_UNIT = ("conv_proj", "gn_proj", "conv1", "gn1", "conv2", "gn2", "conv3", "gn3")


def _dense(kernel: np.ndarray, input_axes: int = 1) -> torch.Tensor:
    """A Flax (in..., out...) kernel whose first ``input_axes`` axes are inputs → (out, in)."""
    inputs = int(np.prod(kernel.shape[:input_axes]))
    return torch.from_numpy(np.ascontiguousarray(kernel.reshape(inputs, -1).T))


def _conv(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


def _norm(arrays: dict, path: str, target: str) -> dict[str, torch.Tensor]:
    return {f"{target}.weight": torch.from_numpy(arrays[f"{path}/scale"]),
            f"{target}.bias": torch.from_numpy(arrays[f"{path}/bias"])}


def official_state_dict(arrays: dict[str, np.ndarray], depth: int) -> dict[str, torch.Tensor]:
    """Our MUSIQ's state dict (without the head) from the official flat parameter arrays."""
    a = {k[len(_ROOT):]: v for k, v in arrays.items() if k.startswith(_ROOT)}
    out = {"stem.conv_root.weight": _conv(a["conv_root/kernel"]),
           **_norm(a, "gn_root", "stem.gn_root"),
           "stem.embedding.weight": _dense(a["embedding/kernel"]),
           "stem.embedding.bias": torch.from_numpy(a["embedding/bias"])}
    for name in _UNIT:
        path = f"block1/unit1/{name}"
        out.update(_norm(a, path, f"stem.unit.{name}") if name.startswith("gn")
                   else {f"stem.unit.{name}.weight": _conv(a[f"{path}/kernel"])})
    encoder = "Transformer"
    out["pos_embed"] = torch.from_numpy(a[f"{encoder}/posembed_input/pos_embedding"][0])
    out["scale_embed"] = torch.from_numpy(a[f"{encoder}/scaleembed_input/scale_embedding"][0])
    out["cls_token"] = torch.from_numpy(a[f"{encoder}/cls"])
    out.update(_norm(a, f"{encoder}/encoder_norm", "norm"))
    for index in range(depth):
        block, target = f"{encoder}/encoderblock_{index}", f"blocks.{index}"
        attention = f"{block}/MultiHeadDotProductAttention_1"
        out.update(_norm(a, f"{block}/LayerNorm_0", f"{target}.norm1"))
        out.update(_norm(a, f"{block}/LayerNorm_2", f"{target}.norm2"))
        out[f"{target}.attn.qkv.weight"] = torch.cat(
            [_dense(a[f"{attention}/{part}/kernel"]) for part in ("query", "key", "value")])
        out[f"{target}.attn.qkv.bias"] = torch.cat(
            [torch.from_numpy(a[f"{attention}/{part}/bias"].reshape(-1))
             for part in ("query", "key", "value")])
        out[f"{target}.attn.proj.weight"] = _dense(a[f"{attention}/out/kernel"], input_axes=2)
        out[f"{target}.attn.proj.bias"] = torch.from_numpy(a[f"{attention}/out/bias"])
        for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            out[f"{target}.mlp.{fc}.weight"] = _dense(a[f"{block}/MlpBlock_3/{dense}/kernel"])
            out[f"{target}.mlp.{fc}.bias"] = torch.from_numpy(a[f"{block}/MlpBlock_3/{dense}/bias"])
    return out


def load_official_npz(path: Path, depth: int) -> dict[str, torch.Tensor]:
    """:func:`official_state_dict` of an official ``.npz``; a missing key names the file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise ConfigError(f"MUSIQ weights {path} are not a readable npz ({error})") from None
    try:
        return official_state_dict(arrays, depth)
    except KeyError as error:
        raise ConfigError(f"MUSIQ weights {path} lack the official key {_ROOT}{error.args[0]} "
                          f"(not a MUSIQ checkpoint of depth {depth}?)") from None
