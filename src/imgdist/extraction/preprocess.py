"""How an image becomes a network input: resize to the backbone's size, then scale values.

The reference FID tools agree on the network and disagree only here, by 4-130% in FID on the
same images and weights, so each recipe reproduces one tool's operations in that tool's order:

* ``bilinear``      torch bilinear with half-pixel centres, no antialiasing (pytorch-fid)
* ``tf1-bilinear``  TensorFlow-1 ``resize_bilinear`` without the half-pixel offset, which is what
                    the original TensorFlow FID graph does (torch-fidelity reproduces it)
* ``pil-bicubic``   Pillow's antialiased bicubic on float channels, clipped to 0..255
                    (clean-fid, Parmar et al. 2022, "On Aliased Resizing and Surprising Subtleties
                    in GAN Evaluation")
* ``pil-bicubic-rgb``  Pillow's antialiased bicubic on the 8-bit RGB image, so the result is
                    rounded to integers again: what ``torchvision.transforms.Resize`` does to a PIL
                    image (dgm-eval's DINOv2 and CLIP encoders, Stein et al. 2023), EDM2's
                    ``resize_mode='pil'``, the CMMD reference code and OpenAI CLIP's own preprocess
* ``pil-bilinear-rgb``  the same with Pillow's bilinear filter: ``torchvision.transforms.Resize``'s
                    default on a PIL image (pytorchfwd's ``--resize`` for the Fréchet Wavelet Distance)
* ``bicubic-antialias``  torch bicubic with antialiasing on float values (EDM2's default
                    ``resize_mode='torch'`` for FD_DINOv2, Karras et al. 2024)
* ``antialias-bilinear``  torch bilinear with antialiasing (what Pillow's bilinear does)
* ``none``          no resize: every image must already have the input size

Crops, applied around the resize (both keep the aspect ratio; without one a non-square image is
squashed to a square, as every FID tool does):

* ``center``        cut the largest centred square first (offsets rounded down), then resize
                    (the CMMD reference code, Jayasumana et al. 2024)
* ``resize-center`` resize the shorter side to the input size (the longer one to
                    ``int(size * long / short)``), then cut the centred square (offsets rounded
                    half-to-even): ``Resize(size)`` + ``CenterCrop(size)`` as in OpenAI CLIP's
                    preprocess and clean-fid's ``clip_vit_b_32``

Images arrive as uint8 ``H x W x 3`` arrays, and a recipe runs in two stages, split where the
data is smallest (:meth:`Preprocessing.prepare`, :meth:`Preprocessing.finish`):

* where images are decoded (data-loader workers or the main process): the ``center`` crop and the
  Pillow kernels, which need a PIL image; the result travels as uint8 (Pillow's 8-bit kernel
  rounds to integers) or, for ``pil-bicubic`` only, float32 (clean-fid's float resize);
* on the device, per batch: the tensor kernels (``bilinear``, ``tf1-bilinear``,
  ``bicubic-antialias``, ``antialias-bilinear``) with their scaling, the ``resize-center`` crop,
  and the normalisation. So workers ship uint8 images at their own size (a 28 x 28 image is
  2 KB instead of a 1 MB float32 299 x 299 tensor), and on a GPU the resize costs no CPU time.

Both stages together are the same arithmetic, operation for operation, as resizing each image
alone (``tests/test_preprocess.py`` checks them bit for bit on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

RESIZE_KERNELS = ("bilinear", "tf1-bilinear", "pil-bicubic", "pil-bicubic-rgb", "pil-bilinear-rgb",
                  "bicubic-antialias", "antialias-bilinear", "none")
CROPS = ("none", "center", "resize-center")
#: kernels that work on the 8-bit image itself (their output is rounded to integers)
_UINT8_KERNELS = ("pil-bicubic-rgb", "pil-bilinear-rgb")
#: Pillow's filter for each 8-bit kernel
_PIL_FILTERS = {"pil-bicubic-rgb": Image.BICUBIC, "pil-bilinear-rgb": Image.BILINEAR}
#: kernels that need a PIL image, so they run where images are decoded
_PIL_KERNELS = ("pil-bicubic", "pil-bicubic-rgb", "pil-bilinear-rgb")


@dataclass(frozen=True)
class Preprocessing:
    """A resize recipe: ``[crop] -> x * pre_scale -> resize to size x size -> x * post_scale ->
    (x - mean) / std``.

    ``x`` starts on the 0..255 scale. ``pre_scale`` and ``post_scale`` exist so that a recipe can
    follow its reference tool's operation order exactly: pytorch-fid resizes ``v / 255``, while
    torchvision's ``ToTensor`` (dgm-eval) and EDM2 divide by 255 after resizing. Both are applied
    as divisions by ``1 / scale``, bit-exact with the references' ``/ 255``.
    ``size`` None keeps each image's own size (the ``pixels`` backbone at native size).
    """

    name: str
    size: int | None
    resize: str
    mean: float | tuple[float, float, float] = 0.0
    std: float | tuple[float, float, float] = 1.0
    pre_scale: float = 1.0
    post_scale: float = 1.0
    crop: str = "none"

    def __post_init__(self):
        if self.resize not in RESIZE_KERNELS:
            raise ValueError(f"unknown resize kernel {self.resize!r}; choose from {RESIZE_KERNELS}")
        if self.crop not in CROPS:
            raise ValueError(f"unknown crop {self.crop!r}; choose from {CROPS}")
        if self.resize in _UINT8_KERNELS and self.pre_scale != 1.0:
            raise ValueError(f"resize kernel {self.resize!r} works on 8-bit values; use post_scale")
        if self.crop != "none" and self.size is None:
            raise ValueError("a crop needs a target size")

    def describe(self) -> str:
        """One line for provenance and printed results."""
        def num(v):
            return f"({', '.join(f'{c:.4g}' for c in v)})" if isinstance(v, tuple) else f"{v:.4g}"

        x = "v" if self.pre_scale == 1.0 else f"v/{1.0 / self.pre_scale:.4g}"
        crop = {"none": "", "center": "centre square crop, then ",
                "resize-center": "shorter side "}[self.crop]
        after = {"resize-center": ", centre crop"}.get(self.crop, "")
        if self.post_scale != 1.0:
            after += f", /{1.0 / self.post_scale:.4g}"
        return (f"{self.name} ({crop}{self.resize} on {x} to {self.size or 'native size'}{after}, "
                f"then (x-{num(self.mean)})/{num(self.std)})")

    @property
    def resizes_on_host(self) -> bool:
        """Whether the resize needs Pillow, and so runs where images are decoded."""
        return self.resize in _PIL_KERNELS

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """Decoding side: uint8 H x W x 3 -> C x H' x W' tensor for :meth:`finish`.

        uint8 at the image's own size for the tensor kernels, uint8 at the target size for
        ``pil-bicubic-rgb``, float32 at the target size for ``pil-bicubic``."""
        image = np.asarray(image)
        if self.crop == "center":
            image = center_square(image)
        if self.resize in _UINT8_KERNELS:
            return _pil_rgb_resize(image, self.size, self.crop == "resize-center", _PIL_FILTERS[self.resize])
        if self.resize == "pil-bicubic":
            x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)
            if self.pre_scale != 1.0:
                x = x / (1.0 / self.pre_scale)
            return resize_chw(x, self.size, self.resize)
        if self.resize == "none" and self.size is not None and image.shape[:2] != (self.size, self.size):
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, the backbone needs "
                             f"{self.size}x{self.size} and resize is 'none'")
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if not image.flags.writeable:  # a memory-mapped array's rows: torch wants its own copy
            image = image.copy()
        return torch.from_numpy(image).permute(2, 0, 1)

    def finish(self, batch: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """Device side: :meth:`prepare`'s tensors (a batch, or a list of different sizes) ->
        the normalised float32 N x 3 x S x S network input."""
        if isinstance(batch, (list, tuple)):
            return torch.cat([self.finish(x[None]) for x in batch])
        return self.normalise(self.scaled(batch))

    def scaled(self, batch: torch.Tensor) -> torch.Tensor:
        """:meth:`prepare`'s N x C x H x W batch -> resized and scaled, not yet normalised."""
        x = batch.to(torch.float32)
        if not self.resizes_on_host:
            if self.pre_scale != 1.0:
                x = x / (1.0 / self.pre_scale)  # a division, bit-exact with pytorch-fid's v / 255
            if self.crop == "resize-center":
                x = _resize_shorter_and_crop(x, self.size, self.resize)
            else:
                x = resize_chw(x, self.size, self.resize)
        if self.post_scale != 1.0:
            x = x / (1.0 / self.post_scale)
        return x

    def resize_image(self, image: np.ndarray) -> torch.Tensor:
        """uint8 H x W x 3 -> float32 3 x size x size (scaled, not yet normalised), in one place."""
        return self.scaled(self.prepare(image)[None])[0]

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """Pre-scaled, resized N x 3 x S x S batch -> network input."""
        mean = torch.as_tensor(self.mean, dtype=batch.dtype, device=batch.device)
        std = torch.as_tensor(self.std, dtype=batch.dtype, device=batch.device)
        if mean.ndim:
            mean, std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
        return (batch - mean) / std

    def __call__(self, images: list[np.ndarray] | np.ndarray) -> torch.Tensor:
        """Convenience for in-process use: uint8 images -> normalised batch."""
        return self.finish([self.prepare(im) for im in images])


