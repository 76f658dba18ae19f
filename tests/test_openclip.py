"""OpenCLIP towers (ViT-B-32, ViT-H-14, ViT-bigG-14 on LAION-2B) against open_clip's own code.

References (``tools/peers/make_text_fixtures.py``, open-clip-torch 3.3.0):

* ``fixtures/text_keys.json``: every tensor name and shape of open_clip's ``CLIP`` for the three
  real configurations (what their published weight files hold), the configurations themselves and
  the pretrained tags' preprocessing settings;
* ``fixtures/openclip_peers.npz``: ``encode_image`` (fixed inputs, and the photos through
  open_clip's own eval transform) and ``encode_text`` (open_clip's tokenizer) of two small
  configurations with stand-in weights (``tests/text_stand_in.py``): one like B-32, one with
  bigG's quirks (head width 52, FFN ratio 4.9231, a text head count that is not width / 64).

imgdist reads the first stand-in from a ``.safetensors`` file and the second from a ``torch.save``
file, the two formats of the pinned weights. Tolerance: 1e-5 relative.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from imgdist.errors import WeightsError
from imgdist.extraction.backbones import clip, get_spec, openclip
from imgdist.extraction.tokenizer import OPENCLIP_SPECIALS
from text_stand_in import TEXT_KEYS_FILE, builtin_photos, stand_in_state_dict, text_keys
from vit_stand_in import FIXTURES, images_digest, raw_inputs, weights_digest

TOL = 1e-5
REAL = {"openclip-vit-b32": "openclip_b32", "openclip-vit-h14": "openclip_h14", "openclip-vit-bigg14": "openclip_bigg14"}
SMALL = {"openclip_small_a": "safetensors", "openclip_small_b": "bin"}


def rel_err(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def variant_of(config: dict, name: str = "small") -> openclip.OpenCLIPVariant:
    """An imgdist variant from an open_clip model configuration, by open_clip's own rules (heads =
    width / head_width, FFN = int(width * mlp_ratio), GELU unless quick_gelu)."""
    v, t = config["vision_cfg"], config["text_cfg"]
    assert not config.get("quick_gelu", False)
    return openclip.OpenCLIPVariant(
        name=name, label=name, width=v["width"], depth=v["layers"], heads=v["width"] // v.get("head_width", 64),
        hidden=int(v["width"] * v.get("mlp_ratio", 4.0)), patch=v["patch_size"], resolution=v["image_size"],
        embed_dim=config["embed_dim"],
        text=clip.TextConfig(width=t["width"], depth=t["layers"], heads=t["heads"], embed_dim=config["embed_dim"],
                             act="gelu", context=t["context_length"], vocab=t["vocab_size"],
                             specials=OPENCLIP_SPECIALS))


@pytest.fixture(scope="module")
def keys_file():
    return json.loads(TEXT_KEYS_FILE.read_text())


@pytest.fixture(scope="module")
def peers():
    return dict(np.load(FIXTURES / "openclip_peers.npz"))


# --------------------------------------------------------------------------------------------
# the real configurations


@pytest.mark.parametrize("name", list(REAL))
def test_real_configurations_are_open_clips(name, keys_file):
    registered = openclip._VARIANTS[name]
    reference = variant_of(keys_file["openclip_configs"][REAL[name]], name)
    for field in ("width", "depth", "heads", "hidden", "patch", "resolution", "embed_dim", "text"):
        assert getattr(registered, field) == getattr(reference, field), field


@pytest.mark.parametrize("name", list(REAL))
def test_real_configurations_hold_exactly_open_clips_tensors(name):
    v = openclip._VARIANTS[name]
    with torch.device("meta"):
        towers = {**clip.CLIPVisual(v.config, v.embed_dim).state_dict(), **clip.CLIPText(v.text).state_dict()}
    expected = {k: shape for k, shape, _ in text_keys(REAL[name]) if k != "logit_scale"}
    assert {k: tuple(t.shape) for k, t in towers.items()} == expected


def test_preprocessing_is_open_clips_for_the_laion_tags(keys_file):
    for name, model in (("openclip-vit-b32", "ViT-B-32"), ("openclip-vit-h14", "ViT-H-14"),
                        ("openclip-vit-bigg14", "ViT-bigG-14")):
        cfg = keys_file["openclip_pretrained"][model]
        assert (cfg["interpolation"], cfg["resize_mode"]) == ("bicubic", "shortest")
        mode = get_spec(name).preprocessing()
        assert (mode.name, mode.size, mode.resize, mode.crop) == ("openclip", 224, "pil-bicubic-rgb", "resize-center")
        assert tuple(mode.mean) == tuple(cfg["mean"]) and tuple(mode.std) == tuple(cfg["std"])


def test_pinned_weights_fit_the_architectures():
    """A float32 file holds 4 bytes per parameter plus its container's overhead: the pinned sizes
    (from the public manifests) agree with the architectures open_clip defines."""
    for name, arch in REAL.items():
        w = get_spec(name).weights
        assert len(w.sha256) == 64 and int(w.sha256, 16) >= 0
        assert w.url.startswith("https://huggingface.co/laion/CLIP-ViT-") and w.license
        params = sum(int(np.prod(shape)) for _, shape, _ in text_keys(arch))
        if w.size is not None:
            overhead = w.size - 4 * params
            assert 0 < overhead < 2_000_000, (name, overhead)
    assert get_spec("openclip-vit-b32").weights.url.endswith(
        "/resolve/1a25a446712ba5ee05982a381eed697ef9b435cf/open_clip_model.safetensors")
    assert get_spec("openclip-vit-bigg14").weights.size is None  # not stated publicly: SHA-256 only


def test_b32_pin_is_a_safetensors_file_of_exactly_open_clips_tensors():
    """safetensors' layout (8-byte length, compact JSON header with sorted names, padded with spaces
    to 8 bytes, then the data in name order): open_clip's ViT-B-32 tensors in float32 with
    ``{"format": "pt"}`` metadata take exactly the pinned size, byte for byte."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, dtype in sorted(text_keys("openclip_b32")):
        assert dtype == "float32"
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"))
    assert 8 + len(text) + (-len(text)) % 8 + offset == get_spec("openclip-vit-b32").weights.size == 605_143_316


