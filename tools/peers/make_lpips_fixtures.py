"""Regenerate the LPIPS and DISTS parity fixtures with the reference packages themselves.

Run in the peers environment (lpips 0.1.4, dists-pytorch 0.1, torchvision; see DESIGN.md):

    /tmp/peers-venv/bin/python tools/peers/make_lpips_fixtures.py

It writes

* ``tests/fixtures/lpips_keys.json``: name and shape of every tensor of torchvision's
  ``alexnet().features``, ``vgg16().features`` and ``squeezenet1_1().features`` (``features.*``
  keys, what the published files hold besides the classifier), and of the state dicts of
  ``lpips.LPIPS(net=...)`` and ``DISTS_pytorch.DISTS_pt.DISTS()``. The stand-in weights generator
  ``tests/lpips_stand_in.py`` reads it.
* ``tests/fixtures/lpips_parity.npz``:

  - ``a__<group>``, ``b__<group>``: the image pairs, uint8 N x H x W x 3, in three size groups
    (64x64, 53x67, 40x96: square, odd and wide, the last near AlexNet's smallest size): crops of
    the photos that ship with imgdist against shifted, noised, blurred, brightened, flipped and
    other crops, an identical pair, flat images and noise;
  - ``lpips_<net>__<group>``: ``lpips.LPIPS(net=<net>)(im2tensor(a), im2tensor(b))`` per pair, one
    pair at a time, with the stand-in backbone loaded into the package's own torchvision network
    and the package's real v0.1 heads (``pretrained=True``, its ``weights/v0.1/<net>.pth``);
  - ``dists__<group>``: ``DISTS()(prepare_image(a), prepare_image(b))`` per pair, with
    torchvision's ``vgg16`` answering with the stand-in weights and the package's real
    alpha/beta (its ``weights.pt``);
  - ``heads_<net>_<k>``, ``dists_alpha``, ``dists_beta``: those real weights, for the tests;
  - ``lpips_buffer__<net>__<key>``, ``dists_buffer__<key>``: the packages' fixed tensors
    (LPIPS's scaling layer; DISTS's mean, std and L2-pooling filters), as their state dicts hold them.
"""

from __future__ import annotations

import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import lpips_stand_in as S  # noqa: E402

warnings.filterwarnings("ignore")  # torchvision's 'pretrained' deprecation notices

import lpips  # noqa: E402
import torchvision  # noqa: E402
from DISTS_pytorch import DISTS_pt  # noqa: E402

PHOTOS = ROOT / "src" / "imgdist" / "data"
GROUPS = {"64x64": (64, 64), "53x67": (53, 67), "40x96": (40, 96)}  # name -> (height, width)


def write_keys() -> None:
    def shapes(state):
        return [[k, list(v.shape)] for k, v in state.items()]

    out = {"torchvision": {arch: shapes({f"features.{k}": v for k, v in
                                         getattr(torchvision.models, arch)().features.state_dict().items()})
                           for arch in S.SEEDS},
           "lpips_state": {net: shapes(lpips.LPIPS(net=net, pnet_rand=True, verbose=False).state_dict())
                           for net in S.NET_ARCH},
           "dists_state": shapes(_dists(load_weights=False, backbone=torchvision.models.vgg16).state_dict())}
    S.KEYS.write_text(json.dumps(out, indent=1) + "\n")


def _stand_in_vgg16(*args, **kwargs):
    model = torchvision.models.vgg16()
    model.features.load_state_dict({k.removeprefix("features."): v for k, v in S.stand_in_features("vgg16").items()})
    return model


def _dists(load_weights=True, backbone=None):
    # the package calls torchvision's vgg16(pretrained=True), which would download; answer with
    # the stand-in weights instead (or an untrained network, for the key names only).
    # load_weights=True reads alpha/beta from sys.prefix/weights.pt, where the wheel installs them.
    # (DISTS_pt.models is torchvision.models itself: replaced by a namespace, not patched)
    DISTS_pt.models = types.SimpleNamespace(vgg16=(lambda *args, **kwargs: backbone()) if backbone else _stand_in_vgg16)
    return DISTS_pt.DISTS(load_weights=load_weights).eval()


