"""The HTML report (``imgdist.report``) and ``imgdist eval --report``.

Neighbour helpers are checked against brute force on full numpy distance matrices. The report is
built with the ``pixels`` backbone ('native' mode: features are ``img / 255`` flattened) on small
synthetic sets with planted cases: a few fakes far from every real image (section b) and a
cluster of reals that no fake comes near (section c).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from imgdist.cli import main
from imgdist.errors import ImgdistError
from imgdist.evaluation.run import Result, evaluate
from imgdist.metrics.prdc import knn_radii
from imgdist.metrics import nearest_real, real_neighbours
from imgdist.report import cross_neighbours, write_report

SIZE = 6
K = 5
FAST = ["--no-progress", "--no-cache", "--workers", "0"]
PIX = ["--backbone", "pixels", "--resize-mode", "native"]
ODD = "<odd & name>"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGDIST_CACHE", str(tmp_path / "imgdist-cache"))


def _brute(a, b):
    return np.sqrt(((a[:, None, :].astype(np.float64) - b[None, :, :]) ** 2).sum(-1))


# ------------------------------------------------------------------ neighbours

@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_neighbours_match_brute_force(chunk):
    rng = np.random.default_rng(1)
    real = rng.normal(size=(23, 5))
    fake = rng.normal(size=(17, 5)) + 0.3
    fake[:3] += 4.0  # far from the reals

    d_rr, d_fr = _brute(real, real), _brute(fake, real)
    np.fill_diagonal(d_rr, np.inf)
    own = real_neighbours(real, K, chunk_size=chunk)
    np.testing.assert_array_equal(own.nn_index, d_rr.argmin(1))
    np.testing.assert_allclose(own.nn_distance, d_rr.min(1), rtol=1e-9)
    np.testing.assert_allclose(own.radii, np.sort(d_rr, axis=1)[:, K - 1], rtol=1e-9)
    np.testing.assert_allclose(own.radii, knn_radii(real, K), rtol=1e-12)

    idx, dist = nearest_real(real, fake, chunk_size=chunk)
    np.testing.assert_array_equal(idx, d_fr.argmin(1))
    np.testing.assert_allclose(dist, d_fr.min(1), rtol=1e-9)

    cross = cross_neighbours(real, fake, own.radii, chunk_size=chunk)
    ratio = d_fr / own.radii[None, :]
    np.testing.assert_array_equal(cross.fake_nn, d_fr.argmin(1))
    np.testing.assert_allclose(cross.fake_nn_dist, d_fr.min(1), rtol=1e-9)
    np.testing.assert_array_equal(cross.fake_ratio_real, ratio.argmin(1))
    np.testing.assert_allclose(cross.fake_ratio, ratio.min(1), rtol=1e-9)
    np.testing.assert_array_equal(cross.real_nn, d_fr.argmin(0))
    np.testing.assert_allclose(cross.real_nn_dist, d_fr.min(0), rtol=1e-9)
    np.testing.assert_array_equal(cross.real_covered, d_fr.min(0) < own.radii)
    assert (cross.fake_ratio[:3] > 1).all()


def test_neighbours_duplicates_and_errors():
    x = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    own = real_neighbours(x, 1, chunk_size=2)
    np.testing.assert_allclose(own.radii, [0.0, 0.0, 5.0])  # a duplicate is a neighbour at distance 0
    assert list(own.nn_index[:2]) == [1, 0]
    cross = cross_neighbours(x, np.array([[0.0, 0.0], [1.0, 0.0]]), own.radii)
    # zero radius: 0 on the point itself; elsewhere the finite minimum, |(1,0)-(3,4)| / 5
    np.testing.assert_allclose(cross.fake_ratio, [0.0, np.sqrt(20) / 5])
    assert not cross.real_covered[0]  # strict, as coverage
    with pytest.raises(ValueError, match="k = 3"):
        real_neighbours(x, 3)
    with pytest.raises(ValueError, match="dimensions"):
        nearest_real(x, np.zeros((2, 3)))


# ------------------------------------------------------------------ report

def _planted_sets(tmp_path):
    """30 real (24 grey-ish + 6 saturated blue, which no fake approaches) and 30 fake (27 like the
    grey reals, 3 saturated red far from everything; one with an HTML-hostile name)."""
    rng = np.random.default_rng(0)

    def grey(n):
        base = rng.uniform(90, 160, (n, 1, 1, 3))
        return np.clip(np.rint(base + rng.normal(0, 12, (n, SIZE, SIZE, 3))), 0, 255).astype(np.uint8)

    def tinted(n, colour):
        base = np.array(colour, float)[None, None, None, :]
        return np.clip(np.rint(base + rng.normal(0, 6, (n, SIZE, SIZE, 3))), 0, 255).astype(np.uint8)

    real_dir, fake_dir = tmp_path / "real", tmp_path / "fake"
    real_dir.mkdir()
    fake_dir.mkdir()
    for i, img in enumerate(grey(24)):
        Image.fromarray(img).save(real_dir / f"grey_{i:02d}.png")
    for i, img in enumerate(tinted(6, (20, 30, 240))):
        Image.fromarray(img).save(real_dir / f"blue_{i}.png")
    fakes = grey(27)
    Image.fromarray(fakes[0]).save(fake_dir / f"{ODD}.png")
    for i, img in enumerate(fakes[1:]):
        Image.fromarray(img).save(fake_dir / f"gen_{i:02d}.png")
    for i, img in enumerate(tinted(3, (250, 10, 10))):
        Image.fromarray(img).save(fake_dir / f"far_{i}.png")
    return real_dir, fake_dir


def _sections(html):
    """HTML of sections (a), (b), (c) in order."""
    a = html.index('id="nearest"')
    b = html.index('id="farthest"')
    c = html.index('id="uncovered"')
    return html[a:b], html[b:c], html[c:html.index('id="diversity"')]


def test_write_report(tmp_path):
    real_dir, fake_dir = _planted_sets(tmp_path)
    pr_k = K - 2  # a different k for precision than for coverage: each section must use its own
    result, real, fake = evaluate(real_dir, fake_dir, metrics="fid,prdc", backbone="pixels", mode="native",
                                  progress=False, workers=0, return_features=True, dc_k=K, pr_k=pr_k)
    assert isinstance(result, Result) and real.features.shape == (30, 3 * SIZE * SIZE)
    per = 8
    out = tmp_path / "report.html"
    assert write_report(out, result, real, fake, real_dir, fake_dir, pr_k=pr_k, dc_k=K, per_section=per,
                        thumb=48, chunk_size=7) == str(out)
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<script" not in html and "http://" not in html and "https://" not in html
    for label in result.labels.values():
        assert label in html
    assert "pixels" in html and "native" in html

    # expected picks from brute force on the same features
    d_fr, d_rr = _brute(fake.features, real.features), _brute(real.features, real.features)
    np.fill_diagonal(d_rr, np.inf)
    radii = np.sort(d_rr, axis=1)[:, K - 1]
    uncovered = np.flatnonzero(d_fr.min(0) >= radii)
    assert len(uncovered) / 30 == pytest.approx(1 - result.values["coverage"])
    n_c = min(per, len(uncovered))
    # copies: fakes nearer a real than percentile 1 of the reals' nearest-other-real distances
    threshold = np.percentile(d_rr.min(axis=1), 1.0)
    n_copies = int((d_fr.min(axis=1) <= threshold).sum())
    assert f": {n_copies} of 30, closest first" in html
    # pairs in copies, (a), (b), (c) + the distance histogram and the PCA plot
    assert html.count("<img ") == 2 * (min(per, n_copies) + per + per + n_c) + 2
    # the diversity table: Vendi of each set (q = 1) as the metric computes it on these features
    from imgdist.metrics import vendi_score
    from imgdist.formatting import format_value

    diversity = html[html.index('id="diversity"'):]
    for x in (fake.features, real.features):
        assert f">{format_value(vendi_score(x, q=1.0))}<" in diversity

    sec_a, sec_b, sec_c = _sections(html)
    assert sec_a.count("<figure>") == per and sec_b.count("<figure>") == per
    # (b) counts the fakes precision does not count, with precision's k
    pr_radii = np.sort(d_rr, axis=1)[:, pr_k - 1]
    outside = int(((d_fr / pr_radii[None, :]).min(axis=1) >= 1).sum())
    assert outside == round((1 - result.values["precision"]) * 30)
    assert f"counted by precision with k = {pr_k}): {outside} of 30 fakes" in sec_b
    assert f"Reals whose {K}-NN ball holds no fake" in sec_c
    # no bootstrap, no std: no empty columns
    assert "<th>CI</th>" not in html and "<th>std</th>" not in html
    far = [n for n in fake.names if "far_" in n]
    blue = [n for n in real.names if "blue_" in n]
    assert len(far) == 3 and len(blue) == 6
    # the planted far fakes are the top of section (b), ahead of every ordinary fake
    b_names = re.findall(r"fake:</span> ([^<]*)<br>", sec_b)
    assert sorted(b_names[:3]) == ["far_0.png", "far_1.png", "far_2.png"]  # captions: names in the folder
    for name in blue:
        assert name in sec_c
    assert "grey_" not in sec_c.split("<figure>")[1]  # the farthest uncovered real is a planted one

    # names are escaped
    assert "&lt;odd &amp; name&gt;" in sec_a
    assert ODD not in html


def test_write_report_needs_features(tmp_path):
    real_dir, fake_dir = _planted_sets(tmp_path)
    result, real, fake = evaluate(real_dir, fake_dir, metrics="fid", backbone="pixels", mode="native",
                                  progress=False, workers=0, return_features=True)
    assert real.features is not None and fake.features is not None  # kept although FID needs none
    assert isinstance(evaluate(real_dir, fake_dir, metrics="fid", backbone="pixels", mode="native",
                               progress=False, workers=0), Result)
    real.features = None
    with pytest.raises(ImgdistError, match="per-image features"):
        write_report(tmp_path / "r.html", result, real, fake, real_dir, fake_dir)


def test_cli_report(tmp_path, capsys):
    real_dir, fake_dir = _planted_sets(tmp_path)
    out = tmp_path / "out.html"
    assert main(["eval", str(real_dir), str(fake_dir), "--metrics", "fid", "--report", str(out), *PIX,
                 *FAST]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == f"report: {out}"
    html = out.read_text(encoding="utf-8")
    assert "FD[pixels]" in html and html.count("<figure>") >= 24

    stats = tmp_path / "ref.npz"
    assert main(["stats", str(real_dir), "-o", str(stats), *PIX, *FAST]) == 0
    capsys.readouterr()
    assert main(["eval", str(stats), str(fake_dir), "--metrics", "fid", "--report", str(tmp_path / "x.html"),
                 *PIX, *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("imgdist: error: ") and "statistics file" in err[0]
    assert not (tmp_path / "x.html").exists()

    assert main(["eval", str(real_dir), str(fake_dir), "--report", str(tmp_path / "no" / "r.html"), *PIX,
                 *FAST]) == 2  # checked before any extraction
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "folder" in err[0] and "does not exist" in err[0]
