"""CLIP image encoders: architecture, TorchScript archives read without running them, and parity.

Reference values come from the reference code (``tests/fixtures/vit_peers.npz``, written by
``tools/peers/make_vit_fixtures.py``): torch-fidelity 0.4's ``FeatureExtractorCLIP`` given the
stand-in as a TorchScript file, clip-anytorch's ``clip.load`` + its own ``preprocess`` (OpenAI's
code), and the CMMD reference code's image path, all on the same stand-in weights
(``tests/vit_stand_in.py``) and images. Tolerance: ``max |Δ| / max |ref| <= 1e-5``.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch

from imgdist.extraction import backbones
from imgdist.extraction.backbones import clip
from imgdist.extraction.backbones.checkpoint import is_torchscript_archive, read_tensors
from imgdist.errors import WeightsError
from vit_stand_in import (FIXTURES, KEYS_FILE, Holder, images_digest, parity_images, raw_inputs, save_torchscript,
                          stand_in_state_dict, vit_keys, vit_peers, weights_digest)

TOL = 1e-5
ARCHS = {"clip-vit-b32": "clip_b32", "clip-vit-l14": "clip_l14", "clip-vit-l14-336": "clip_l14_336"}
B32_MODES = ("tf", "openai", "cmmd")
#: the entries of vit_peers.npz these tests read (the ``peers`` fixture holds no others)
PEER_KEYS = frozenset(
    ["images_sha256", "weights_clip_b32", "weights_clip_l14_336", "clip_b32_raw224", "clip_b32_cleanfid",
     "clip_l14_336_raw336", "clip_l14_336_cmmd"] + [f"clip_b32_{mode}" for mode in B32_MODES])


def rel_err(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def peers():
    return vit_peers(PEER_KEYS)


@pytest.fixture(scope="module")
def images(peers):
    images = parity_images()
    assert images_digest(images) == str(peers["images_sha256"])
    return images


@pytest.fixture(scope="module")
def stand_in(peers):
    state = stand_in_state_dict("clip_b32")
    assert weights_digest(state) == str(peers["weights_clip_b32"])
    return state


@pytest.fixture(scope="module")
def archive(tmp_path_factory, stand_in):
    path = tmp_path_factory.mktemp("clip") / "ViT-B-32.pt"
    save_torchscript(stand_in, path)
    return path


@pytest.fixture(scope="module")
def model(archive):
    return clip.build(archive, "clip-vit-b32")


def features(model, images, mode: str) -> np.ndarray:
    with torch.no_grad():
        return model(model.spec.preprocessing(mode)(images))["pool"].numpy()


# --------------------------------------------------------------------------------------------
# architecture


@pytest.mark.parametrize("name", list(ARCHS))
def test_image_tower_matches_openai_keys_and_shapes(name):
    v = clip._VARIANTS[name]
    with torch.device("meta"):
        model = clip.CLIPVisual(v.config, v.embed_dim)
    expected = {k: shape for k, shape, _ in vit_keys(ARCHS[name]) if k.startswith("visual.")}
    assert {k: tuple(t.shape) for k, t in model.state_dict().items()} == expected


def test_layer_norm_epsilon_is_openais():
    """As for DINOv2, compared with the epsilons of clip-anytorch's image tower (the features
    move by ~4e-6 of their size between 1e-5 and 1e-6)."""
    reference = json.loads(KEYS_FILE.read_text())["layer_norm_eps"]
    for name, arch in ARCHS.items():
        v = clip._VARIANTS[name]
        with torch.device("meta"):
            model = clip.CLIPVisual(v.config, v.embed_dim)
        ours = {model.cfg.eps} | {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
        assert sorted(ours) == reference[arch] == [1e-5], name


def test_sizes_and_weights_specs():
    assert {n: (s.feature_dim, s.input_size, s.default_mode) for n, s in clip.SPECS.items()} == {
        "clip-vit-b32": (512, 224, "openai"), "clip-vit-l14": (768, 224, "openai"),
        "clip-vit-l14-336": (768, 336, "cmmd")}
    for name, spec in clip.SPECS.items():
        assert backbones.get_spec(name) is spec and set(spec.modes) == {"openai", "cmmd", "tf"}
        w = spec.weights
        # OpenAI's URLs carry the file's SHA-256 as their second-to-last component
        assert w.url.startswith("https://openaipublic.azureedge.net/clip/models/")
        assert w.url.split("/")[-2] == w.sha256 and len(w.sha256) == 64 and w.url.endswith("/" + w.filename)
        # the file holds at least the float16 image tower (and the text tower besides)
        visual = sum(int(np.prod(s)) for k, s, _ in vit_keys(ARCHS[name]) if k.startswith("visual."))
        assert w.size > 2 * visual


# --------------------------------------------------------------------------------------------
# TorchScript archives


def test_reads_an_openai_style_traced_archive_exactly_as_torch_does():
    """``clip_tiny_traced.pt``: clip-anytorch's CLIP, float16, torch.jit.trace + save; the digests
    are of ``torch.jit.load(file).state_dict()``, computed by the fixture script."""
    path = FIXTURES / "clip_tiny_traced.pt"
    expected = json.loads((FIXTURES / "clip_tiny_traced.json").read_text())["tensors"]
    assert is_torchscript_archive(path)
    got = read_tensors(path)
    assert sorted(got) == sorted(expected)
    for name, (shape, dtype, digest) in expected.items():
        t = got[name]
        assert list(t.shape) == shape and str(t.dtype) == f"torch.{dtype}", name
        assert hashlib.sha256(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest() == digest


def test_archives_are_read_without_torchscript_or_pickle_code(monkeypatch, archive, stand_in):
    def refuse(*args, **kwargs):
        raise AssertionError("TorchScript loader called")

    monkeypatch.setattr(torch.jit, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    got = read_tensors(archive)
    assert set(got) == set(stand_in)
    assert all(torch.equal(got[k], v) and got[k].dtype == v.dtype for k, v in stand_in.items())


def test_an_archive_whose_pickle_wants_to_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    payload = (b"\x80\x02cbuiltins\nexec\n(X" + len(f"open({str(marker)!r}, 'w')").to_bytes(4, "little")
               + f"open({str(marker)!r}, 'w')".encode() + b"tR.")
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", payload)
        z.writestr("evil/constants.pkl", pickle.dumps(()))
    with pytest.raises(WeightsError) as info:
        read_tensors(path)
    assert str(path) in str(info.value) and "builtins.exec" in str(info.value)
    assert not marker.exists()


def test_truncated_archive_and_foreign_checkpoints(tmp_path, archive):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(archive.read_bytes()[:5_000_000])
    with pytest.raises(WeightsError) as info:
        clip.build(cut, "clip-vit-b32")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{cut}: truncated: ")
    assert message.endswith("; expected CLIP ViT-B/32 image encoder (clip-vit-b32) weights")

    dino = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 384), "pos_embed": torch.zeros(1, 1370, 384)}, dino)
    with pytest.raises(WeightsError) as info:
        clip.build(dino, "clip-vit-b32")
    message = str(info.value)
    assert "\n" not in message and str(dino) in message
    assert "not CLIP ViT-B/32 image encoder (clip-vit-b32) weights" in message and "cls_token" in message


def test_a_b32_file_is_not_an_l14_encoder(archive):
    with pytest.raises(WeightsError) as info:
        clip.build(archive, "clip-vit-l14")
    message = str(info.value)
    assert str(archive) in message and "CLIP ViT-L/14 image encoder" in message
    assert "missing key(s)" in message and "wrong shape" in message


def test_the_text_tower_is_ignored_but_the_image_tower_is_checked(tmp_path, stand_in):
    state = dict(stand_in)
    state["visual.extra_token"] = torch.zeros(3)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"unexpected key\(s\): visual\.extra_token"):
        clip.build(path, "clip-vit-b32")


# --------------------------------------------------------------------------------------------
# parity


def test_network_matches_clip_anytorch(model, peers):
    with torch.no_grad():
        assert rel_err(model(raw_inputs(224))["pool"].numpy(), peers["clip_b32_raw224"]) < TOL


def test_weights_load_as_float32_from_float16(model, stand_in):
    name = "visual.transformer.resblocks.0.attn.in_proj_weight"
    w = model.state_dict()[name]
    assert w.dtype == torch.float32 and stand_in[name].dtype == torch.float16
    assert torch.equal(w, stand_in[name].float())


@pytest.mark.parametrize("mode", B32_MODES)
def test_modes_match_their_references(model, images, peers, mode):
    """tf: torch-fidelity's clip-vit-b-32; openai: clip.load's preprocess + encode_image; cmmd: the
    CMMD reference code's crop and resize."""
    assert rel_err(features(model, images, mode), peers[f"clip_b32_{mode}"]) < TOL


