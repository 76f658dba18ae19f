"""Vendi score: closed forms, the vendi-score package's values (fixture), both kernel routes."""

import math
import os

import numpy as np
import pytest

from imgdist.metrics import vendi_from_spectrum, vendi_score, vendi_spectrum

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "vendi_peers.npz")
ORDERS = {"0p5": 0.5, "1": 1.0, "2": 2.0, "inf": math.inf}


@pytest.fixture(scope="module")
def peers():
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("q", ORDERS.values())
@pytest.mark.parametrize("n, d", [(40, 7), (5, 30)])  # both routes
def test_identical_samples_score_one(n, d, q):
    row = np.random.default_rng(0).random(d) + 0.1
    x = np.tile(row, (n, 1)) * np.random.default_rng(1).uniform(0.5, 3, (n, 1))  # scale is ignored
    assert vendi_score(x, q) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("q", ORDERS.values())
@pytest.mark.parametrize("n, d", [(12, 12), (9, 20)])
def test_orthogonal_samples_score_n(n, d, q):
    basis, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((d, d)))
    x = basis[:n] * np.arange(1, n + 1)[:, None]
    assert vendi_score(x, q) == pytest.approx(n, rel=1e-12)


@pytest.mark.parametrize("q", ORDERS.values())
def test_two_clusters_closed_form(q):
    # a copies of e1 and b copies of e2: K/N has eigenvalues a/N and b/N (two orthogonal modes)
    a, b, d = 30, 10, 5
    x = np.zeros((a + b, d))
    x[:a, 0] = 1.0
    x[a:, 1] = 2.0
    p = np.array([a, b]) / (a + b)
    if math.isinf(q):
        expected = 1 / p.max()
    elif q == 1:
        expected = math.exp(-np.sum(p * np.log(p)))
    else:
        expected = np.sum(p ** q) ** (1 / (1 - q))
    assert vendi_score(x, q) == pytest.approx(expected, rel=1e-12)
    assert vendi_score(np.asfortranarray(x), q, chunk_size=3) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("q", ["0p5", "1", "2", "inf"])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_matches_vendi_score_kernel_route(peers, q, chunk_size):
    # N = 60 <= d = 96: the N x N kernel, against vendi_score.vendi.score_K on the cosine kernel
    got = vendi_score(peers["wide"], ORDERS[q], chunk_size=chunk_size)
    assert got == pytest.approx(float(peers[f"wide_score_K_q{q}"]), rel=1e-8)
    if q == "1":
        assert got == pytest.approx(float(peers["wide_score_X_q1"]), rel=1e-8)


@pytest.mark.parametrize("q", ["0p5", "1", "2", "inf"])
@pytest.mark.parametrize("chunk_size", [None, 7, 1000])
def test_matches_vendi_score_gram_route(peers, q, chunk_size):
    # N = 300 > d = 48: the d x d Gram form, against score_dual and (where the N x N kernel's
    # rounding noise does not matter) score_X / score_K on the full kernel
    got = vendi_score(peers["tall"], ORDERS[q], chunk_size=chunk_size)
    assert got == pytest.approx(float(peers[f"tall_score_dual_q{q}"]), rel=1e-8)
    full = {"1": "tall_score_X_q1", "2": "tall_score_K_q2", "inf": "tall_score_K_qinf"}.get(q)
    if full:
        assert got == pytest.approx(float(peers[full]), rel=1e-8)


def test_routes_agree_in_float64():
    # the same set through both routes: N x N (transposed problem has N <= d) vs d x d
    rng = np.random.default_rng(3)
    x = np.abs(rng.standard_normal((50, 20))) + 0.01
    tall = vendi_spectrum(x)                     # 20 x 20 Gram
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    full = np.linalg.eigvalsh(xn @ xn.T / len(x))[::-1][:20]  # 50 x 50 kernel, written out here
    np.testing.assert_allclose(tall, full, rtol=1e-10, atol=1e-14)
    assert tall.sum() == pytest.approx(1.0, rel=1e-12)


def test_float32_input_same_as_float64():
    x = np.abs(np.random.default_rng(4).standard_normal((80, 16))).astype(np.float32) + 0.01
    assert vendi_score(x) == vendi_score(x.astype(np.float64))


def test_orders_are_ordered():
    # Hill numbers decrease with the order: VS_0.5 >= VS_1 >= VS_2 >= VS_inf
    w = vendi_spectrum(np.abs(np.random.default_rng(5).standard_normal((70, 30))))
    values = [vendi_from_spectrum(w, q) for q in (0, 0.5, 1, 2, math.inf)]
    assert values == sorted(values, reverse=True)
    assert values[0] == pytest.approx(len(w))  # q = 0: the number of non-zero eigenvalues


def test_bad_input():
    with pytest.raises(ValueError, match="features row 2 has zero norm"):
        vendi_score(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN or infinity"):
        vendi_score(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        vendi_score(np.ones(5))
    with pytest.raises(ValueError, match="no samples"):
        vendi_score(np.ones((0, 5)))
    with pytest.raises(ValueError, match="q must be >= 0"):
        vendi_score(np.eye(3), q=-1)
