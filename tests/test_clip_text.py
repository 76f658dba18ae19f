"""CLIP's text towers and the CLIP score, against OpenAI's CLIP code.

Reference values: ``tests/fixtures/text_clip_peers.npz``, written by
``tools/peers/make_text_fixtures.py``: clip-anytorch's ``clip.load(file, jit=False)`` of a traced
TorchScript archive holding stand-in weights of both towers (``tests/text_stand_in.py``) for
ViT-B/32 and ViT-L/14 at their real sizes, its own ``preprocess`` and ``clip.tokenize(...,
truncate=True)``, ``encode_image`` / ``encode_text``, and the CLIP score computed from those
embeddings in float64. imgdist reads the B/32 stand-in from a TorchScript archive, as a user passes
OpenAI's file (a plain state dict gives the same towers); the L/14 towers, at full size, take the
stand-in tensors from memory. Tolerance: 1e-5 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imgdist.errors import ImgdistError, WeightsError
from imgdist.extraction import backbones
from imgdist.extraction.backbones import clip
from imgdist.metrics.clip_score import HESSEL_SCALE, clip_score, clip_score_per_image
from text_stand_in import (CLIP_SCORE_PROMPTS, TEXT_ONLY_PROMPTS, builtin_photos, stand_in_state_dict, text_keys)
from vit_stand_in import FIXTURES, images_digest, save_torchscript, weights_digest

TOL = 1e-5
ARCHS = {"clip-vit-b32": "clip_b32_full", "clip-vit-l14": "clip_l14_full"}


def rel_err(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def peers():
    return dict(np.load(FIXTURES / "text_clip_peers.npz"))


@pytest.fixture(scope="module")
def photos(peers):
    images = builtin_photos()
    assert images_digest(images) == str(peers["images_sha256"])
    return images


@pytest.fixture(scope="module")
def b32_files(tmp_path_factory, peers):
    """The B/32 stand-in as an OpenAI-style TorchScript archive and as a plain state dict."""
    folder = tmp_path_factory.mktemp("clip_text")
    state = stand_in_state_dict("clip_b32_full")
    assert weights_digest(state) == str(peers["clip_b32_full_weights"])
    save_torchscript(state, folder / "clip_b32_full.pt")
    torch.save(state, folder / "clip_b32_state_dict.pt")
    return {"archive": folder / "clip_b32_full.pt", "state_dict": folder / "clip_b32_state_dict.pt"}


def _towers_from_memory(name: str, state: dict):
    """Both towers holding ``state`` directly: the L/14 parity checks the network at its full size
    while sparing the test a 0.9 GB file (the file path is the same code, checked on B/32)."""
    v = clip._VARIANTS[name]
    with torch.device("meta"):
        image, text = clip.CLIPVisual(v.config, v.embed_dim), clip.CLIPText(v.text)
    for tower in (image, text):
        tower.load_state_dict({k: state[k].float() for k in tower.state_dict()}, strict=True, assign=True)
    image.spec = clip.SPECS[name]
    return image.eval(), text.eval()


@pytest.fixture(scope="module")
def embeddings(b32_files, photos, peers):
    """name -> (image embeddings, text embeddings of CLIP_SCORE_PROMPTS, of TEXT_ONLY_PROMPTS, tokens)."""
    out = {}
    for name, arch in ARCHS.items():
        if name == "clip-vit-b32":  # as a user passes OpenAI's file with --weights
            image_tower = backbones.load_backbone(name, b32_files["archive"])
            text_tower = backbones.load_text_tower(name, b32_files["archive"])
        else:
            state = stand_in_state_dict(arch)
            assert weights_digest(state) == str(peers[f"{arch}_weights"])
            image_tower, text_tower = _towers_from_memory(name, state)
            del state
        with torch.inference_mode():
            count = len(peers[f"{arch}_image"])
            image = image_tower(image_tower.spec.preprocessing("openai")(photos[:count]))["pool"].numpy()
        text = text_tower.encode_prompts(CLIP_SCORE_PROMPTS)
        extra = text_tower.encode_prompts(TEXT_ONLY_PROMPTS)
        out[name] = (image, text.embeddings, extra.embeddings, extra.tokens)
        del image_tower, text_tower
    return out


# --------------------------------------------------------------------------------------------
# architecture


@pytest.mark.parametrize("name", list(clip.SPECS))
def test_both_towers_hold_exactly_openais_tensors(name):
    """Image and text tower together: every tensor of clip-anytorch's CLIP but ``logit_scale``."""
    v = clip._VARIANTS[name]
    with torch.device("meta"):
        towers = {**clip.CLIPVisual(v.config, v.embed_dim).state_dict(), **clip.CLIPText(v.text).state_dict()}
    arch = ARCHS.get(name, "clip_l14_full")  # ViT-L/14@336px has L/14's text tower
    expected = {k: shape for k, shape, _ in text_keys(arch) if k != "logit_scale" and not k.startswith("visual.")}
    ours = {k: tuple(t.shape) for k, t in towers.items() if not k.startswith("visual.")}
    assert ours == expected
    if name in ARCHS:
        expected_visual = {k: shape for k, shape, _ in text_keys(arch) if k.startswith("visual.")}
        assert {k: tuple(t.shape) for k, t in towers.items() if k.startswith("visual.")} == expected_visual


def test_every_clip_backbone_offers_its_text_tower():
    assert all(backbones.get_spec(n).text is not None for n in clip.SPECS)
    with pytest.raises(ImgdistError, match="backbone 'inception' has no text tower; choose from clip-vit-b32, "):
        backbones.load_text_tower("inception")