def _photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


def _crop(image, y, x, h, w):
    return np.ascontiguousarray(image[y:y + h, x:x + w])


def make_pairs(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of one size: a crop against changed copies and other images."""
    rng = np.random.default_rng(seed)
    cat, astronaut, coffee = _photo("chelsea.jpg"), _photo("astronaut.jpg"), _photo("coffee.jpg")
    # the photos shrunk so that a crop shows a good part of them
    cat, astronaut, coffee = (np.asarray(Image.fromarray(p).resize((p.shape[1] // 2, p.shape[0] // 2), Image.LANCZOS))
                              for p in (cat, astronaut, coffee))
    base = _crop(cat, 20, 30, h, w)
    shifted = _crop(cat, 20, 31, h, w)
    noised = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(base).filter(ImageFilter.GaussianBlur(1.5)))
    brighter = np.clip(base.astype(int) + 30, 0, 255).astype(np.uint8)
    other_crop = _crop(cat, 5, 10, h, w)
    face = _crop(astronaut, 15, 20, h, w)
    cup = _crop(coffee, 30, 50, h, w)
    flat_a = np.full((h, w, 3), 90, np.uint8)
    flat_b = np.full((h, w, 3), 170, np.uint8)
    noise_a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    noise_b = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    pairs = [(base, shifted), (base, noised), (base, blurred), (base, brighter), (base, base[:, ::-1]),
             (base, other_crop), (base, face), (face, cup), (base, base.copy()), (flat_a, flat_b),
             (noise_a, noise_b), (cup, np.asarray(Image.fromarray(cup).filter(ImageFilter.GaussianBlur(3))))]
    return (np.stack([np.ascontiguousarray(a) for a, _ in pairs]),
            np.stack([np.ascontiguousarray(b) for _, b in pairs]))


def lpips_model(net: str):
    model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)  # real v0.1 heads, untrained backbone
    backbone = S.stand_in_features(S.NET_ARCH[net])
    model.net.load_state_dict({k: backbone[S.slice_key_to_torchvision(k)] for k in model.net.state_dict()},
                              strict=True)
    return model.eval()


def main() -> None:
    write_keys()
    fixture = {}
    for net in S.NET_ARCH:
        heads = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth", map_location="cpu")
        for k in range(len(heads)):
            fixture[f"heads_{net}_{k}"] = heads[f"lin{k}.model.1.weight"].numpy()
        state = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).state_dict()
        for key in ("scaling_layer.shift", "scaling_layer.scale"):
            fixture[f"lpips_buffer__{net}__{key}"] = state[key].numpy()
    dists = _dists()
    fixture["dists_alpha"] = dists.alpha.detach().numpy()
    fixture["dists_beta"] = dists.beta.detach().numpy()
    for key, value in dists.state_dict().items():
        if key in ("mean", "std") or key.endswith(".filter"):
            fixture[f"dists_buffer__{key}"] = value.numpy()
    models = {net: lpips_model(net) for net in S.NET_ARCH}
    for seed, (group, (h, w)) in enumerate(GROUPS.items()):
        a, b = make_pairs(h, w, seed)
        if group == "40x96":  # the smallest group keeps half the pairs: fixtures stay small
            a, b = a[::2], b[::2]
        fixture[f"a__{group}"], fixture[f"b__{group}"] = a, b
        with torch.no_grad():
            for net, model in models.items():
                fixture[f"lpips_{net}__{group}"] = np.array(
                    [model(lpips.im2tensor(x), lpips.im2tensor(y)).item() for x, y in zip(a, b)])
            fixture[f"dists__{group}"] = np.array(
                [dists(DISTS_pt.prepare_image(Image.fromarray(x)), DISTS_pt.prepare_image(Image.fromarray(y))).item()
                 for x, y in zip(a, b)])
        print(group, {k: np.round(v, 4).tolist() for k, v in fixture.items() if k.endswith(group) and "__" in k
                      and not k.startswith(("a__", "b__"))})
    np.savez_compressed(S.PARITY, **fixture)
    print(f"wrote {S.KEYS} and {S.PARITY} ({S.PARITY.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
