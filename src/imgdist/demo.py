"""``imgdist demo``: the lecture's point measured on photos that ship with the package, offline.

Three steps, each printed as soon as it is done:

1. the lecture's example: two tiny images whose values differ by 150 -> sum of absolute
   differences 900; an image against itself -> 0;
2. one photo against shifted, noised and blurred copies of itself and against another photo,
   pixel distances beside feature distances (:func:`imgdist.robustness`);
3. whole sets: a "real" set of crops against a clean fake set (other crops), the same fakes
   shifted by 1 pixel, and noised: FD and precision/recall in pixel space (the ``pixels``
   backbone) and in feature space.

Every sentence that says what to read from a table is worded from the numbers just computed.
``run_demo(out=DIR)`` also writes the images, the robustness plot (with matplotlib), an HTML report
and the numbers, and lists the ``imgdist`` commands that recompute them from those files.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import textwrap
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from . import defaults as D
from .errors import ImgdistError
from .formatting import format_table
from .pairs.perturbations import (BLUR_RADII, NOISE_SIGMAS, RobustnessResult, add_noise, builtin_photo, perturbations,
                            robustness, shift)

#: the lecture's pair: two 1 x 2-pixel RGB images, every value 150 apart (up in one pixel, down in
#: the other, so that signed differences would cancel)
LECTURE_A = np.array([[[200, 200, 200], [0, 0, 0]]], dtype=np.uint8)
LECTURE_B = np.array([[[50, 50, 50], [150, 150, 150]]], dtype=np.uint8)

PAIR_PHOTO, PAIR_OTHER = "chelsea.jpg", "coffee.jpg"
SET_PHOTOS = ("chelsea.jpg", "astronaut.jpg", "coffee.jpg")
#: Set crops: CIFAR-sized, so that pixel space is the images' own pixels (d = 3 * 32 * 32; at
#: 64 px its covariance alone would take 1.2 GB). Each photo is first shrunk to 36 px on its
#: short side, so a crop shows nearly the whole photo and moves by a few pixels between crops:
#: an aligned set, like centred faces or digits. (Crops at random places of large photos have
#: the same pixel statistics at every position, and a shift cannot change them.)
CROP, SHORT_SIDE = 32, 36
CROPS = D.DEMO_CROPS
SHIFT_PX = 1
SET_NOISE = max(NOISE_SIGMAS)  # sigma on 0..255, as in the robustness table
REAL_SEED, FAKE_SEED = 1, 2
FEATURE_BACKBONE = D.PAIR_BACKBONE  # efficientnet-lite0: the offline default, weights ship with the package
#: backbone -> resize mode: pixel space without any resize, so a 1-px shift stays 1 px
SPACES = {"pixels": "native", FEATURE_BACKBONE: None}
SET_METRICS = ("fid", "precision", "recall")
FAKE_SETS = {"clean": "clean (other crops)", f"shift{SHIFT_PX}": f"shifted {SHIFT_PX} px",
             f"noise{SET_NOISE}": f"noise sigma {SET_NOISE}"}
_NUMBERED_PNG = re.compile(r"\d{4}\.png")
TITLE = "imgdist demo: pixel distances vs feature distances, on photos built into imgdist (offline)"
WIDTH = 100  # the sentences wrap here; tables keep their width


@dataclass(frozen=True)
class SetScore:
    """One fake set against the real set in one space."""

    space: str          # the backbone: 'pixels' or the feature network
    fake: str           # a key of FAKE_SETS
    label: str          # how the FD prints, e.g. 'FD[pixels]'
    dims: int
    fd: float
    precision: float
    recall: float


@dataclass
class DemoResult:
    """The numbers of one demo run; :meth:`text` and :meth:`to_dict` present them."""

    lecture_sum_abs_diff: float
    identical_sum_abs_diff: float
    robustness: RobustnessResult
    sets: list[SetScore]
    crops: int
    device: str
    seconds: float = math.nan
    files: dict[str, str] = field(default_factory=dict)      # what --out wrote: role -> path
    commands: list[str] = field(default_factory=list)       # imgdist commands on those files
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)       # from the set evaluations

    def score(self, space: str, fake: str) -> SetScore:
        return next(s for s in self.sets if s.space == space and s.fake == fake)

    def fd_ratio(self, space: str, fake: str) -> float:
        """FD(real, fake) / FD(real, clean fake)."""
        return self.score(space, fake).fd / self.score(space, "clean").fd

    def shift_per_noise(self, space: str) -> float:
        """What the shift adds to the clean FD, in units of what the noise adds in the same space:
        the set-level counterpart of 'distance / distance to another photo'. The clean FD itself
        is mostly finite-sample bias, different in each space, so ratios to it do not compare."""
        clean = self.score(space, "clean").fd
        unit = self.score(space, f"noise{SET_NOISE}").fd - clean
        return (self.score(space, f"shift{SHIFT_PX}").fd - clean) / unit if unit > 0 else math.nan

    # ------------------------------------------------------------ text

    def lecture_text(self) -> str:
        diff = LECTURE_A.astype(np.int64) - LECTURE_B
        return "\n".join([
            "1. The lecture's example: two 1x2-pixel RGB images, every value 150 apart",
            f"   A = {LECTURE_A.reshape(-1, 3).tolist()}   B = {LECTURE_B.reshape(-1, 3).tolist()}",
            f"   sum of absolute differences, A vs B: {_num(self.lecture_sum_abs_diff)}"
            f"   ({diff.size} values x {int(np.abs(diff).max())}; signed differences would cancel to "
            f"{int(diff.sum())})",
            f"   A vs A (identical):                  {_num(self.identical_sum_abs_diff)}",
            "   Pixel distances compare values at the same positions: 0 only for identical images."])

    def pair_text(self) -> str:
        return "\n".join([f"2. One photo ({PAIR_PHOTO}) against changed copies of itself; 1 = as far as another "
                          f"photo ({PAIR_OTHER})",
                          _indent(self.robustness.table()), _read(pair_reading(self.robustness))])

    def sets_text(self) -> str:
        rows = []
        for space in SPACES:
            for fake, name in FAKE_SETS.items():
                s = self.score(space, fake)
                rows.append([f"{space} (d = {s.dims})" if fake == "clean" else "", name, f"{s.fd:.2f}",
                             f"x{self.fd_ratio(space, fake):.2f}", f"{s.precision:.2f}", f"{s.recall:.2f}"])
        return "\n".join([
            f"3. Whole sets: {self.crops} real against {self.crops} fake images per set, FD and precision/recall "
            "in two spaces",
            _wrap(f"Real and clean fakes: random {CROP}x{CROP} crops of the three built-in photos, each shrunk "
                  f"to {SHORT_SIDE} px on its short side (aligned views, like centred faces); the other fake "
                  f"sets are the clean fakes shifted by {SHIFT_PX} px and noised (sigma {SET_NOISE})."),
            _indent(format_table(["space", "fake set", "FD", "vs clean", "precision", "recall"], rows)),
            _wrap(f"With {self.crops} images per set and d dimensions the covariances are singular, so FD is "
                  "biased upwards: compare the rows with each other, not with published FIDs."),
            _read(set_reading(self))])

    def files_text(self) -> str:
        if not self.files:
            return "Write these images, the plot and an HTML report with: imgdist demo --out DIR"
        lines = ["Files:"] + [f"   {role}: {path}" for role, path in self.files.items()]
        lines += [f"   {note}" for note in self.notes]
        lines += ["Recompute from the files:"] + [f"   {c}" for c in self.commands]
        return "\n".join(lines)

    def text(self) -> str:
        return "\n\n".join([TITLE, self.lecture_text(), self.pair_text(), self.sets_text(), self.files_text(),
                            self.footer()])

    def footer(self) -> str:
        return f"demo done in {self.seconds:.1f} s on {self.device}"

    def to_dict(self) -> dict:
        def clean(v):
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return {
            "lecture": {"a": LECTURE_A.tolist(), "b": LECTURE_B.tolist(),
                        "sum_abs_diff": self.lecture_sum_abs_diff,
                        "identical_sum_abs_diff": self.identical_sum_abs_diff},
            "robustness": self.robustness.to_dict(),
            "pair_reading": pair_reading(self.robustness),
            "sets": {"crops": self.crops, "crop_size": CROP, "shift_px": SHIFT_PX, "noise_sigma": SET_NOISE,
                     "scores": [{k: clean(v) for k, v in asdict(s).items()} for s in self.sets],
                     "fd_ratio_to_clean": {sp: {f: clean(self.fd_ratio(sp, f)) for f in FAKE_SETS} for sp in SPACES},
                     "shift_per_noise": {sp: clean(self.shift_per_noise(sp)) for sp in SPACES},
                     "reading": set_reading(self), "warnings": self.warnings},
            "files": self.files, "notes": self.notes, "commands": self.commands,
            "device": self.device, "seconds": clean(self.seconds),
        }


# ------------------------------------------------------------------ readings

def _pct(v: float) -> str:
    if not math.isfinite(v):
        return "n/a"
    return f"{100 * v:.0f}%" if abs(v) >= 1 else f"{100 * v:.2g}%"


def _times(a: float, b: float) -> str:
    """'a is N times b', for b > 0."""
    return f"{a / b:.0f}x" if b > 0 and a / b >= 10 else (f"{a / b:.1f}x" if b > 0 else "n/a")


def pair_reading(r: RobustnessResult) -> str:
    """What the robustness table says, in words chosen by its numbers."""
    shift_key, noise_key, blur_key = "shift1", f"noise{max(NOISE_SIGMAS)}", f"blur{max(BLUR_RADII)}"
    ratio = r.ratio
    finite = [m for m in r.metrics if math.isfinite(ratio(shift_key, m))]
    steady = min(finite, key=lambda m: ratio(shift_key, m))
    s_pix, s_steady = ratio(shift_key, "sum_abs_diff"), ratio(shift_key, steady)
    out = [f"A 1-pixel shift is {_pct(s_pix)} of the way to another photo in sum_abs_diff, "
           f"{_pct(s_steady)} in {steady}, the distance that moves least."]
    if "feature_l2" in r.metrics and steady != "feature_l2":
        s_l2 = ratio(shift_key, "feature_l2")
        robust = "not the robust one" if s_l2 > 3 * s_steady else "nearly as robust"
        out.append(f"feature_l2 moves {_pct(s_l2)} ({_times(s_l2, s_steady)} {steady}'s): {robust}.")
    n_st, b_st = ratio(noise_key, steady), ratio(blur_key, steady)
    n_pix, b_pix = ratio(noise_key, "sum_abs_diff"), ratio(blur_key, "sum_abs_diff")
    react = ("reacts strongly" if min(n_st, b_st) > 5 * s_steady else "reacts less clearly")
    out.append(f"Noise (sigma {max(NOISE_SIGMAS)}) and blur (radius {max(BLUR_RADII)}) go the other way: "
               f"{steady} {react}, {_pct(n_st)} and {_pct(b_st)} ({_times(n_st, s_steady)} and "
               f"{_times(b_st, s_steady)} its shift value), where sum_abs_diff moves {_pct(n_pix)} and "
               f"{_pct(b_pix)} ({_times(n_pix, s_pix)} and {_times(b_pix, s_pix)} its shift value).")
    return " ".join(out)


def set_reading(result: DemoResult) -> str:
    """What the set table says, in words chosen by its numbers."""
    px, ft = "pixels", FEATURE_BACKBONE
    sp, sf = result.shift_per_noise(px), result.shift_per_noise(ft)
    noise = f"noise{SET_NOISE}"
    if not (math.isfinite(sp) and math.isfinite(sf)):
        out = ["The noise does not raise FD in both spaces here, so it cannot serve as the yardstick for the shift."]
    else:
        if sp > sf:
            verdict = (f"pixel statistics weigh the shift {_times(sp, sf)} as heavily as the features do"
                       if sf > 0 else "the features do not register it at all")
        else:
            verdict = "here the features weigh the shift at least as heavily as pixel statistics do"
        out = [f"Against what the noise adds to FD in the same space, the {SHIFT_PX}-px shift adds {_pct(sp)} "
               f"in pixel space and {_pct(sf)} in feature space: {verdict}."]
    r_px, r_ft = result.fd_ratio(px, f"shift{SHIFT_PX}"), result.fd_ratio(ft, f"shift{SHIFT_PX}")
    if r_ft >= r_px:  # say why the 'vs clean' column seems to tell otherwise
        out.append(f"(Against the clean FD the shift looks larger in feature space, x{r_ft:.2f} vs x{r_px:.2f}: "
                   f"the clean feature FD is small, {result.score(ft, 'clean').fd:.3g}, because the features "
                   "hardly notice where a crop was cut; any change looks big next to it.)")
    n_px, n_ft = result.fd_ratio(px, noise), result.fd_ratio(ft, noise)
    p_px, p_ft = result.score(px, noise).precision, result.score(ft, noise).precision
    react = "The noise is what the features react to" if n_ft > n_px else "The noise moves pixel FD more"
    out.append(f"{react}: FD x{n_ft:.1f} in feature space, x{n_px:.2f} in pixel space; precision "
               f"{p_ft:.2f} in feature space (clean {result.score(ft, 'clean').precision:.2f}) vs {p_px:.2f} "
               f"in pixel space: " + ("in feature space the noisy crops lie outside the real crops' "
                                      "neighbourhoods." if p_ft < p_px else "both spaces keep them near."))
    return " ".join(out)


# ------------------------------------------------------------------ the run

def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.6g}"


def _indent(text: str) -> str:
    return "\n".join("   " + line if line else line for line in text.splitlines())


def _wrap(text: str, first: str = "   ") -> str:
    return textwrap.fill(text, width=WIDTH, initial_indent=first, subsequent_indent="   ",
                         break_on_hyphens=False)


def _read(text: str) -> str:
    return _wrap(text, "   Read: ")


def set_photos() -> list[np.ndarray]:
    """The built-in photos shrunk to SHORT_SIDE px on their short side (Pillow's Lanczos)."""
    out = []
    for name in SET_PHOTOS:
        image = Image.fromarray(builtin_photo(name))
        scale = SHORT_SIDE / min(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        out.append(np.asarray(image.resize(size, Image.LANCZOS)))
    return out


def random_crops(photos: list[np.ndarray], n: int, seed: int) -> np.ndarray:
    """``n`` CROP x CROP crops at random places, the photos taken in turn (equal shares)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, CROP, CROP, 3), dtype=np.uint8)
    for i in range(n):
        photo = photos[i % len(photos)]
        y = int(rng.integers(0, photo.shape[0] - CROP + 1))
        x = int(rng.integers(0, photo.shape[1] - CROP + 1))
        out[i] = photo[y:y + CROP, x:x + CROP]
    return out


def make_sets(n: int = CROPS, seed: int = 0) -> dict[str, np.ndarray]:
    """The real set and the fake sets (keys 'real' and those of FAKE_SETS), uint8 N x H x W x 3."""
    photos = set_photos()
    fake = random_crops(photos, n, FAKE_SEED + 2 * seed)
    return {"real": random_crops(photos, n, REAL_SEED + 2 * seed), "clean": fake,
            f"shift{SHIFT_PX}": np.stack([shift(image, SHIFT_PX) for image in fake]),
            f"noise{SET_NOISE}": add_noise(fake, SET_NOISE, seed)}


class _Output:
    """The --out folder: checked and prepared before any work, filled as the steps finish."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        if os.path.exists(self.folder) and not os.path.isdir(self.folder):
            raise ImgdistError(f"--out {self.folder}: is a file; name a folder (it is created if missing)")
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as exc:
            raise ImgdistError(f"--out {self.folder}: cannot create the folder ({exc.strerror or exc})") from None
        from ..checks import check_output

        check_output(self.path("report.html"), "--out")
        for name in ("real", *FAKE_SETS):  # the set folders must hold only this run's images
            folder = self.path("sets", name)
            if os.path.isdir(folder):
                foreign = [f for f in os.listdir(folder) if not _NUMBERED_PNG.fullmatch(f)]
                if foreign:
                    raise ImgdistError(f"--out {self.folder}: {folder} holds other files ({foreign[0]}, ...), "
                                       "which 'imgdist eval' on that folder would count; choose a new folder")

    def path(self, *parts: str) -> str:
        return os.path.join(self.folder, *parts)

    def image(self, array: np.ndarray, *parts: str) -> str:
        path = self.path(*parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(array).save(path)
        return path

    def image_set(self, images: np.ndarray, name: str) -> str:
        folder = self.path("sets", name)
        os.makedirs(folder, exist_ok=True)
        for stale in os.listdir(folder):  # a previous run with more crops
            if _NUMBERED_PNG.fullmatch(stale) and int(stale[:4]) >= len(images):
                os.remove(os.path.join(folder, stale))
        for i, image in enumerate(images):
            Image.fromarray(image).save(os.path.join(folder, f"{i:04d}.png"))
        return folder


def run_demo(out=None, *, device: str = D.DEVICE, progress: bool = True, crops: int = CROPS, seed: int = 0,
             echo=None) -> DemoResult:
    """Run the three steps on the built-in photos; see the module docstring.

    ``out``: a folder for the images, the plot, the HTML report and ``demo.json`` (created if
    missing). ``crops``: images per set (more: steadier numbers, slower). ``echo``: called with
    each step's text as soon as it is done (the CLI passes ``print``).
    """
    from .checks import check_int, resolve_device
    from .evaluation.run import evaluate_features
    from .extraction.features import FeatureExtractor
    from .metrics import registry
    from .pairs.pixel import compare_pixels

    started = time.perf_counter()
    crops = check_int("crops", crops, 2 * registry.setting("pr_k").default)  # k-NN radii need more images than k
    output = _Output(out) if out is not None else None
    device = resolve_device(device)
    say = echo or (lambda text: None)
    say(TITLE + "\n")

    # 1. the lecture's pair
    lecture = compare_pixels(LECTURE_A, LECTURE_B).sum_abs_diff
    identical = compare_pixels(LECTURE_A, LECTURE_A.copy()).sum_abs_diff
    result = DemoResult(lecture, identical, robustness=None, sets=[], crops=crops, device=device)
    say(result.lecture_text() + "\n")

    # 2. one photo and its perturbed copies
    photo, other = builtin_photo(PAIR_PHOTO), builtin_photo(PAIR_OTHER)
    result.robustness = robustness(photo, other, backbone=FEATURE_BACKBONE, device=device, seed=seed)
    result.robustness.image = f"{PAIR_PHOTO} (built in)"
    result.robustness.other = f"{PAIR_OTHER} (built in)"
    say(result.pair_text() + "\n")

    # 3. sets, each extracted once per space
    sets = make_sets(crops, seed)
    kept = {}
    for backbone, mode in SPACES.items():
        extractor = FeatureExtractor(backbone, mode=mode, device=device, progress=progress, cache=False)
        feats = {name: extractor.extract(images, desc=f"{backbone}: {name}") for name, images in sets.items()}
        for fake in FAKE_SETS:
            res = evaluate_features(feats["real"], feats[fake], metrics=SET_METRICS)
            result.sets.append(SetScore(backbone, fake, res.labels["fid"], extractor.feature_dim, res["fid"],
                                        res["precision"], res["recall"]))
            result.warnings += [w for w in res.warnings if w not in result.warnings]
            kept[backbone, fake] = (res, feats["real"], feats[fake])
    say(result.sets_text() + "\n")

    if output is not None:
        _write(output, result, photo, other, sets, kept[FEATURE_BACKBONE, f"noise{SET_NOISE}"], seed)
    result.seconds = time.perf_counter() - started
    if output is not None:
        _save_json(output, result)
    return result


def _write(output: _Output, result: DemoResult, photo, other, sets, report_inputs, seed: int) -> None:
    files = result.files
    files["lecture pair"] = os.path.dirname(output.image(LECTURE_A, "lecture", "a.png"))
    output.image(LECTURE_B, "lecture", "b.png")
    stem = os.path.splitext(PAIR_PHOTO)[0]
    files["photo"] = output.image(photo, "pair", f"{stem}.png")
    files["other photo"] = output.image(other, "pair", os.path.splitext(PAIR_OTHER)[0] + ".png")
    for label, image in perturbations(photo, seed).items():  # the copies robustness() measured
        output.image(image, "pair", f"{stem}_{label}.png")
    files["perturbed copies"] = output.path("pair", f"{stem}_*.png")
    for name, images in sets.items():
        files[f"set {name}"] = output.image_set(images, name)

    plot = output.path("robustness.png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        result.notes.append("robustness plot: not written (matplotlib is not installed: pip install matplotlib)")
        plot = None
    else:
        result.robustness.plot(plot)
        files["robustness plot"] = plot

    from .report import write_report

    res, real, fake = report_inputs
    noise_dir = files[f"set noise{SET_NOISE}"]
    files["report"] = write_report(output.path("report.html"), res, real, fake, files["set real"], noise_dir)
    result.notes.append(f"(the report: the real set against the noised fakes in feature space, {FEATURE_BACKBONE}; "
                        "open it in a browser)")
    files["numbers"] = output.path("demo.json")

    q = shlex.quote
    lect, pair = output.path("lecture"), output.path("pair")
    shifted = files[f"set shift{SHIFT_PX}"]
    metrics = ",".join(SET_METRICS)
    result.commands = [
        f"imgdist compare {q(os.path.join(lect, 'a.png'))} {q(os.path.join(lect, 'b.png'))} --backbone none",
        f"imgdist compare {q(files['photo'])} {q(os.path.join(pair, f'{stem}_shift1.png'))}",
        f"imgdist robustness {q(files['photo'])} {q(files['other photo'])}"
        + (f" --plot {q(plot)}" if plot else ""),
        f"imgdist eval {q(files['set real'])} {q(shifted)} --backbone pixels --resize-mode {SPACES['pixels']} "
        f"--metrics {metrics}",
        f"imgdist eval {q(files['set real'])} {q(shifted)} --backbone {FEATURE_BACKBONE} --metrics {metrics}",
        f"imgdist eval {q(files['set real'])} {q(noise_dir)} --backbone {FEATURE_BACKBONE} --metrics {metrics} "
        f"--report {q(files['report'])}",
    ]


def _save_json(output: _Output, result: DemoResult) -> None:
    import json

    with open(output.path("demo.json"), "w", encoding="utf-8") as fh:
        json.dump(result.to_dict(), fh, indent=2, allow_nan=False)
        fh.write("\n")