def test_openai_mode_is_clean_fids_clip_fid(model, images, peers):
    """clean-fid's ``clip_vit_b_32`` (its loader, ``img_preprocess_clip`` and ``CLIP_fx``, on a
    CPU) computes what mode ``openai`` computes."""
    assert rel_err(features(model, images, "openai"), peers["clip_b32_cleanfid"]) < TOL


@pytest.mark.slow
def test_cmmd_encoder_matches_clip_anytorch(images, peers):
    """ViT-L/14@336px, the CMMD encoder, trimmed so that it runs by default: one batch of two, a
    raw input (the network alone) and the first photograph through the CMMD reference code's crop
    and resize. All six images in every mode are checked on ViT-B/32, which shares the code. Built
    on the meta device, like ``clip.build`` with a file: no random initialisation to overwrite."""
    from imgdist.extraction.backbones.base import check_state_dict

    state = stand_in_state_dict("clip_l14_336")
    assert weights_digest(state) == str(peers["weights_clip_l14_336"])
    variant = clip._VARIANTS["clip-vit-l14-336"]
    with torch.device("meta"):
        model = clip.CLIPVisual(variant.config, variant.embed_dim)
    check_state_dict(model, state, "stand-in", "clip-vit-l14-336")
    model.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)
    model.spec = clip.SPECS["clip-vit-l14-336"]
    model.eval().requires_grad_(False)
    batch = torch.cat([raw_inputs(336, 1), model.spec.preprocessing("cmmd")(images[:1])])
    with torch.no_grad():
        ours = model(batch)["pool"].numpy()
    assert rel_err(ours[:1], peers["clip_l14_336_raw336"]) < TOL
    assert rel_err(ours[1:], peers["clip_l14_336_cmmd"][:1]) < TOL


