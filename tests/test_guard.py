"""The guard: bad invocations and bad files, as a careless or hostile user would make them.

Every row runs the real command line (``imgdist.cli.main``) and must end in one of two ways:

* ``ERR``: exit status 2 and exactly one stderr line ``imgdist: error: ...`` containing the given
  text (which names the file or option and the cause); nothing on stdout;
* ``SAME``: exit status 0, the same numbers as the clean run of the same command, and on stderr
  only ``imgdist: warning: ...`` lines, one of them containing the given text.

Never a traceback, never a wrong number. A new user-facing error gets a row here.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tarfile
import zipfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from imgdist.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 4
N = 24
PIX = ["--backbone", "pixels", "--resize-mode", "native"]
FAST = ["--no-progress", "--no-cache", "--workers", "0"]


def _images(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(60, 190, (n, 1, 1, 3)) + shift
    return np.clip(np.rint(base + rng.normal(0, 30, (n, SIZE, SIZE, 3))), 0, 255).astype(np.uint8)


def _folder(path, images):
    path.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(path / f"im_{i:03d}.png")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every file the table refers to, made once: ``{name}`` in a row is replaced by its path."""
    root = tmp_path_factory.mktemp("guard")
    f = {"root": root}
    f["real"] = _folder(root / "real", _images(N, 1))
    f["fake"] = _folder(root / "fake", _images(N, 2, shift=20))
    f["empty"] = root / "empty"
    f["empty"].mkdir()
    f["one"] = _folder(root / "one", _images(1, 3))
    # a folder with one unreadable file among good ones (skip: same numbers as the good ones alone)
    f["fake_bad"] = root / "fake_bad"
    shutil.copytree(f["fake"], f["fake_bad"])
    (f["fake_bad"] / "zz_text.png").write_text("not an image")
    png = (f["real"] / "im_000.png").read_bytes()
    (f["root"] / "truncated.png").write_bytes(png[: len(png) // 2])
    f["truncated_png"] = root / "truncated.png"
    f["a"], f["b"] = f["real"] / "im_000.png", f["real"] / "im_001.png"
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(root / "other_size.png")
    f["other_size"] = root / "other_size.png"
    big = np.random.default_rng(5).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(big).save(root / "photo.png")
    f["photo"] = root / "photo.png"
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(root / "tiny.png")
    f["tiny"] = root / "tiny.png"
    (root / "corrupt.png").write_bytes(os.urandom(300))
    f["corrupt"] = root / "corrupt.png"  # also a "weights file" that is not one
    torch.save({"conv.weight": torch.zeros(3)}, root / "wrong_keys.pth")
    f["wrong_keys"] = root / "wrong_keys.pth"
    torch.save({"a": np.array([1.0])}, root / "objects.pth")  # unpickling it would need code
    f["objects"] = root / "objects.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 384), "pos_embed": torch.zeros(1, 1370, 384)}, root / "dino.pth")
    f["dino"] = root / "dino.pth"  # a DINOv2-style checkpoint
    raw = (root / "dino.pth").read_bytes()
    (root / "dino_truncated.pth").write_bytes(raw[: len(raw) // 2])
    f["dino_truncated"] = root / "dino_truncated.pth"
    np.save(root / "floats.npy", np.full((4, SIZE, SIZE, 3), 2.5))
    f["floats_npy"] = root / "floats.npy"
    np.save(root / "bad_shape.npy", np.zeros((4, 5)))
    f["bad_shape_npy"] = root / "bad_shape.npy"
    f["a_file"] = root / "a_file.txt"
    f["a_file"].write_text("x")
    # entries named like images that are not readable files
    f["fake_fifo"] = root / "fake_fifo"
    shutil.copytree(f["fake"], f["fake_fifo"])
    os.mkfifo(f["fake_fifo"] / "zz_pipe.png")
    f["fake_link"] = root / "fake_link"
    shutil.copytree(f["fake"], f["fake_link"])
    os.symlink(root / "nowhere.png", f["fake_link"] / "zz_link.png")
    os.mkfifo(root / "pipe.npz")  # a FIFO named as a whole set
    f["fifo_npz"] = root / "pipe.npz"
    os.symlink(root / "nowhere.npy", root / "gone.npy")
    f["broken_link_npy"] = root / "gone.npy"
    # the fake images in a zip, with one more member marked as encrypted (sorted last)
    f["fake_zip_encrypted"] = root / "fake_locked.zip"
    with zipfile.ZipFile(f["fake_zip_encrypted"], "w") as zf:
        for png in sorted(f["fake"].iterdir()):
            zf.writestr(png.name, png.read_bytes())
        zf.writestr("zz_locked.png", png.read_bytes())
    raw = bytearray(f["fake_zip_encrypted"].read_bytes())
    for signature, flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.rfind(signature)  # the last member's local and central headers
        raw[at + flags] |= 1
    f["fake_zip_encrypted"].write_bytes(bytes(raw))
    # the fake images in a tar (GNU tar's format) whose second header fails its checksum
    f["tar_damaged"] = root / "damaged.tar"
    with tarfile.open(f["tar_damaged"], "w", format=tarfile.GNU_FORMAT) as tf:
        for png in sorted(f["fake"].iterdir()):
            tf.add(png, arcname=png.name)
    raw = bytearray(f["tar_damaged"].read_bytes())
    at = raw.find(b"im_001.png\x00")
    raw[at + 148:at + 156] = b"0000000\x00"
    f["tar_damaged"].write_bytes(bytes(raw))
    # a PNG header claiming 100000 x 100000 pixels
    f["bomb"] = _folder(root / "bomb", _images(3, 4))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    (f["bomb"] / "zz_bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(
        ">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    f["small"] = _folder(root / "small", _images(N, 6)[:, :2, :2])  # 2 x 2: 12 values at native size
    # a feature cache whose database file was overwritten with garbage
    f["garbage_cache"] = root / "garbage_cache"
    assert main(["eval", str(f["real"]), str(f["fake"]), *PIX, "--metrics", "fid", "--no-progress",
                 "--cache-dir", str(f["garbage_cache"])]) == 0
    for db in f["garbage_cache"].glob("*.sqlite"):
        db.write_bytes(os.urandom(4096))
    # statistics: a valid file of the real set with the pixels backbone
    f["stats"] = root / "real_stats.npz"
    assert main(["stats", str(f["real"]), "-o", str(f["stats"]), *PIX, *FAST]) == 0
    # tampered copies of it, as the issue found them
    with np.load(f["stats"]) as data:
        good = {k: data[k] for k in data.files}

    def tampered(name, **changes):
        np.savez(root / f"{name}.npz", **{**good, **changes})
        f[name] = root / f"{name}.npz"

    sigma = good["sigma"]
    negative = sigma.copy()
    negative[0, 0] = -50
    tampered("sigma_negative_entry", sigma=negative)
    tampered("sigma_negated", sigma=-sigma)
    asymmetric = sigma.copy()
    asymmetric[0, 1] += 0.5
    tampered("sigma_asymmetric", sigma=asymmetric)
    tampered("n_vector", n=np.array([5, 6]))
    tampered("n_negative", n=np.int64(-5))
    mu_nan = good["mu"].copy()
    mu_nan[3] = np.nan
    tampered("mu_nan", mu=mu_nan)
    tampered("mu_wrong_length", mu=good["mu"][:-1])
    raw = f["stats"].read_bytes()
    (root / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    f["truncated_npz"] = root / "truncated.npz"
    (root / "empty.npz").write_bytes(b"")
    f["empty_npz"] = root / "empty.npz"
    np.savez(root / "pytorch_fid_format.npz", mu=good["mu"], sigma=good["sigma"])  # no n, no provenance
    f["stats_pytorch_fid"] = root / "pytorch_fid_format.npz"
    assert main(["stats", str(f["fake"]), "-o", str(root / "fake_stats.npz"), *PIX, *FAST]) == 0
    f["fake_stats"] = root / "fake_stats.npz"
    np.save(root / "renamed.npy", np.zeros((3, SIZE, SIZE, 3), np.uint8))
    os.replace(root / "renamed.npy", root / "renamed.npz")
    f["npy_renamed_npz"] = root / "renamed.npz"
    _hardening_ii_files(f, root, good)
    _hardening_iii_files(f, root, good)
    return f


def _hardening_ii_files(f, root, good):
    """The files of issue 18's rows."""
    from imgdist.extraction.backbones import load_backbone

    tampered = {"n_huge": {**good, "n": np.int64(10**18)}}
    with np.load(f["fake_stats"]) as data:
        tampered["fake_bare"] = {"mu": data["mu"], "sigma": data["sigma"]}  # no n, no provenance
    tampered["real_bare"] = {"mu": good["mu"], "sigma": good["sigma"]}
    for name, arrays in tampered.items():
        np.savez(root / f"{name}.npz", **arrays)
        f[name] = root / f"{name}.npz"
    # EfficientNet-Lite0 weights with NaN in the first convolution, and with it zeroed (finite, but
    # every image then gives one feature vector)
    state = {k: v.clone() for k, v in load_backbone("efficientnet-lite0").state_dict().items()}
    state["_conv_stem.weight"][0] = float("nan")
    torch.save(state, root / "nan_lite.pth")
    state["_conv_stem.weight"].zero_()
    torch.save(state, root / "zero_lite.pth")
    f["nan_lite"], f["zero_lite"] = root / "nan_lite.pth", root / "zero_lite.pth"
    f["three"] = _folder(root / "three", _images(3, 7))
    f["fake20"] = _folder(root / "fake20", _images(20, 8, shift=20))
    f["held"] = _folder(root / "held", _images(N, 9))
    f["held_overlap"] = _folder(root / "held_overlap", _images(N - 2, 10))
    for png in sorted(f["real"].iterdir())[:2]:  # two training images, renamed
        shutil.copy(png, f["held_overlap"] / f"copy_{png.name}")
    same = _images(1, 11)
    f["same_a"] = _folder(root / "same_a", np.repeat(same, N, axis=0))
    f["same_b"] = _folder(root / "same_b", np.repeat(_images(1, 12), N, axis=0))
    # class folders that share no class
    f["cls_real"], f["cls_fake"] = root / "cls_real", root / "cls_fake"
    _folder(f["cls_real"] / "cat", _images(4, 13))
    _folder(f["cls_fake"] / "dog", _images(4, 14))
    # every image unreadable; and one image of another size among good ones
    f["all_bad"] = root / "all_bad"
    f["all_bad"].mkdir()
    for name in ("x.png", "y.png"):
        (f["all_bad"] / name).write_text("not an image")
    f["sizes_clean"] = _folder(root / "sizes_clean", _images(2, 15))
    f["sizes_mixed"] = root / "sizes_mixed"
    shutil.copytree(f["sizes_clean"], f["sizes_mixed"])
    shutil.copy(f["other_size"], f["sizes_mixed"] / "zz_other_size.png")
    _lpips_files(f, root)


def _lpips_files(f, root):
    """The files of issue 24's rows: LPIPS stand-in weights, a photo of another size."""
    import lpips_stand_in

    torch.save(lpips_stand_in.lpips_state_dict("squeeze"), root / "lpips_squeeze.pth")
    f["lpips_squeeze"] = root / "lpips_squeeze.pth"
    wide = np.random.default_rng(16).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(wide).save(root / "photo_wide.png")
    f["photo_wide"] = root / "photo_wide.png"


def _npy_bytes(shape, data=b"\0" * 4000, descr="|u1"):
    """A .npy file whose header declares ``shape``, followed by ``data`` (what the file holds)."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def _hardening_iii_files(f, root, good):
    """The files of issue 23's rows."""
    huge, negative = (10**12, 256, 256, 3), (-1, SIZE, SIZE, 3)
    for name, member, shape, compression in (("forged_npz", "images", huge, zipfile.ZIP_STORED),
                                             ("forged_npz_deflated", "images", huge, zipfile.ZIP_DEFLATED),
                                             ("adm_huge", "arr_0", huge, zipfile.ZIP_STORED),
                                             ("adm_negative", "arr_0", negative, zipfile.ZIP_STORED)):
        f[name] = root / f"{name}.npz"
        with zipfile.ZipFile(f[name], "w", compression=compression) as zf:
            zf.writestr(f"{member}.npy", _npy_bytes(shape))
    f["forged_npy"] = root / "forged.npy"
    f["forged_npy"].write_bytes(_npy_bytes(huge))
    f["stats_forged"] = root / "stats_forged.npz"  # a statistics file whose mu claims 8 TB
    with zipfile.ZipFile(f["stats_forged"], "w") as zf:
        zf.writestr("mu.npy", _npy_bytes((10**12,), descr="<f8"))
        zf.writestr("sigma.npy", _npy_bytes((2, 2), np.eye(2).tobytes(), descr="<f8"))
    objects = np.empty(2, dtype=object)
    objects[:] = [{"mu": 1}, [2]]
    small = {"sigma": np.eye(2), "mu_s": np.zeros(2), "sigma_s": np.eye(2)}
    np.savez(root / "adm_object_mu.npz", arr_0=_images(N, 16), mu=objects, **small)
    np.savez(root / "adm_object_provenance.npz", arr_0=_images(N, 16), provenance_backbone=objects)
    f["adm_object_mu"], f["adm_object_provenance"] = root / "adm_object_mu.npz", root / "adm_object_provenance.npz"
    # an image array that a careless -o would overwrite, directly or through links
    f["imgs_npz"] = root / "imgs.npz"
    np.savez(f["imgs_npz"], images=_images(N, 1))
    os.symlink(f["imgs_npz"], root / "imgs_symlink.npz")
    os.link(f["imgs_npz"], root / "imgs_hardlink.npz")
    f["imgs_symlink"], f["imgs_hardlink"] = root / "imgs_symlink.npz", root / "imgs_hardlink.npz"

    class NanNet(torch.nn.Module):
        def forward(self, x):
            return torch.log(x - 1e3)  # NaN for every input: broken weights in miniature

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript itself
        torch.jit.script(NanNet()).save(str(root / "nan_net.pt"))
    f["nan_net"] = root / "nan_net.pt"


def _fill(arg, files):
    arg = str(arg)
    for key, value in files.items():
        arg = arg.replace("{" + key + "}", str(value))
    return arg


def _run(capsys, monkeypatch, files, argv, env=None):
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, _fill(value, files))
    code = main([_fill(a, files) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _values(out):
    data = json.loads(out)
    if "metrics" in data:
        return {k: v["value"] for k, v in data["metrics"].items()}
    return {k: v for k, v in data.items() if isinstance(v, float)}


EVAL = ["eval", "{real}", "{fake}", *PIX, "--metrics", "fid,kid,prdc", "--kid-subset-size", "10",
        "--kid-subsets", "5", "--json", *FAST]
CACHED = [a for a in EVAL if a != "--no-cache"]


def STATS_EVAL(name):  # noqa: N802 - reads as a row builder in the table
    return ["eval", "{" + name + "}", "{fake}", *PIX, "--metrics", "fid", *FAST]

STATS = ["stats", "{real}", *PIX, *FAST]
COMPARE = ["compare", "{a}", "{b}", "--backbone", "none", "--json"]
ROBUST = ["robustness", "{photo}", "{photo}", "--backbone", "none", "--json"]
LITE = ["--backbone", "efficientnet-lite0"]

ERR = "error"
SAME = "same"
LPIPS = ["compare", "{photo}", "{photo}", "--backbone", "none", "--lpips"]

# (id, argv, environment, outcome, text the one stderr line must contain)
CASES = [
    # metric settings refused before any extraction
    ("bootstrap-negative", EVAL + ["--bootstrap", "-1"], None, ERR, "bootstrap (--bootstrap) must be at least 0"),
    ("pr-k-zero", EVAL + ["--pr-k", "0"], None, ERR, "pr_k (--pr-k) must be at least 1, got 0"),
    ("dc-k-zero", EVAL + ["--dc-k", "0"], None, ERR, "dc_k (--dc-k) must be at least 1"),
    ("is-splits-zero", EVAL + ["--is-splits", "0"], None, ERR, "is_splits (--is-splits) must be at least 1"),
    ("kid-subset-size-1", EVAL + ["--kid-subset-size", "1"], None, ERR, "kid_subset_size (--kid-subset-size) must be at least 2"),
    ("kid-subsets-0", EVAL + ["--kid-subsets", "0"], None, ERR, "kid_subsets (--kid-subsets) must be at least 1"),
    ("ci-above-1", EVAL + ["--ci", "1.5"], None, ERR, "ci (--ci) must lie strictly between 0 and 1"),
    ("ci-zero", EVAL + ["--ci", "0"], None, ERR, "ci (--ci) must lie strictly between 0 and 1"),
    ("seed-negative", EVAL + ["--seed", "-3"], None, ERR, "seed (--seed) must be at least 0"),
    ("pr-k-too-large", EVAL + ["--pr-k", str(N)], None, ERR, f"pr_k (--pr-k) {N} needs more than {N} images"),
    ("dc-k-too-large", EVAL + ["--dc-k", "40"], None, ERR, "dc_k (--dc-k) 40 needs more than 40 real images"),
    ("rarity-k-too-large", EVAL + ["--metrics", "rarity", "--rarity-k", str(N)], None, ERR,
     f"rarity: rarity_k (--rarity-k) {N} needs more than {N} real images"),
    ("ppr-a-zero", EVAL + ["--metrics", "ppr", "--ppr-a", "0"], None, ERR, "ppr_a (--ppr-a) must lie between"),
    ("ppr-k-too-large", EVAL + ["--metrics", "p-recall", "--ppr-k", str(N)], None, ERR,
     f"ppr_k (--ppr-k) {N} needs more than {N} fake images"),
    ("prc-ball-too-large", EVAL + ["--metrics", "pr-cover", "--prc-k", "9"], None, ERR,
     "prc_c (--prc-c) x prc_k (--prc-k) = 27 needs more than 27"),
    ("rke-sigma-zero", EVAL + ["--metrics", "rke,rrke", "--rke-sigma", "0"], None, ERR,
     "rke_sigma (--rke-sigma) must lie between"),
    ("sw-directions-zero", EVAL + ["--metrics", "sw", "--sw-directions", "0"], None, ERR,
     "sw_directions (--sw-directions) must be at least 1"),
    ("is-without-logits", EVAL + ["--metrics", "is"], None, ERR, "is: needs a classifier, and this backbone has no logits"),
    ("unknown-metric", EVAL + ["--metrics", "fid,fod"], None, ERR, "unknown metric 'fod'"),
    ("no-metric", EVAL + ["--metrics", " , "], None, ERR, "no metric chosen"),
    # statistics files are untrusted: refused with the file's name and what is wrong
    ("stats-sigma-negative-entry", STATS_EVAL("sigma_negative_entry"), None, ERR,
     "sigma_negative_entry.npz: sigma is not positive semi-definite (smallest eigenvalue -5"),
    ("stats-sigma-negated", STATS_EVAL("sigma_negated"), None, ERR,
     "sigma_negated.npz: sigma is not positive semi-definite"),
    ("stats-sigma-asymmetric", STATS_EVAL("sigma_asymmetric"), None, ERR,
     "sigma_asymmetric.npz: sigma is not symmetric"),
    ("stats-n-vector", STATS_EVAL("n_vector"), None, ERR, "n_vector.npz: n must be the number of images"),
    ("stats-n-negative", STATS_EVAL("n_negative"), None, ERR, "n_negative.npz: n must be the number of images"),
    ("stats-mu-nan", STATS_EVAL("mu_nan"), None, ERR, "mu_nan.npz: mu has 1 non-finite entry"),
    ("stats-mu-wrong-length", STATS_EVAL("mu_wrong_length"), None, ERR, "mu_wrong_length.npz: sigma has shape"),
    ("stats-truncated", STATS_EVAL("truncated_npz"), None, ERR, "truncated.npz: cannot read the archive"),
    ("stats-empty-file", STATS_EVAL("empty_npz"), None, ERR, "empty.npz: the file is empty"),
    ("stats-npy-renamed", STATS_EVAL("npy_renamed_npz"), None, ERR, "renamed.npz: holds a single .npy array"),
    ("stats-as-fake-truncated", ["eval", "{real}", "{truncated_npz}", *PIX, "--metrics", "fid", *FAST], None,
     ERR, "truncated.npz: cannot read the archive"),
    ("kid-on-statistics", ["eval", "{stats}", "{fake}", *PIX, "--metrics", "kid", *FAST], None, ERR,
     "kid need(s) images, but real is a statistics file"),
    ("bootstrap-on-statistics", ["eval", "{stats}", "{fake}", *PIX, "--metrics", "fid", "--bootstrap", "5", *FAST],
     None, ERR, "bootstrap intervals need(s) images, but real is a statistics file"),
    ("fid-one-image-set", ["eval", "{one}", "{fake}", *PIX, "--metrics", "fid,kid", *FAST], None, ERR,
     "fid, kid: the real set has 1 image(s); a covariance needs at least 2 images per set"),
    # outputs checked before the work
    ("stats-into-missing-folder", STATS + ["-o", "{root}/missing/ref.npz"], None, ERR, "missing does not exist"),
    ("stats-without-npz", STATS + ["-o", "{root}/ref.txt"], None, ERR, "must end in .npz"),
    ("stats-onto-a-folder", STATS + ["-o", "{empty}"], None, ERR, "must end in .npz"),
    ("stats-under-a-file", STATS + ["-o", "{a_file}/ref.npz"], None, ERR, "is not a folder"),
    ("plot-into-missing-folder", ROBUST + ["--plot", "{root}/missing/r.png"], None, ERR, "missing does not exist"),
    ("plot-unknown-format", ROBUST + ["--plot", "{root}/r.gif"], None, ERR, "must end in .png or .pdf"),
    ("report-into-missing-folder", EVAL + ["--report", "{root}/missing/r.html"], None, ERR, "missing does not exist"),
    ("report-not-html", EVAL + ["--report", "{root}/r.txt"], None, ERR, "must end in .html or .htm"),
    # devices this machine does not have, and memory it does not have
    ("device-banana", EVAL + ["--device", "banana"], None, ERR, "device (--device) 'banana' is not a device"),
    ("device-cuda", EVAL + ["--device", "cuda"], None, ERR, "--device) cuda: CUDA is not available"),
    ("device-cuda-1", EVAL + ["--device", "cuda:1"], None, ERR, "--device) cuda:1: CUDA is not available"),
    ("device-mps", EVAL + ["--device", "mps"], None, ERR, "MPS is not available"),
    ("batch-size-zero", EVAL + ["--batch-size", "0"], None, ERR, "batch_size (--batch-size) must be at least 1"),
    ("batch-size-huge", ["eval", "{real}", "{fake}", *LITE, "--metrics", "fid", "--batch-size", "100000000", *FAST],
     None, ERR, "batch_size (--batch-size) 100000000 needs about"),
    ("workers-negative", EVAL + ["--workers", "-1"], None, ERR, "workers (--workers) must be at least 0"),
    # refused from the backbone's spec, before its weights are looked for (or downloaded)
    ("batch-size-huge-before-weights", ["eval", "{real}", "{fake}", "--backbone", "inception", "--metrics", "fid",
                                        "--batch-size", "100000000", *FAST], {"IMGDIST_OFFLINE": "1"}, ERR,
     "batch_size (--batch-size) 100000000 needs about"),
    ("precision-fp16-on-cpu", EVAL + ["--precision", "fp16", "--device", "cpu"], None, ERR,
     "precision (--precision) fp16 is only offered on GPU"),
    ("torchrun-without-rank", EVAL + ["--report", "{root}/r.html"], {"WORLD_SIZE": "2"}, ERR,
     "WORLD_SIZE is set but RANK is not: launch with torchrun"),
    ("torchrun-world-size-garbage", EVAL, {"WORLD_SIZE": "two"}, ERR, "WORLD_SIZE='two'"),
    ("torchrun-local-rank-garbage", EVAL, {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "x",
                                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, ERR,
     "LOCAL_RANK='x'"),
    ("torchrun-rank-beyond-world", EVAL, {"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0",
                                          "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, ERR,
     "RANK=2 is not below WORLD_SIZE=2"),
    # backbones, modes, layers, weights
    ("unknown-backbone", EVAL + ["--backbone", "banana"], None, ERR, "unknown backbone 'banana'"),
    ("unknown-resize-mode", EVAL + ["--resize-mode", "banana"], None, ERR, "has no resize mode 'banana'"),
    ("unknown-dims", ["eval", "{real}", "{fake}", *LITE, "--dims", "100", *FAST], None, ERR,
     "has no 100-dimensional feature layer"),
    ("weights-missing", ["eval", "{real}", "{fake}", *LITE, "--weights", "{root}/nope.pth", *FAST], None, ERR,
     "nope.pth does not exist"),
    ("weights-not-a-weights-file", ["eval", "{real}", "{fake}", *LITE, "--weights", "{corrupt}", *FAST], None,
     ERR, "corrupt.png"),
    ("weights-wrong-keys", ["compare", "{a}", "{b}", *LITE, "--weights", "{wrong_keys}"], None, ERR,
     "wrong_keys.pth: not efficientnet-lite0 weights"),
    ("weights-with-python-objects", ["eval", "{real}", "{fake}", *LITE, "--weights", "{objects}", *FAST], None,
     ERR, "objects.pth: cannot read it as a PyTorch weights file (it holds Python objects"),
    ("weights-dinov2-for-clip", ["eval", "{real}", "{fake}", "--backbone", "clip-vit-b32", "--weights", "{dino}",
                                 *FAST], None, ERR,
     "dino.pth: not CLIP ViT-B/32 image encoder (clip-vit-b32) weights: it holds no visual.* tensors"),
    ("weights-truncated", ["eval", "{real}", "{fake}", "--backbone", "dinov2-vit-s14", "--weights",
                           "{dino_truncated}", *FAST], None, ERR,
     "dino_truncated.pth: truncated: the zip archive's end record is missing"),
    ("cmmd-beside-fid-offline", EVAL[:3] + ["--metrics", "fid,cmmd", *FAST], {"IMGDIST_OFFLINE": "1"}, ERR,
     "inception weights not found (offline: IMGDIST_OFFLINE=1)"),
    ("metric-at-unknown-network", EVAL + ["--metrics", "fid,fid@resnet9"], None, ERR, "unknown backbone 'resnet9'"),
    ("metric-at-nothing", EVAL + ["--metrics", "fid@"], None, ERR, "name the network after '@'"),
    ("weights-for-a-network-not-in-the-run", EVAL + ["--weights", "clip-vit-b32={a}"], None, ERR,
     "--weights clip-vit-b32=...: this run uses no clip-vit-b32 network"),
    ("clip-score-without-text-tower", EVAL + ["--metrics", "clip-score"], None, ERR,
     "clip-score: needs a text tower for the prompts, which pixels does not have"),
    ("clip-score-prompt-file-missing", EVAL + ["--metrics", "clip-score@clip-vit-b32", "--prompts", "{root}/nope.csv"],
     None, ERR, "nope.csv: no such prompt file"),
    ("fwd-in-a-space-with-weights", EVAL + ["--metrics", "fwd@wavelets", "--weights", "wavelets={a}"], None, ERR,
     "--weights: the wavelet space (fwd) has no network, weights or layers to set"),
    ("score-needs-no-real", ["score", "{fake}", *PIX, "--metrics", "fid", *FAST], None, ERR,
     "fid: need(s) a real set to compare with; on one set only"),
    ("ct-without-held-out", EVAL + ["--metrics", "ct"], None, ERR, "needs held-out real images"),
    ("per-image-not-csv", EVAL + ["--per-image", "{root}/x.txt"], None, ERR, "must end in .csv"),
    ("per-class-flat-folders", EVAL + ["--per-class"], None, ERR, "lies directly in the real folder"),
    ("copies-percentile-out-of-range", EVAL + ["--copies-percentile", "150"], None, ERR,
     "copies_percentile (--copies-percentile) must lie between 0 and 100"),
    ("weights-for-pixels", EVAL + ["--weights", "{wrong_keys}"], None, ERR,
     "wrong_keys.pth: the pixels backbone has no weights to load"),
    ("weights-without-backbone", COMPARE + ["--weights", "{wrong_keys}"], None, ERR,
     "weights were given, but no backbone"),
    ("custom-backbone-not-torchscript", ["eval", "{real}", "{fake}", "--backbone", "{corrupt}", *FAST], None,
     ERR, "corrupt.png: not a loadable TorchScript file"),
    ("custom-input-size-zero", ["eval", "{real}", "{fake}", "--backbone", "{corrupt}", "--input-size", "0", *FAST],
     None, ERR, "input_size (--input-size) must be at least 8"),
    # sources
    ("missing-folder", EVAL[:1] + ["{root}/nope"] + EVAL[2:], None, ERR, "nope: no such file or directory"),
    ("empty-folder", EVAL[:1] + ["{empty}"] + EVAL[2:], None, ERR, "empty: no images found in folder"),
    ("unreadable-image-raise", EVAL[:2] + ["{fake_bad}"] + EVAL[3:], None, ERR,
     "zz_text.png: not a readable image"),
    ("unreadable-image-skip", EVAL[:2] + ["{fake_bad}"] + EVAL[3:] + ["--on-error", "skip"], None, SAME,
     "zz_text.png"),
    ("array-out-of-range", ["eval", "{real}", "{floats_npy}", *PIX, "--metrics", "fid", *FAST], None, ERR,
     "floats.npy[0]: float image with values 2.5..2.5"),
    # a 2-D array is a feature matrix (N x d), which images cannot be compared with
    ("array-2d-beside-images", ["eval", "{real}", "{bad_shape_npy}", *PIX, "--metrics", "fid", *FAST], None, ERR,
     "bad_shape.npy is an N x d feature matrix, and the real side is not"),
    ("fifo-named-like-an-image", EVAL[:2] + ["{fake_fifo}"] + EVAL[3:], None, ERR,
     "zz_pipe.png: not a regular file (a FIFO (named pipe))"),
    ("fifo-skipped", EVAL[:2] + ["{fake_fifo}"] + EVAL[3:] + ["--on-error", "skip"], None, SAME, "zz_pipe.png"),
    ("broken-symlink", EVAL[:2] + ["{fake_link}"] + EVAL[3:], None, ERR, "zz_link.png: broken symbolic link"),
    ("broken-symlink-skipped", EVAL[:2] + ["{fake_link}"] + EVAL[3:] + ["--on-error", "skip"], None, SAME,
     "zz_link.png"),
    ("fifo-named-as-the-set", ["eval", "{real}", "{fifo_npz}", *PIX, "--metrics", "fid", *FAST], None, ERR,
     "pipe.npz: not a regular file (a FIFO (named pipe))"),
    ("broken-link-named-as-the-set", ["eval", "{broken_link_npy}", "{fake}", *PIX, "--metrics", "fid", *FAST], None,
     ERR, "gone.npy: broken symbolic link"),
    ("fifo-with-the-cache-on", CACHED[:2] + ["{fake_fifo}"] + CACHED[3:], None, ERR, "zz_pipe.png: not a regular file"),
    ("fifo-skipped-with-the-cache-on", CACHED[:2] + ["{fake_fifo}"] + CACHED[3:] + ["--on-error", "skip"], None, SAME,
     "zz_pipe.png"),
    ("zip-encrypted-member", EVAL[:2] + ["{fake_zip_encrypted}"] + EVAL[3:], None, ERR,
     "fake_locked.zip:zz_locked.png: cannot read from archive (File 'zz_locked.png' is encrypted"),
    ("zip-encrypted-member-skipped", EVAL[:2] + ["{fake_zip_encrypted}"] + EVAL[3:] + ["--on-error", "skip"], None,
     SAME, "zz_locked.png: cannot read from archive"),
    ("tar-damaged-header", EVAL[:2] + ["{tar_damaged}"] + EVAL[3:], None, ERR,
     "damaged.tar: cannot read archive (damaged after 1 member(s)"),
    ("png-header-bomb", EVAL[:2] + ["{bomb}"] + EVAL[3:], None, ERR,
     "zz_bomb.png: refused as a decompression bomb: 10000000000 pixels is over the limit of 89478485 (set "
     "IMGDIST_MAX_PIXELS"),
    ("native-sizes-differ-between-sets", ["eval", "{real}", "{small}", *PIX, "--metrics", "fid", *FAST], None, ERR,
     "the real set has 48 feature values per image, the fake set 12: resize mode 'native' keeps each image's"),
    # statistics files as pytorch-fid writes them (mu and sigma only), and on both sides
    ("stats-pytorch-fid-format", STATS_EVAL("stats_pytorch_fid") + ["--json"], None, SAME,
     "statistics without provenance"),
    ("stats-on-both-sides", ["eval", "{stats}", "{fake_stats}", "--metrics", "fid", "--json"], None, SAME, ""),
    # the feature cache: never a traceback, never a wrong number
    ("cache-dir-is-a-file", CACHED + ["--cache-dir", "{a_file}"], None, SAME, "feature cache"),
    ("cache-file-garbage", CACHED + ["--cache-dir", "{garbage_cache}"], None, SAME, "could not be read (file is not a database); moved it to"),
    ("cache-env-is-a-file", CACHED, {"IMGDIST_CACHE": "{a_file}"}, SAME, "feature cache"),
    # pairs
    ("compare-missing", ["compare", "{a}", "{root}/nope.png", "--backbone", "none"], None, ERR,
     "nope.png: no such file"),
    ("compare-truncated", ["compare", "{a}", "{truncated_png}", "--backbone", "none"], None, ERR, "truncated.png"),
    ("compare-sizes-differ", ["compare", "{a}", "{other_size}", "--backbone", "none"], None, ERR,
     "pixel distances need equal sizes"),
    ("robustness-tiny", ["robustness", "{tiny}", "--backbone", "none"], None, ERR, "too small for shifts"),
    # the environment
    ("env-max-pixels", EVAL, {"IMGDIST_MAX_PIXELS": "lots"}, ERR, "IMGDIST_MAX_PIXELS='lots'"),
    ("env-offline", ["eval", "{real}", "{fake}", "--backbone", "inception", *FAST], {"IMGDIST_OFFLINE": "maybe"},
     ERR, "IMGDIST_OFFLINE='maybe'"),
    # issue 18: wrong or mislabelled numbers
    ("weights-nan", ["eval", "{real}", "{fake}", *LITE, "--weights", "{nan_lite}", "--metrics", "fid", *FAST], None,
     ERR, "nan_lite.pth: tensor '_conv_stem.weight' holds 27 non-finite value(s) (NaN or infinity)"),
    ("weights-nan-compare", ["compare", "{a}", "{b}", *LITE, "--weights", "{nan_lite}"], None, ERR,
     "nan_lite.pth: tensor '_conv_stem.weight' holds 27 non-finite value(s)"),
    ("features-collapsed-broken-network", ["eval", "{real}", "{fake}", *LITE, "--weights", "{zero_lite}", "--metrics",
                                           "fid", *FAST], None, ERR,
     "the real set's 24 images differ, yet efficientnet-lite0 gives every one the same feature vector"),
    ("features-both-sides-one-point", ["eval", "{same_a}", "{same_b}", *PIX, "--metrics", "fid", *FAST], None, ERR,
     "the real and the fake set each collapse to a single pixels feature vector"),
    ("identical-images-one-side", ["eval", "{real}", "{same_b}", *PIX, "--metrics", "fid", "--json", *FAST], None,
     SAME, ""),
    ("stats-both-without-provenance", ["eval", "{real_bare}", "{fake_bare}", "--metrics", "fid", "--json"], None,
     SAME, "the numbers print as FD[unknown], not FID"),
    ("stats-both-without-provenance-asserted", ["eval", "{real_bare}", "{fake_bare}", "--backbone", "pixels",
                                                "--metrics", "fid", "--json"], None, SAME,
     "taken to be pixels features because --backbone says so"),
    ("ct-held-out-one-image", ["eval", "{real}", "{fake}", *PIX, "--metrics", "ct", "--real-test", "{one}", *FAST],
     None, ERR, "ct: the held-out set (--real-test) has 1 image(s); C_T compares each cell's fakes"),
    ("ct-held-out-is-training", ["eval", "{real}", "{fake}", *PIX, "--metrics", "ct", "--real-test", "{real}", *FAST],
     None, ERR, "every one of its 24 images is also in the training (real) set, by content"),
    ("ct-held-out-overlaps", ["eval", "{real}", "{fake}", *PIX, "--metrics", "ct", "--ct-cells", "1", "--real-test",
                              "{held_overlap}", "--json", *FAST], None, SAME,
     "2 of its 24 images are also in the training (real) set, by content"),
    ("ct-too-few-fakes", ["eval", "{real}", "{fake20}", *PIX, "--metrics", "ct", "--real-test", "{held}", *FAST],
     None, ERR, "ct: the fake set has 20 images; C_T uses only k-means cells holding at least 21 fakes"),
    ("stats-n-beyond-any-dataset", STATS_EVAL("n_huge"), None, ERR,
     "n_huge.npz: n must be the number of images, an integer >= 2, got int64 1000000000000000000 (no image set"),
    # issue 18: refused before extraction, or not at all
    ("stats-dim-cannot-match-backbone", ["eval", "{stats_pytorch_fid}", "{fake}", *LITE, "--metrics", "fid", *FAST],
     None, ERR, "pytorch_fid_format.npz: 48-dimensional statistics cannot be compared with the 1280-dimensional"),
    ("per-class-no-shared-class", ["eval", "{cls_real}", "{cls_fake}", *PIX, "--metrics", "fid", "--per-class",
                                   *FAST], None, ERR, "--per-class: no class subfolder name is shared"),
    ("per-image-empty-name", EVAL + ["--per-image", ""], None, ERR, "--per-image '': the file name is empty"),
    ("report-empty-name", EVAL + ["--report", ""], None, ERR, "--report '': the file name is empty"),
    ("compare-every-image-unreadable", ["compare", "{a}", "{all_bad}", "--backbone", "none", "--on-error", "skip"],
     None, ERR, "all_bad: none of its 2 image(s) could be compared (skipped 2 unreadable image(s)"),
    ("compare-size-mismatch-not-unreadable", ["compare", "{a}", "{sizes_mixed}", "--backbone", "none", "--on-error",
                                              "skip", "--json"], None, SAME,
     "skipped 1 differently sized image(s): "),
    ("authenticity-on-three-reals", ["eval", "{three}", "{fake}", *PIX, "--metrics", "authenticity,copies", "--json",
                                     *FAST], None, SAME, ""),
    ("per-image-on-three-reals-names-the-flag", ["eval", "{three}", "{fake}", *PIX, "--metrics", "authenticity",
                                                 "--per-image", "{root}/p.csv", *FAST], None, ERR,
     "realism: pr_k (--pr-k) 3 needs more than 3 images per set, and the real set has 3"),
    # issue 23.4: array headers are checked against the file before anything is allocated
    ("npz-header-huge-eval", ["eval", "{real}", "{forged_npz}", *PIX, "--metrics", "fid", *FAST], None, ERR,
     "forged_npz.npz: 'images' declares shape (1000000000000, 256, 256, 3) of uint8, 196,608,000,000,000,000 "
     "bytes, but at most 4,000 bytes can follow its header"),
    ("npz-header-huge-deflated-stats", STATS[:1] + ["{forged_npz_deflated}", "-o", "{root}/s.npz"] + STATS[2:], None,
     ERR, "forged_npz_deflated.npz: 'images' declares shape (1000000000000, 256, 256, 3)"),
    ("npy-header-huge-eval", ["eval", "{forged_npy}", "{fake}", *PIX, "--metrics", "fid", *FAST], None, ERR,
     "forged.npy: the array declares shape (1000000000000, 256, 256, 3) of uint8"),
    ("npz-header-huge-suite-adm", ["eval", "{adm_huge}", "{adm_huge}", "--suite", "adm", "--no-progress"], None, ERR,
     "adm_huge.npz: 'arr_0' declares shape (1000000000000, 256, 256, 3)"),
    ("npz-header-negative-suite-adm", ["eval", "{adm_negative}", "{adm_negative}", "--suite", "adm", "--no-progress"],
     None, ERR, "adm_negative.npz: 'arr_0' declares the impossible shape (-1, 4, 4, 3)"),
    ("stats-file-header-huge", STATS_EVAL("stats_forged"), None, ERR,
     "stats_forged.npz: 'mu' declares shape (1000000000000,) of float64"),
    # issue 23.5: one reader for statistics files and ADM batches
    ("adm-object-array-mu", ["eval", "{adm_object_mu}", "{adm_object_mu}", "--suite", "adm", "--no-progress"], None,
     ERR, "adm_object_mu.npz: 'mu' holds Python objects (object), which only unpickling could read"),
    ("adm-object-array-provenance", ["eval", "{adm_object_provenance}", "{adm_object_provenance}", "--suite", "adm",
                                     "--no-progress"], None, ERR,
     "adm_object_provenance.npz: 'provenance_backbone' holds Python objects"),
    # issue 23.6: an output that is an input would destroy it
    ("stats-output-is-its-input", STATS[:1] + ["{imgs_npz}", "-o", "{imgs_npz}"] + STATS[2:], None, ERR,
     "-o/--output {imgs_npz}: is the input {imgs_npz}; writing it would destroy the input"),
    ("stats-output-links-to-its-input", STATS[:1] + ["{imgs_npz}", "-o", "{imgs_symlink}"] + STATS[2:], None, ERR,
     "is the input {imgs_npz} (through a link)"),
    ("stats-output-hard-link-of-its-input", STATS[:1] + ["{imgs_hardlink}", "-o", "{imgs_npz}"] + STATS[2:], None,
     ERR, "is the input {imgs_hardlink} (through a link)"),
    ("stats-adm-output-is-its-input", ["stats", "{imgs_npz}", "-o", "{imgs_npz}", "--format", "adm", *FAST], None,
     ERR, "-o/--output {imgs_npz}: is the input {imgs_npz}"),
    # issue 23.7: stats refuses what eval refuses
    ("stats-collapsed-broken-network", ["stats", "{real}", "-o", "{root}/collapsed.npz", *LITE, "--weights",
                                        "{zero_lite}", *FAST], None, ERR,
     "real's 24 images differ, yet efficientnet-lite0 gives every one the same feature vector"),
    # issue 23.8: pairs with other weights
    ("compare-zeroed-weights", ["compare", "{a}", "{b}", *LITE, "--weights", "{zero_lite}", "--json"], None, SAME,
     "the same features as {a}, although the pixels differ: the network cannot tell them apart"),
    ("robustness-zeroed-weights", ["robustness", "{photo}", *LITE, "--weights", "{zero_lite}"], None, ERR,
     "the same features although their pixels differ: the network cannot tell them apart"),
    ("robustness-nan-weights", ["robustness", "{photo}", *LITE, "--weights", "{nan_lite}"], None, ERR,
     "nan_lite.pth: tensor '_conv_stem.weight' holds 27 non-finite value(s)"),
    ("compare-non-finite-features", ["compare", "{a}", "{b}", "--backbone", "{nan_net}", "--input-size", "8"], None,
     ERR, "produced non-finite features for {a} (NaN or infinity)"),
    # issue 23.9: flags that change nothing are refused, not ignored
    ("suite-adm-precision", ["eval", "{imgs_npz}", "{imgs_npz}", "--suite", "adm", "--precision", "bf16"], None, ERR,
     "--suite adm: --precision would change nothing in its table"),
    ("suite-adm-dims-zero", ["eval", "{imgs_npz}", "{imgs_npz}", "--suite", "adm", "--dims", "0"], None, ERR,
     "--suite adm: --dims would change nothing in its table"),
    ("stats-adm-precision", ["stats", "{real}", "-o", "{root}/adm.npz", "--format", "adm", "--precision", "tf32",
                             "--device", "cpu"], None, ERR,
     "--format adm: --precision would change nothing in an ADM reference batch"),
    ("stats-adm-dims", ["stats", "{real}", "-o", "{root}/adm.npz", "--format", "adm", "--dims", "64"], None, ERR,
     "--format adm: --dims would change nothing in an ADM reference batch"),
    # issue 23.11: no label for a network that cannot have made the numbers
    ("stats-both-asserted-impossible-dimension", ["eval", "{real_bare}", "{fake_bare}", *LITE, "--metrics", "fid",
                                                  "--json"], None, ERR,
     "--backbone efficientnet-lite0: the real statistics are 48-dimensional, and no layer of efficientnet-lite0 "
     "gives that (1280)"),
    # issue 23.13: C_T's held-out set must not be the generator's own samples
    ("ct-held-out-is-the-fakes", ["eval", "{real}", "{fake}", *PIX, "--metrics", "ct", "--ct-cells", "1",
                                  "--real-test", "{fake}", "--json", *FAST], None, SAME,
     "--real-test {fake}: every one of its 24 images is also in the fake set, by content"),
    # issue 23.10: never write a batch the suite would refuse
    ("stats-adm-images-3", ["stats", "{real}", "-o", "{root}/adm3.npz", "--format", "adm", "--adm-images", "3"],
     {"IMGDIST_OFFLINE": "1"}, ERR,
     "adm_images (--adm-images) 3: --suite adm refuses a batch of 3 images; precision and recall need more than k = 3"),
    # issue 24: LPIPS and DISTS
    ("lpips-unknown-network", LPIPS + ["banana"], None, ERR, "lpips (--lpips) 'banana': choose from alex, vgg, squeeze"),
    ("robustness-lpips-unknown-network", ROBUST + ["--lpips", "vgg19"], None, ERR,
     "lpips (--lpips) 'vgg19': choose from alex, vgg, squeeze"),
    ("lpips-weights-without-network", COMPARE + ["--lpips-weights", "{lpips_squeeze}"], None, ERR,
     "lpips_squeeze.pth: name its network with lpips (--lpips alex|vgg|squeeze)"),
    ("lpips-weights-not-lpips", LPIPS + ["squeeze", "--lpips-weights", "{wrong_keys}"], None, ERR,
     "wrong_keys.pth: not LPIPS squeeze (the state dict of lpips.LPIPS(net='squeeze')) weights"),
    ("lpips-weights-of-another-network", LPIPS + ["alex", "--lpips-weights", "{lpips_squeeze}"], None, ERR,
     "lpips_squeeze.pth: not LPIPS alex (the state dict of lpips.LPIPS(net='alex')) weights"),
    ("lpips-weights-with-python-objects", LPIPS + ["squeeze", "--lpips-weights", "{objects}"], None, ERR,
     "objects.pth: cannot read it as a PyTorch weights file (it holds Python objects"),
    ("lpips-weights-missing", LPIPS + ["squeeze", "--lpips-weights", "{root}/nope.pth"], None, ERR,
     "LPIPS squeeze weights file"),
    ("lpips-sizes-differ", ["compare", "{photo}", "{photo_wide}", "--backbone", "none", "--lpips", "squeeze",
                            "--lpips-weights", "{lpips_squeeze}"], None, ERR,
     "photo_wide.png: is 48x40, photo.png is 40x40: pixel distances and lpips need equal sizes (use --resize"),
    ("lpips-image-too-small", ["compare", "{a}", "{b}", "--backbone", "none", "--lpips", "squeeze",
                               "--lpips-weights", "{lpips_squeeze}"], None, ERR,
     "im_000.png: 4x4 is too small for LPIPS[squeeze:"),
    ("lpips-offline-without-weights", LPIPS + ["alex"], {"IMGDIST_OFFLINE": "1"}, ERR,
     "LPIPS v0.1 alex heads weights not found (offline: IMGDIST_OFFLINE=1)"),
    ("dists-weights-without-dists", COMPARE + ["--dists-weights", "{wrong_keys}"], None, ERR,
     "wrong_keys.pth: these weights would be unused; add dists (--dists)"),
    ("dists-weights-not-dists", ["compare", "{photo}", "{photo}", "--backbone", "none", "--dists", "--dists-weights",
                                 "{lpips_squeeze}"], None, ERR,
     "lpips_squeeze.pth: not DISTS (the state dict of DISTS_pytorch's DISTS()) weights"),
]


def _clean_argv(argv):
    """The same command without the fault: what its numbers must equal."""
    out = [a for a in argv if a not in ("--on-error", "skip")]
    out = [{"{fake_bad}": "{fake}", "{fake_fifo}": "{fake}", "{fake_link}": "{fake}", "{fake_zip_encrypted}": "{fake}",
            "{stats_pytorch_fid}": "{stats}", "{sizes_mixed}": "{sizes_clean}"}.get(a, a) for a in out]
    if "--cache-dir" in out:
        i = out.index("--cache-dir")
        out = out[:i] + out[i + 2:]
    cached = out[0] in ("eval", "stats")  # compare has no feature cache
    return out + (["--no-cache"] if cached and "--no-cache" not in out else [])


def test_the_table_is_large_enough():
    assert len(CASES) >= 110
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_guard(case, files, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("IMGDIST_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("IMGDIST_OFFLINE", raising=False)
    monkeypatch.delenv("IMGDIST_MAX_PIXELS", raising=False)
    name, argv, env, outcome, text = case
    code, out, err = _run(capsys, monkeypatch, files, argv, env)
    assert "Traceback" not in err + out
    assert "weights_only" not in err  # never advice to load a file unsafely
    lines = [line for line in err.splitlines() if line.strip()]
    if outcome == ERR:
        assert code == 2, (name, out, err)
        assert len(lines) == 1, err
        assert lines[0].startswith("imgdist: error: ") and _fill(text, files) in lines[0], lines[0]
        assert out == ""
        return
    assert code == 0, err
    for line in lines:
        assert line.startswith("imgdist: warning: "), err
    if text:
        assert any(_fill(text, files) in line for line in lines), err
    monkeypatch.undo()
    monkeypatch.setenv("IMGDIST_CACHE", str(tmp_path / "cache-clean"))
    clean_code, clean_out, clean_err = _run(capsys, monkeypatch, files, _clean_argv(argv))
    assert clean_code == 0, clean_err
    assert _values(out) == _values(clean_out)