def resize_chw(x: torch.Tensor, size: int | None, kernel: str) -> torch.Tensor:
    """Resize a float [N x] C x H x W image or batch to size x size with the named kernel."""
    if size is None or kernel == "none" or tuple(x.shape[-2:]) == (size, size):
        if kernel == "none" and size is not None and tuple(x.shape[-2:]) != (size, size):
            raise ValueError(f"image is {x.shape[-1]}x{x.shape[-2]}, the backbone needs {size}x{size} "
                             "and resize is 'none'")
        return x
    return _resize(x, size, size, kernel)


def _resize(x: torch.Tensor, height: int, width: int, kernel: str) -> torch.Tensor:
    if (height, width) == tuple(x.shape[-2:]):
        return x
    if kernel == "pil-bicubic":
        return _pil_bicubic(x, height, width)
    single = x.ndim == 3
    x = x[None] if single else x
    if kernel == "bilinear":
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    elif kernel == "antialias-bilinear":
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    elif kernel == "bicubic-antialias":
        x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    elif kernel == "tf1-bilinear":
        x = _tf1_bilinear(x, height, width)
    else:
        raise ValueError(f"unknown resize kernel {kernel!r}")
    return x[0] if single else x


def center_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of an H x W (x C) array, offsets rounded down (as CMMD crops)."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top:top + side, left:left + side]


