"""Regenerate the DINOv2 / CLIP parity fixtures with the reference code itself.

Run in the peers environment (the authors' ``dinov2`` package, clip-anytorch, torch-fidelity 0.4,
clean-fid, torchvision; see DESIGN.md):

    /work/peers-venv/bin/python tools/peers/make_vit_fixtures.py [--large]

It writes

* ``tests/fixtures/vit_keys.json``: name, shape and dtype of every tensor of the reference models
  (and the epsilon of their LayerNorms):
  ``dinov2.models.vision_transformer.vit_small/base/large/giant2(patch_size=14, img_size=518,
  init_values=1.0, block_chunks=0)`` (``ffn_layer='swiglufused'`` for giant2), exactly how torch
  hub builds the released DINOv2 backbones; a two-block SwiGLU DINOv2 (width 96) for the SwiGLU
  check; and the image tower (``visual.*``) of clip-anytorch's ``CLIP`` for ViT-B/32, ViT-L/14 and
  ViT-L/14@336px after ``convert_weights`` (the dtypes OpenAI's files have). The stand-in
  weights generator ``tests/vit_stand_in.py`` reads it.
* ``tests/fixtures/vit_peers.npz``: features the reference code computes with the stand-in weights
  on the parity images (``tests/vit_stand_in.parity_images``: three photographs, three
  Fashion-MNIST images) and on fixed random network inputs:

  - ``dinov2_{s,b}_raw{224,126}`` (+ ``dinov2_s_raw518``, no resampling): the authors'
    ``DinoVisionTransformer`` on ``raw_inputs(size)``; ``dinov2_swiglu_raw224``: the SwiGLU one;
  - ``dinov2_{s,b}_tf``: torch-fidelity 0.4's ``FeatureExtractorDinoV2`` (its uint8 -> TF1
    bilinear 224 -> ImageNet normalisation), with ``torch.hub.load`` answering with the authors'
    model holding the stand-in weights (the hub would fetch the same code; there is no network);
  - ``dinov2_{s,b}_dgm``: dgm-eval's DINOv2 transform, ``Resize((224, 224), BICUBIC)`` on the PIL
    image, ``ToTensor``, ``Normalize(ImageNet)`` (torchvision), then the authors' model;
  - ``dinov2_{s,b}_edm2``: EDM2's ``DINOv2Detector`` operations in its default ``resize_mode='torch'``
    (bicubic with antialiasing on float, / 255, ImageNet mean/std), then the authors' model;
  - ``dinov2_{s,b}_clean``: clean-fid's ``make_resizer('PIL', False, 'bicubic', (224, 224))`` (the
    resize dgm-eval uses with ``clean_resize``), / 255, ImageNet normalisation, the authors' model;
  - with ``--large`` also ``dinov2_l_raw224`` and ``dinov2_l_tf`` (ViT-L/14, slow on a CPU);
  - ``clip_b32_raw224``: clip-anytorch's ``VisionTransformer`` on ``raw_inputs(224)``;
  - ``clip_b32_tf``: torch-fidelity's ``FeatureExtractorCLIP('clip-vit-b-32')`` given the stand-in
    as a TorchScript file (``feature_extractor_weights_path``), exactly as it takes OpenAI's file;
  - ``clip_b32_openai``: ``clip.load(<that file>, jit=False)`` and its own ``preprocess`` (shorter
    side bicubic, centre crop, ToTensor, Normalize), ``encode_image``;
  - ``clip_b32_cmmd``: the CMMD reference code's image path (``io_util._center_crop_and_resize``:
    largest centred square, PIL bicubic to the input size; float32 / 255; CLIP mean/std), then
    ``encode_image`` of the same model;
  - ``clip_b32_cleanfid``: clean-fid's ``clip_vit_b_32`` (CLIP-FID): its own ``get_files_features``
    on the parity images saved as PNG, with ``custom_fn_resize=img_preprocess_clip`` and its
    ``CLIP_fx`` extractor, whose ``clip.load("ViT-B/32")`` is answered with ``clip.load(<that
    file>, jit=False)`` on the CPU (what it loads from OpenAI's file; there is no network);
  - with ``--large`` also ``clip_l14_336_raw336`` and ``clip_l14_336_cmmd``: clip-anytorch's
    ``VisionTransformer`` of ViT-L/14@336px (the CMMD encoder) holding its stand-in image tower,
    on ``raw_inputs(336, 1)`` and on the CMMD reference code's 336-px inputs of the parity images;
  - ``e2e_{dinov2,clip}_{fid,kid_mean,kid_std}``: ``torch_fidelity.calculate_metrics(input1=REAL,
    input2=FAKE, feature_extractor='dinov2-vit-s-14' | 'clip-vit-b-32', fid=True, kid=True,
    kid_subset_size=E2E_COUNT, kid_subsets=E2E_KID_SUBSETS)`` on two Fashion-MNIST PNG folders
    (``tests/vit_stand_in.write_e2e_folders``); the DINOv2 run gets the stand-in through the hub
    as above, the CLIP run through ``feature_extractor_weights_path``;
  - digests of the weights and images used, and the package versions.
* ``tests/fixtures/clip_tiny_traced.pt`` and ``clip_tiny_traced.json``: a tiny clip-anytorch CLIP
  in float16, saved with ``torch.jit.trace`` + ``save`` the way OpenAI's files are TorchScript
  archives, and the SHA-256 of every tensor of ``torch.jit.load(file).state_dict()`` -- the
  reference for reading such archives without running them.

No imgdist code is used: the fixtures are an independent reference for ``tests/test_dinov2.py``,
``tests/test_clip.py`` and ``tests/test_vit_e2e.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import warnings
from functools import partial
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT / "tests"))

import vit_stand_in as S  # noqa: E402

logging.disable(logging.WARNING)  # dinov2's "xFormers not available"
warnings.filterwarnings("ignore")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
E2E_KID_SUBSETS = 5
TINY_SWIGLU = dict(embed_dim=96, depth=2, num_heads=4)
CLIP_TEXT = dict(context_length=77, vocab_size=100, transformer_width=64, transformer_heads=1,
                 transformer_layers=1)  # a minimal text tower: only text_projection's width matters
CLIP_VISION = {"b32": (512, 224, 12, 768, 32), "l14": (768, 224, 24, 1024, 14),
               "l14_336": (768, 336, 24, 1024, 14)}  # embed_dim, resolution, layers, width, patch


# --- reference models -------------------------------------------------------------------------

def dinov2_model(arch: str, device=None):
    """The authors' backbone with torch hub's arguments for the released checkpoints."""
    from dinov2.layers import MemEffAttention, NestedTensorBlock
    from dinov2.models import vision_transformer as vt

    common = dict(patch_size=14, img_size=518, init_values=1.0, block_chunks=0)
    real_linspace = torch.linspace
    if device == "meta":  # its stochastic-depth schedule calls .item(); keep that on the CPU
        torch.linspace = lambda *a, **k: real_linspace(*a, **{**k, "device": "cpu"})
    try:
        with torch.device(device or "cpu"):
            if arch == "swiglu":
                return vt.DinoVisionTransformer(**common, **TINY_SWIGLU, mlp_ratio=4, ffn_layer="swiglufused",
                                                block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention))
            make = {"s": vt.vit_small, "b": vt.vit_base, "l": vt.vit_large, "g": vt.vit_giant2}[arch]
            return make(**common, ffn_layer="swiglufused" if arch == "g" else "mlp")
    finally:
        torch.linspace = real_linspace


def clip_model(arch: str, device=None):
    """clip-anytorch's CLIP with OpenAI's float16 conversion (text tower minimal)."""
    from clip.model import CLIP, convert_weights

    with torch.device(device or "cpu"):
        model = CLIP(*CLIP_VISION[arch], **CLIP_TEXT)
    convert_weights(model)
    return model


def layer_norm_eps(module) -> list[float]:
    """The epsilons of every LayerNorm in ``module`` (the parity features barely depend on them:
    1e-5 instead of 1e-6 moves the stand-in features by ~3e-6 of their size, below the tolerance)."""
    return sorted({m.eps for m in module.modules() if isinstance(m, torch.nn.LayerNorm)})


def write_keys() -> None:
    archs, eps = {}, {}
    for arch in ("s", "b", "l", "g", "swiglu"):
        model = dinov2_model(arch, "meta")
        archs[f"dinov2_{arch}"] = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")]
                                   for k, v in model.state_dict().items()]
        eps[f"dinov2_{arch}"] = layer_norm_eps(model)
    for arch in CLIP_VISION:
        model = clip_model(arch, "meta")
        eps[f"clip_{arch}"] = layer_norm_eps(model.visual)
        state = model.state_dict()
        keys = [k for k in state if k.startswith("visual.")]
        if arch == "b32":  # the stand-in file also needs the (minimal) text tower
            keys += [k for k in state if not k.startswith("visual.")]
        archs[f"clip_{arch}"] = [[k, list(state[k].shape), str(state[k].dtype).removeprefix("torch.")]
                                 for k in keys]
    source = (f"dinov2 {version('dinov2')} (vit_* with patch_size=14, img_size=518, init_values=1.0, "
              f"block_chunks=0), clip-anytorch {version('clip-anytorch')} (CLIP + convert_weights)")
    lines = ",\n".join(f'"{a}": [\n' + ",\n".join(json.dumps(r) for r in rows) + "\n]"
                       for a, rows in archs.items())
    (FIXTURES / "vit_keys.json").write_text('{"source": ' + json.dumps(source) + ',\n"layer_norm_eps": '
                                           + json.dumps(eps) + ',\n"archs": {\n' + lines + "\n}}\n")


def loaded_dinov2(arch: str):
    model = dinov2_model(arch).eval()
    model.load_state_dict(S.stand_in_state_dict(f"dinov2_{arch}"), strict=True)
    return model.requires_grad_(False)


# --- preprocessing of each reference ----------------------------------------------------------

def dgm_eval_input(image: np.ndarray) -> torch.Tensor:
    import torchvision.transforms as TF

    x = TF.Compose([TF.Resize((224, 224), TF.InterpolationMode.BICUBIC), TF.ToTensor()])(Image.fromarray(image))
    return TF.Normalize(np.array(IMAGENET_MEAN), np.array(IMAGENET_STD))(x)[None]


def edm2_input(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    x = F.interpolate(x.to(torch.float32), size=(224, 224), mode="bicubic", antialias=True)
    x = x.to(torch.float32) / 255
    x = x - torch.tensor(IMAGENET_MEAN, dtype=torch.float32).reshape(1, -1, 1, 1)
    return x / torch.tensor(IMAGENET_STD, dtype=torch.float32).reshape(1, -1, 1, 1)


def clean_input(image: np.ndarray) -> torch.Tensor:
    import torchvision.transforms as TF
    from cleanfid.resize import make_resizer

    resized = make_resizer("PIL", False, "bicubic", (224, 224))(image)  # float32, clipped to 0..255
    x = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))) / 255
    return TF.Normalize(np.array(IMAGENET_MEAN), np.array(IMAGENET_STD))(x)[None]


def cmmd_input(image: np.ndarray, size: int) -> torch.Tensor:
    im = Image.fromarray(image)
    w, h = im.size
    side = min(w, h)
    top, left = (h - side) // 2, (w - side) // 2
    im = im.crop((left, top, left + side, top + side)).resize((size, size), resample=Image.BICUBIC)
    x = np.asarray(im).astype(np.float32) / 255.0
    x = (x - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


# --- feature runs -----------------------------------------------------------------------------

def patched_hub(model):
    """torch.hub.load answering with ``model`` (torch-fidelity's DINOv2 extractor asks the hub)."""
    real = torch.hub.load

    class Patch:
        def __enter__(self):
            torch.hub.load = lambda *args, **kwargs: model

        def __exit__(self, *exc):
            torch.hub.load = real

    return Patch()


def run_dinov2(arch: str, images, large: bool = False) -> dict:
    from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2

    model = loaded_dinov2(arch)
    out = {}
    with torch.no_grad():
        sizes = (224,) if large else ((224, 126, 518) if arch == "s" else (224, 126))
        for size in sizes:
            out[f"dinov2_{arch}_raw{size}"] = model(S.raw_inputs(size, 1 if size == 518 else 2)).numpy()
        with patched_hub(model):
            extractor = FeatureExtractorDinoV2(f"dinov2-vit-{arch}-14", ["dinov2"]).eval()
        assert extractor.model is model
        out[f"dinov2_{arch}_tf"] = np.concatenate(
            [extractor(torch.from_numpy(im).permute(2, 0, 1)[None].contiguous())[0].numpy() for im in images])
        if not large:
            for mode, prep in (("dgm", dgm_eval_input), ("edm2", edm2_input), ("clean", clean_input)):
                out[f"dinov2_{arch}_{mode}"] = np.concatenate([model(prep(im)).numpy() for im in images])
    return out


def clip_standin_file(path: Path) -> Path:
    """The stand-in as a TorchScript archive like OpenAI's (traced CLIP, float16 weights)."""
    model = clip_model("b32").eval()
    model.load_state_dict(S.stand_in_state_dict("clip_b32"), strict=True)
    image = torch.zeros(1, 3, 224, 224, dtype=torch.float16)
    text = torch.zeros(1, CLIP_TEXT["context_length"], dtype=torch.long)
    traced = torch.jit.trace(model, (image, text), check_trace=False)
    traced.save(str(path))
    return path


def run_clean_fid_clip(path: Path, images, tmp: Path) -> np.ndarray:
    """clean-fid's CLIP-FID features of ``images`` (its loader, resize and extractor)."""
    import clip
    from cleanfid.clip_features import CLIP_fx, img_preprocess_clip
    from cleanfid.fid import get_files_features

    folder = tmp / "cleanfid"
    folder.mkdir()
    files = []
    for i, image in enumerate(images):
        files.append(str(folder / f"{i}.png"))
        Image.fromarray(image).save(files[-1])
    real_load = clip.load
    clip.load = lambda name, device="cpu", **kwargs: real_load(str(path), device="cpu", jit=False)
    try:
        extractor = CLIP_fx("ViT-B/32", device="cpu")
    finally:
        clip.load = real_load
    return get_files_features(files, model=extractor, num_workers=0, batch_size=len(files), device=torch.device("cpu"),
                              mode="clean", custom_fn_resize=img_preprocess_clip, verbose=False)


def run_clip_large(images) -> dict:
    """ViT-L/14@336px, the CMMD encoder: clip-anytorch's image tower with the stand-in tensors."""
    from clip.model import VisionTransformer

    embed_dim, resolution, layers, width, patch = CLIP_VISION["l14_336"]
    model = VisionTransformer(input_resolution=resolution, patch_size=patch, width=width, layers=layers,
                              heads=width // 64, output_dim=embed_dim).eval()
    state = {k.removeprefix("visual."): v for k, v in S.stand_in_state_dict("clip_l14_336").items()}
    model.load_state_dict(state, strict=True)  # float16 values into the float32 model, as clip.load on a CPU
    with torch.no_grad():
        return {"clip_l14_336_raw336": model(S.raw_inputs(resolution, 1)).numpy(),
                "clip_l14_336_cmmd": np.concatenate([model(cmmd_input(im, resolution)).numpy() for im in images])}


def run_clip(path: Path, images) -> dict:
    import clip
    from torch_fidelity.feature_extractor_clip import FeatureExtractorCLIP

    out = {}
    extractor = FeatureExtractorCLIP("clip-vit-b-32", ["clip"], feature_extractor_weights_path=str(path)).eval()
    model, preprocess = clip.load(str(path), device="cpu", jit=False)
    model.eval()
    with torch.no_grad():
        out["clip_b32_raw224"] = model.visual(S.raw_inputs(224)).numpy()
        out["clip_b32_tf"] = np.concatenate(
            [extractor(torch.from_numpy(im).permute(2, 0, 1)[None].contiguous())[0].numpy() for im in images])
        out["clip_b32_openai"] = np.concatenate(
            [model.encode_image(preprocess(Image.fromarray(im))[None]).float().numpy() for im in images])
        out["clip_b32_cmmd"] = np.concatenate(
            [model.encode_image(cmmd_input(im, 224)).float().numpy() for im in images])
    return out


def run_e2e(tmp: Path, clip_file: Path) -> dict:
    import torch_fidelity

    folders = S.write_e2e_folders(tmp / "e2e")
    common = dict(input1=str(folders["real"]), input2=str(folders["fake"]), fid=True, kid=True,
                  kid_subset_size=S.E2E_COUNT, kid_subsets=E2E_KID_SUBSETS, cuda=False, cache=False,
                  verbose=False, batch_size=16)
    out = {}
    with patched_hub(loaded_dinov2("s")):
        m = torch_fidelity.calculate_metrics(feature_extractor="dinov2-vit-s-14", **common)
    out.update(e2e_dinov2_fid=m["frechet_inception_distance"], e2e_dinov2_kid_mean=m["kernel_inception_distance_mean"],
               e2e_dinov2_kid_std=m["kernel_inception_distance_std"])
    m = torch_fidelity.calculate_metrics(feature_extractor="clip-vit-b-32",
                                         feature_extractor_weights_path=str(clip_file), **common)
    out.update(e2e_clip_fid=m["frechet_inception_distance"], e2e_clip_kid_mean=m["kernel_inception_distance_mean"],
               e2e_clip_kid_std=m["kernel_inception_distance_std"])
    return {k: np.float64(v) for k, v in out.items()}


def write_tiny_traced() -> None:
    """A small OpenAI-style TorchScript CLIP and the digests torch itself reads from it."""
    from clip.model import CLIP, convert_weights

    torch.manual_seed(0)
    model = CLIP(embed_dim=32, image_resolution=16, vision_layers=1, vision_width=64, vision_patch_size=8,
                 context_length=8, vocab_size=10, transformer_width=64, transformer_heads=1,
                 transformer_layers=1).eval()
    convert_weights(model)
    traced = torch.jit.trace(model, (torch.zeros(1, 3, 16, 16, dtype=torch.float16),
                                     torch.zeros(1, 8, dtype=torch.long)), check_trace=False)
    path = FIXTURES / "clip_tiny_traced.pt"
    traced.save(str(path))
    state = torch.jit.load(str(path), map_location="cpu").state_dict()
    digests = {k: [list(v.shape), str(v.dtype).removeprefix("torch."),
                   hashlib.sha256(v.contiguous().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()]
               for k, v in state.items()}
    (FIXTURES / "clip_tiny_traced.json").write_text(json.dumps(
        {"source": f"torch.jit.load(clip_tiny_traced.pt).state_dict(), torch {torch.__version__}",
         "tensors": digests}, indent=0) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true",
                        help="also DINOv2 ViT-L/14 and CLIP ViT-L/14@336px (a few minutes, ~5 GB memory)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    FIXTURES.mkdir(parents=True, exist_ok=True)
    write_keys()
    write_tiny_traced()
    images = S.parity_images()
    results = {}
    for arch in ("s", "b"):
        results.update(run_dinov2(arch, images))
        print(f"dinov2 {arch} done", flush=True)
    model = loaded_dinov2("swiglu")
    with torch.no_grad():
        results["dinov2_swiglu_raw224"] = model(S.raw_inputs(224)).numpy()
    if args.large:
        results.update(run_dinov2("l", images, large=True))
        results.update(run_clip_large(images))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip_file = clip_standin_file(tmp / "ViT-B-32-stand-in.pt")
        results.update(run_clip(clip_file, images))
        results["clip_b32_cleanfid"] = run_clean_fid_clip(clip_file, images, tmp)
        print("clip done", flush=True)
        results.update(run_e2e(tmp, clip_file))
    digests = {f"weights_{a}": S.weights_digest(S.stand_in_state_dict(a))
               for a in ("dinov2_s", "dinov2_b", "dinov2_swiglu", "clip_b32")
               + (("dinov2_l", "clip_l14_336") if args.large else ())}
    meta = {
        "versions": json.dumps({p: version(p) for p in ("dinov2", "clip-anytorch", "torch-fidelity", "clean-fid",
                                                        "torch", "torchvision", "numpy", "pillow")}),
        "images_sha256": S.images_digest(images),
        "e2e_sha256": S.images_digest(S.e2e_sets()["real"] + S.e2e_sets()["fake"]),
        "e2e_kid_subsets": E2E_KID_SUBSETS,
        **digests,
    }
    arrays = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.ndim else v) for k, v in results.items()}
    np.savez_compressed(FIXTURES / "vit_peers.npz", **arrays, **{k: np.array(v) for k, v in meta.items()})
    for key, value in results.items():
        print(f"{key:24s} {np.shape(value)} {float(np.mean(value)):.5g}")


if __name__ == "__main__":
    main()