def test_crops_differ_only_on_non_square_images(peers):
    openai, cmmd = peers["clip_b32_openai"], peers["clip_b32_cmmd"]
    assert np.array_equal(openai[3:], cmmd[3:])  # 28 x 28 Fashion-MNIST: both a plain resize
    assert rel_err(openai[:3], cmmd[:3]) > 100 * TOL  # photos: crop-then-resize vs resize-then-crop
    assert rel_err(peers["clip_b32_tf"], openai) > 100 * TOL


def test_input_resolution_is_enforced(model):
    with pytest.raises(ValueError, match="takes 224x224 inputs, got 448x448"):
        model(torch.zeros(1, 3, 448, 448))


# --------------------------------------------------------------------------------------------
# any backbone: a file that is not weights


EXPECTED_ARCH = {"inception": "FID Inception", **{f"efficientnet-lite{i}": f"efficientnet-lite{i}" for i in range(3)},
                 **{f"dinov2-vit-{a}14": f"DINOv2 ViT-{a.upper()}/14 (dinov2-vit-{a}14)" for a in "sblg"},
                 "clip-vit-b32": "CLIP ViT-B/32 image encoder (clip-vit-b32)",
                 "clip-vit-l14": "CLIP ViT-L/14 image encoder (clip-vit-l14)",
                 "clip-vit-l14-336": "CLIP ViT-L/14@336px image encoder (clip-vit-l14-336)",
                 "openclip-vit-b32": "OpenCLIP ViT-B-32 laion2b_s34b_b79k image encoder (openclip-vit-b32)",
                 "openclip-vit-h14": "OpenCLIP ViT-H-14 laion2b_s32b_b79k image encoder (openclip-vit-h14)",
                 "openclip-vit-bigg14": "OpenCLIP ViT-bigG-14 laion2b_s39b_b160k image encoder (openclip-vit-bigg14)"}