def shorter_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) with the shorter side at ``size``, the longer one ``int(size * long / short)``
    (torchvision's ``Resize(int)``)."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def _center_box(height: int, width: int, size: int) -> tuple[int, int]:
    # torchvision's CenterCrop offsets: round half to even, like Python's round
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def _resize_shorter_and_crop(x: torch.Tensor, size: int, kernel: str) -> torch.Tensor:
    height, width = shorter_side_size(x.shape[-2], x.shape[-1], size)
    x = _resize(x, height, width, kernel)
    top, left = _center_box(height, width, size)
    return x[..., top:top + size, left:left + size]


def _pil_rgb_resize(image: np.ndarray, size: int, shorter_side: bool, resample: int = Image.BICUBIC) -> torch.Tensor:
    """Pillow's 8-bit resize (antialiased, rounded and clipped to 0..255; bicubic unless
    ``resample`` says otherwise) -> uint8 C x S x S."""
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))  # H x W x 3 -> RGB
    height, width = shorter_side_size(pil.height, pil.width, size) if shorter_side else (size, size)
    if (pil.height, pil.width) != (height, width):
        pil = pil.resize((width, height), resample=resample)
    out = np.asarray(pil, dtype=np.uint8)
    if shorter_side:
        top, left = _center_box(height, width, size)
        out = out[top:top + size, left:left + size]
    # the one copy, of the crop only: Pillow's array is read-only, and torch warns about every
    # non-writable one
    return torch.from_numpy(np.array(out, order="C")).permute(2, 0, 1)


def _tf1_axis(n_in: int, n_out: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # TF1 resize_bilinear(align_corners=False): source = dst * (in / out) in float32, no 0.5 offset
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)
    src = torch.arange(n_out, dtype=torch.float32, device=device) * scale
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    return lo, hi, src - lo.to(torch.float32)


def _tf1_bilinear(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    # N x C x H x W; along x first, then y, as TensorFlow does: the other order differs by up to
    # 2e-3 of 0..255
    y0, y1, fy = _tf1_axis(x.shape[-2], height, x.device)
    x0, x1, fx = _tf1_axis(x.shape[-1], width, x.device)
    top, bottom = x[..., y0, :], x[..., y1, :]
    top = top[..., x0] + (top[..., x1] - top[..., x0]) * fx
    bottom = bottom[..., x0] + (bottom[..., x1] - bottom[..., x0]) * fx
    return top + (bottom - top) * fy.view(-1, 1)


def _pil_bicubic(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    channels = []
    for channel in x.numpy().astype(np.float32):
        resized = Image.fromarray(channel).resize((width, height), resample=Image.BICUBIC)
        channels.append(np.asarray(resized, dtype=np.float32).clip(0, 255))
    return torch.from_numpy(np.stack(channels))