# --------------------------------------------------------------------------------------------
# parity with OpenAI's code


@pytest.mark.parametrize("name", list(ARCHS))
def test_image_and_text_embeddings_match_openais(name, embeddings, peers):
    arch = ARCHS[name]
    image, text, extra, tokens = embeddings[name]
    assert rel_err(image, peers[f"{arch}_image"]) < TOL
    assert rel_err(text, peers[f"{arch}_text"]) < TOL
    # the empty prompt, unicode / entities, a literal <|endoftext|> (pooled at its first end token,
    # as OpenAI's argmax does) and a prompt past 77 tokens (cut, end token kept last)
    assert rel_err(extra, peers[f"{arch}_text_extra"]) < TOL
    assert tokens.truncated.tolist() == [False, False, False, True]


@pytest.mark.parametrize("name", list(ARCHS))
def test_clip_score_matches_openais_per_image_and_mean(name, embeddings, peers):
    arch = ARCHS[name]
    image, text, _, _ = embeddings[name]
    per_image = clip_score_per_image(image, text[:len(image)])  # image i pairs with prompt i
    expected = peers[f"{arch}_per_image"]
    assert np.max(np.abs(per_image - expected) / expected) < TOL
    assert abs(clip_score(image, text[:len(image)]) - float(peers[f"{arch}_mean"])) / float(peers[f"{arch}_mean"]) < TOL
    # every image against every prompt (the stand-ins' scores are far from 0, so relative
    # differences are meaningful)
    rows, cols = np.meshgrid(np.arange(len(image)), np.arange(len(text)), indexing="ij")
    pairs = clip_score_per_image(image[rows.ravel()], text[cols.ravel()]).reshape(rows.shape)
    assert np.max(np.abs(pairs - peers[f"{arch}_scores"]) / peers[f"{arch}_scores"]) < TOL
    assert peers[f"{arch}_scores"].min() > 10


# --------------------------------------------------------------------------------------------
# weights files


def test_a_plain_state_dict_with_openais_names_gives_the_same_towers(b32_files, embeddings):
    from_archive = embeddings["clip-vit-b32"][1]
    tower = clip.build_text(b32_files["state_dict"], "clip-vit-b32")
    assert np.array_equal(tower.encode_prompts(CLIP_SCORE_PROMPTS).embeddings, from_archive)


def test_a_file_without_a_text_tower_is_refused(tmp_path, b32_files):
    state = {k: v for k, v in torch.load(b32_files["state_dict"], weights_only=True).items() if k.startswith("visual.")}
    path = tmp_path / "image-only.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"image-only\.pt: not CLIP ViT-B/32 text encoder \(clip-vit-b32\) weights: "
                                           r"it holds no token_embedding\.\*, positional_embedding\*"):
        clip.build_text(path, "clip-vit-b32")


def test_a_text_tower_of_another_size_is_refused(b32_files):
    with pytest.raises(WeightsError, match=r"clip_b32_full\.pt: not CLIP ViT-L/14 text encoder \(clip-vit-l14\) "
                                           r"weights: .*wrong shape key\(s\): positional_embedding \(file \(77, 512\), "
                                           r"model \(77, 768\)\)"):
        clip.build_text(b32_files["archive"], "clip-vit-l14")


def test_text_tower_checks_its_input():
    tower = clip.CLIPText(clip.TextConfig(width=64, depth=1, heads=1, embed_dim=32))
    with pytest.raises(ValueError, match=r"takes N x 77 token ids, got \(2, 10\)"):
        tower(torch.zeros(2, 10, dtype=torch.long))


# --------------------------------------------------------------------------------------------
# the pure function, against closed forms


def test_clip_score_closed_forms():
    image = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    text = np.array([[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0], [0.5, 0.5 * np.sqrt(3.0)], [3.0, 4.0]])
    # cos = 1, 0, -1 (clamped to 0), cos 60 deg = 0.5, 1 (scale-invariant)
    np.testing.assert_allclose(clip_score_per_image(image, text), [100.0, 0.0, 0.0, 50.0, 100.0], rtol=1e-14,
                               atol=1e-12)
    assert clip_score(image, text) == pytest.approx(250.0 / 5, rel=1e-14)
    assert clip_score(image, text, scale=HESSEL_SCALE) == pytest.approx(2.5 * 2.5 / 5, rel=1e-14)


@pytest.mark.parametrize("image, text, scale, message", [
    (np.ones((3, 4)), np.ones((2, 4)), 100, r"pair up row by row: shapes \(3, 4\) and \(2, 4\)"),
    (np.ones((2, 4)), np.ones((2, 5)), 100, "pair up row by row"),
    (np.ones(4), np.ones(4), 100, "image embeddings must be a 2-D array"),
    (np.array([[1.0, np.nan]]), np.ones((1, 2)), 100, "image embeddings contains NaN or infinity"),
    (np.ones((2, 2)), np.array([[1.0, 1.0], [0.0, 0.0]]), 100, "text embedding 1 is all zeros"),
    (np.ones((1, 2)), np.ones((1, 2)), 0, "scale must be a positive number, got 0"),
    (np.ones((0, 2)), np.ones((0, 2)), 100, "needs at least one image"),
])
def test_clip_score_refuses_bad_input(image, text, scale, message):
    with pytest.raises(ValueError, match=message):
        clip_score(image, text, scale=scale)