@pytest.mark.parametrize("name", [s.name for s in backbones.list_specs() if s.weights is not None])
def test_an_image_passed_as_weights_is_named_not_a_weights_file(tmp_path, name):
    from PIL import Image

    path = tmp_path / "corrupt.png"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    with pytest.raises(WeightsError) as info:
        backbones.load_backbone(name, path, progress=False)
    message = str(info.value)
    assert message == f"{path}: not a weights file (it is a PNG image); expected {EXPECTED_ARCH[name]} weights"


def test_a_zip_of_images_is_not_a_weights_file(tmp_path):
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.png", b"\x89PNG...")
    with pytest.raises(WeightsError, match=r"images\.zip: not a weights file \(a zip archive without PyTorch"):
        clip.build(path, "clip-vit-b32")


def test_pickles_holding_objects_are_refused_without_unsafe_advice(tmp_path):
    path = tmp_path / "objects.pth"
    torch.save({"weights": torch.zeros(2), "config": Holder()}, path)
    with pytest.raises(WeightsError) as info:
        clip.build(path, "clip-vit-b32")
    message = str(info.value)
    assert "weights_only" not in message and "trust" not in message and "\n" not in message
    assert str(path) in message and "Python objects" in message and "never runs code" in message


# --------------------------------------------------------------------------------------------
# crop geometry of the recipes (the parity tests above check the pixels on real photos)


def test_crop_geometry():
    from imgdist.extraction.preprocess import Preprocessing, center_square, shorter_side_size

    grid = np.arange(5 * 8).reshape(5, 8)
    assert np.array_equal(center_square(grid), grid[:, 1:6])  # (8 - 5) // 2 = 1: rounded down
    assert np.array_equal(center_square(grid.T), grid.T[1:6, :])
    # torchvision's Resize(int): the longer side becomes int(size * long / short)
    assert shorter_side_size(427, 640, 224) == (224, 335)
    assert shorter_side_size(640, 427, 224) == (335, 224)
    assert shorter_side_size(100, 100, 224) == (224, 224)
    with pytest.raises(ValueError, match="8-bit"):
        Preprocessing("x", 224, "pil-bicubic-rgb", pre_scale=1 / 255)
    with pytest.raises(ValueError, match="crop needs a target size"):
        Preprocessing("x", None, "none", crop="center")
    with pytest.raises(ValueError, match="unknown crop"):
        Preprocessing("x", 224, "bilinear", crop="middle")


def test_resize_center_crop_takes_the_middle_of_a_wide_image():
    """A 100 x 300 image whose left and right thirds are black: after shorter-side resize and
    centre crop only the white middle remains (as with Resize + CenterCrop)."""
    from imgdist.extraction.preprocess import Preprocessing

    image = np.zeros((100, 300, 3), np.uint8)
    image[:, 100:200] = 255
    for kernel in ("pil-bicubic-rgb", "bicubic-antialias", "tf1-bilinear"):
        x = Preprocessing("x", 50, kernel, crop="resize-center").resize_image(image)
        assert x.shape == (3, 50, 50)
        assert float(x[:, :, 5:45].min()) > 250, kernel