# --------------------------------------------------------------------------------------------
# parity on small configurations


@pytest.fixture(scope="module")
def small_models(tmp_path_factory, keys_file, peers):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("openclip")
    models = {}
    for arch, kind in SMALL.items():
        state = stand_in_state_dict(arch)
        assert weights_digest(state) == str(peers[f"{arch}_weights"])
        path = folder / f"{arch}.{kind}"
        save_file(state, str(path)) if kind == "safetensors" else torch.save(state, path)
        v = variant_of(keys_file["openclip_configs"][arch])
        models[arch] = (openclip.build_image_tower(v, path),
                        clip.build_text_tower(v.text, path, f"OpenCLIP {arch} text encoder"))
    return models


@pytest.mark.parametrize("arch", list(SMALL))
def test_image_embeddings_match_open_clip(arch, small_models, peers):
    image_tower, _ = small_models[arch]
    photos = builtin_photos()
    assert images_digest(photos) == str(peers["images_sha256"])
    preprocessing = get_spec("openclip-vit-b32").preprocessing("openclip")
    with torch.inference_mode():
        raw = image_tower(raw_inputs(224, 2))["pool"].numpy()
        image = image_tower(preprocessing(photos))["pool"].numpy()
    assert rel_err(raw, peers[f"{arch}_raw"]) < TOL
    assert rel_err(image, peers[f"{arch}_image"]) < TOL


@pytest.mark.parametrize("arch", list(SMALL))
def test_text_embeddings_match_open_clip(arch, small_models, peers):
    _, text_tower = small_models[arch]
    prompts = [str(p) for p in peers["prompts"]]
    assert any("<end_of_text>" in p for p in prompts)  # OpenCLIP's own special-token strings
    assert rel_err(text_tower.encode_prompts(prompts).embeddings, peers[f"{arch}_text"]) < TOL


def test_a_damaged_safetensors_file_is_one_line(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "cut.safetensors"
    save_file({"visual.proj": torch.ones(8, 4)}, str(path))
    path.write_bytes(path.read_bytes()[:-10])
    v = openclip._VARIANTS["openclip-vit-b32"]
    with pytest.raises(WeightsError) as info:
        openclip.build_image_tower(v, path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read this safetensors file (") and "\n" not in message
    assert message.endswith("fetch it again; expected OpenCLIP ViT-B-32 laion2b_s34b_b79k image encoder "
                             "(openclip-vit-b32) weights")
