"""Statistics files are untrusted input: every defect is one SourceError line naming the file.

Each bad file is a good one with one thing changed (written here with plain ``np.savez``), so a
test fails if the gate lets that one thing through. Genuine files must pass: pytorch-fid's own
(``tests/fixtures/pytorch_fid_stats_{64,192}.npz`` from ``tools/peers/make_stats_fixtures.py``:
one full-rank, one singular covariance), imgdist's, float32 copies. The same files go through
``imgdist.evaluate`` and the command line, where the message must stay one line naming the file.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import imgdist
from imgdist.cli import main
from imgdist.errors import ImgdistError, SourceError
from imgdist.extraction.stats import PSD_RTOL, GaussianStats, is_stats_file
from needs import require_file

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.usefixtures("one_thread")


def _features(n=80, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 2.0


def _good(d=6):
    x = _features(d=d)
    return {"mu": x.mean(axis=0), "sigma": np.cov(x, rowvar=False), "n": np.int64(len(x)),
            "provenance_backbone": "pixels", "provenance_resize_mode": "native"}


def _write(tmp_path, name="ref.npz", **changes):
    arrays = _good()
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _negated_sigma():
    return -_good()["sigma"]


def _negative_variance():
    sigma = _good()["sigma"].copy()
    sigma[0, 0] = -50.0
    return sigma


def _edited_off_diagonal():
    sigma = _good()["sigma"].copy()
    sigma[0, 1] += 0.5
    return sigma


def _nan_at(name, index):
    value = _good()[name].copy()
    value[index] = np.nan
    return value


# (changes to a good file, what the message must say)
BAD_CONTENT = {
    "negative variance": ({"sigma": _negative_variance()}, r"sigma is not positive semi-definite \(smallest eigenvalue -5"),
    "negated sigma": ({"sigma": _negated_sigma()}, r"sigma is not positive semi-definite \(smallest eigenvalue -.*largest -"),
    "edited off-diagonal": ({"sigma": _edited_off_diagonal()},
                            r"sigma is not symmetric \(max \|sigma - sigma\^T\| is [-+.e0-9]+ of its largest entry"),
    "NaN in mu": ({"mu": _nan_at("mu", 2)}, r"mu has 1 non-finite entry \(NaN or infinity\)"),
    "inf in sigma": ({"sigma": np.where(np.eye(6) > 0, np.inf, 0.0)}, r"sigma has 6 non-finite entries"),
    "mu matrix": ({"mu": np.zeros((2, 3))}, r"mu must be a non-empty vector of real numbers, got float64 array of shape \(2, 3\)"),
    "mu strings": ({"mu": np.array(["1"] * 6)}, r"mu must be a non-empty vector of real numbers, got <U1"),
    "mu empty": ({"mu": np.zeros(0), "sigma": np.zeros((0, 0))}, r"mu must be a non-empty vector"),
    "complex sigma": ({"sigma": _good()["sigma"] + 0j}, r"sigma must be a matrix of real numbers, got complex128"),
    "sigma too small": ({"sigma": np.eye(5)}, r"sigma has shape \(5, 5\), expected \(6, 6\) to match mu"),
    "sigma not square": ({"sigma": np.zeros((6, 5))}, r"sigma has shape \(6, 5\), expected \(6, 6\)"),
    "n vector": ({"n": np.array([80, 80])}, r"n must be the number of images, an integer >= 2, got int64 array of shape \(2,\)"),
    "n negative": ({"n": np.int64(-5)}, r"n must be .* got int64 -5"),
    "n one": ({"n": np.int64(1)}, r"n must be .* got int64 1"),
    "n beyond any dataset": ({"n": np.int64(10**18)}, r"n must be .* got int64 1000000000000000000 \(no image set"),
    "n float": ({"n": np.float64(5.5)}, r"n must be .* got float64 5\.5"),
    "n bool": ({"n": np.bool_(True)}, r"n must be .* got bool True"),
    "n string": ({"n": np.array("80")}, r"n must be .* got <U2 '80'"),
    "provenance not a string": ({"provenance_backbone": np.int64(3)}, r"provenance_backbone must be a string, got int64 3"),
    "provenance array": ({"provenance_backbone": np.array(["a", "b"])}, r"provenance_backbone must be a string, got <U1 array"),
    "missing sigma": ({"sigma": None}, r"not a statistics file \(needs arrays 'mu' and 'sigma', has mu, n, provenance"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONTENT))
def test_bad_content_is_refused_naming_the_file(tmp_path, case):
    changes, message = BAD_CONTENT[case]
    path = _write(tmp_path, **changes)
    with pytest.raises(SourceError, match=message) as info:
        GaussianStats.load(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text


def _truncated(path):
    np.savez(path, **_good())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _crc_broken(path):
    np.savez(path, **_good())  # stored, not deflated: a flipped byte in sigma's data breaks its CRC
    data = bytearray(path.read_bytes())
    start = data.index(b"sigma.npy")
    data[start + 400] ^= 0xFF
    path.write_bytes(bytes(data))


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _pickle_only(path):
    objects = np.empty(2, dtype=object)
    objects[:] = [{"mu": 1}, [2]]
    np.savez(path, mu=objects, sigma=objects)


# (how to damage ref.npz, what the message must say)
BAD_FILES = {
    "empty": (lambda p: p.write_bytes(b""), r"the file is empty, not a \.npz archive"),
    "truncated": (_truncated, r"cannot read the archive \(truncated or corrupt: File is not a zip file\)"),
    "broken CRC": (_crc_broken, r"cannot read 'sigma' \(truncated or corrupt: Bad CRC-32"),
    "npy renamed": (lambda p: p.write_bytes(_npy_bytes(np.eye(3))), r"holds a single \.npy array, not a \.npz archive"),
    "pickle renamed": (lambda p: p.write_bytes(pickle.dumps({"mu": 1})), r"not a \.npz archive \(a \.npz file is a zip"),
    "pickle-only npz": (_pickle_only, r"'mu' holds Python objects \(object\), which only unpickling could read; imgdist never unpickles"),
    "zip garbage": (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4), r"truncated or corrupt"),
}
#: damaged members of an intact archive: its names (mu, sigma) still say statistics file
MEMBERS_DAMAGED = {"broken CRC", "pickle-only npz"}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_unreadable_files_are_one_line_errors(tmp_path, case):
    damage, message = BAD_FILES[case]
    path = tmp_path / "ref.npz"
    damage(path)
    with pytest.raises(SourceError, match=message) as info:
        GaussianStats.load(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    # is_stats_file reads only the archive's names: an archive it cannot read is the same one-line
    # error; one whose names it can read holds mu and sigma, so it is meant as statistics (and
    # loading it says what is wrong, as above)
    if case in MEMBERS_DAMAGED:
        assert is_stats_file(path) is True
    else:
        with pytest.raises(SourceError) as again:
            is_stats_file(path)
        assert str(again.value) == str(info.value)


def test_directory_named_npz(tmp_path):
    folder = tmp_path / "x.npz"
    folder.mkdir()
    assert is_stats_file(folder) is False  # the image sources report folders (no images found)
    with pytest.raises(SourceError, match=r"x\.npz: is a directory, not a statistics file"):
        GaussianStats.load(folder)


# ------------------------------------------------------------------ genuine files pass

@pytest.mark.parametrize("dims", [64, 192])
def test_pytorch_fid_files_pass(dims):
    path = require_file(FIXTURES / f"pytorch_fid_stats_{dims}.npz",
                        "committed; tools/peers/make_stats_fixtures.py makes it")
    with np.load(path) as raw:
        mu, sigma = raw["mu"], raw["sigma"]
        assert set(raw.files) == {"mu", "sigma"}
    stats = GaussianStats.load(path)
    assert stats.n == 0 and stats.dim == dims and not stats.provenance.known
    np.testing.assert_array_equal(stats.mu, mu)
    np.testing.assert_array_equal(stats.sigma, sigma)
    w = np.linalg.eigvalsh(sigma)
    if dims == 192:  # 72 images: rank 71, the rest of the spectrum is rounding noise around zero
        assert abs(w[0]) < 1e-12 * w[-1]


@pytest.mark.parametrize("n,d", [(40, 64), (300, 16)])
def test_imgdist_files_and_float32_copies_pass(tmp_path, n, d):
    x = _features(n, d, seed=3) * 10.0 + 1e3
    stats = GaussianStats().update(x)
    path = tmp_path / "ours.npz"
    stats.save(path)
    loaded = GaussianStats.load(path)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    copy = tmp_path / "float32.npz"
    np.savez(copy, mu=stats.mu.astype(np.float32), sigma=stats.sigma.astype(np.float32))
    assert GaussianStats.load(copy).dim == d


def test_psd_tolerance_is_relative_to_the_largest_eigenvalue(tmp_path):
    # eigenvalues (10, 1, 1, 1, 1, lam): lam just inside and just outside -PSD_RTOL * 10
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    for lam, ok in ((-0.5 * PSD_RTOL * 10, True), (-2 * PSD_RTOL * 10, False)):
        sigma = (q * np.array([10.0, 1, 1, 1, 1, lam])) @ q.T
        sigma = 0.5 * (sigma + sigma.T)
        path = _write(tmp_path, sigma=sigma, n=None)
        if ok:
            assert GaussianStats.load(path).dim == 6
        else:
            with pytest.raises(SourceError, match=r"smallest eigenvalue -2e-05, largest 10"):
                GaussianStats.load(path)


def test_old_count_free_files_still_load(tmp_path):
    # imgdist used to write n = 0 for statistics without a known count; pytorch-fid writes no n
    path = _write(tmp_path, n=np.int64(0))
    assert GaussianStats.load(path).n == 0
    path = _write(tmp_path, name="no_n.npz", n=None, provenance_backbone=None, provenance_resize_mode=None)
    stats = GaussianStats.load(path)
    assert stats.n == 0 and not stats.provenance.known
    stats.save(tmp_path / "again.npz")  # a count-free file stays count-free
    with np.load(tmp_path / "again.npz") as raw:
        assert "n" not in raw.files


def test_the_readme_states_the_rule_for_n_that_the_reader_applies(tmp_path):
    """Issue 23, item 14: at 0c5d37c the README said "n absent or an integer >= 2" while the reader
    took n = 0 as not recorded (imgdist's own older files). Both now say the same, checked here
    against the reader itself: absent and 0 load as not recorded, 1 is refused, 2 counts."""
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert ("`n` absent or an integer ≥ 2; `n = 0` is read as not recorded, as an absent `n` is" in readme)
    assert GaussianStats.load(_write(tmp_path, "absent.npz", n=None)).n == 0
    assert GaussianStats.load(_write(tmp_path, "zero.npz", n=np.int64(0))).n == 0
    with pytest.raises(SourceError, match=r"n must be the number of images, an integer >= 2, got int64 1"):
        GaussianStats.load(_write(tmp_path, "one.npz", n=np.int64(1)))
    assert GaussianStats.load(_write(tmp_path, "two.npz", n=np.int64(2))).n == 2


def test_from_moments_uses_the_same_gate():
    good = _good()
    with pytest.raises(ImgdistError, match=r"from_moments: sigma is not positive semi-definite"):
        GaussianStats.from_moments(good["mu"], _negative_variance(), n=80)
    with pytest.raises(ImgdistError, match=r"from_moments: n must be"):
        GaussianStats.from_moments(good["mu"], good["sigma"], n=1)
    stats = GaussianStats.from_moments(good["mu"], good["sigma"], n=80)
    np.testing.assert_allclose(stats.sigma, good["sigma"], rtol=1e-14)


# ------------------------------------------------------------------ through evaluate and the CLI

THROUGH = ["negative variance", "negated sigma", "edited off-diagonal", "n vector", "n negative", "NaN in mu"]
DAMAGED = ["empty", "truncated", "npy renamed", "pickle renamed", "pickle-only npz", "broken CRC"]


def _bad_file(tmp_path, case):
    if case in BAD_CONTENT:
        changes, message = BAD_CONTENT[case]
        return _write(tmp_path, **changes), message
    damage, message = BAD_FILES[case]
    path = tmp_path / "ref.npz"
    damage(path)
    return path, message


@pytest.fixture(scope="module")
def fake_images():
    return np.random.default_rng(5).integers(0, 256, (12, 2, 1, 3), dtype=np.uint8)  # d = 6 pixels


@pytest.mark.parametrize("case", THROUGH + DAMAGED)
def test_evaluate_reports_one_line(tmp_path, fake_images, case):
    path, message = _bad_file(tmp_path, case)
    with pytest.raises(SourceError) as info:
        imgdist.evaluate(str(path), fake_images, metrics="fid", backbone="pixels", mode="native",
                         progress=False)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert re.search(message, text), text


@pytest.mark.parametrize("case", THROUGH + DAMAGED + ["directory"])
def test_cli_reports_one_line(tmp_path, capsys, fake_images, case):
    fake = tmp_path / "fake.npy"
    np.save(fake, fake_images)
    if case == "directory":
        path = tmp_path / "x.npz"
        path.mkdir()
    else:
        path, _ = _bad_file(tmp_path, case)
    code = main(["eval", str(path), str(fake), "--metrics", "fid", "--backbone", "pixels", "--resize-mode",
                 "native", "--no-progress", "--no-cache", "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("imgdist: error: ") and "\n" not in err and str(path) in err


def test_python_m_imgdist_eval_truncated_file(tmp_path, fake_images):
    path, _ = _bad_file(tmp_path, "truncated")
    fake = tmp_path / "fake.npy"
    np.save(fake, fake_images)
    proc = subprocess.run([sys.executable, "-m", "imgdist", "eval", str(path), str(fake), "--metrics", "fid",
                           "--backbone", "pixels", "--no-progress", "--no-cache"],
                          capture_output=True, text=True, env={**os.environ, "IMGDIST_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"imgdist: error: {path}: cannot read the archive "
                                   "(truncated or corrupt: File is not a zip file)")
