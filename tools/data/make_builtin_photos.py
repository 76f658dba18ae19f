"""Make the small built-in photos of src/imgdist/data from scikit-image's sample images.

Run once (needs scikit-image, part of the test extra): ``python tools/data/make_builtin_photos.py``.
Sources and licences are listed in src/imgdist/data/README.md. coffee.jpg was made earlier the
same way (300x200); this script does not touch it.
"""

from pathlib import Path

from PIL import Image
from skimage import data

OUT = Path(__file__).resolve().parents[2] / "src" / "imgdist" / "data"
# name -> (scikit-image loader, size): a few hundred pixels keep each JPEG around 20 KB
PHOTOS = {"chelsea.jpg": (data.chelsea, (300, 200)), "astronaut.jpg": (data.astronaut, (256, 256))}
QUALITY = 90

if __name__ == "__main__":
    for name, (load, size) in PHOTOS.items():
        Image.fromarray(load()).resize(size, Image.LANCZOS).save(OUT / name, "JPEG", quality=QUALITY, optimize=True)
        print(f"{OUT / name}: {(OUT / name).stat().st_size} bytes")
