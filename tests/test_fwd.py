"""The Fréchet Wavelet Distance: Haar packets (imgdist.extraction.wavelets), streamed packet
statistics (imgdist.extraction.packet_stats) and the metric (imgdist.metrics.fwd), against
pytorchfwd 1.0.1 / ptwt 0.1.8's own numbers.

tests/fixtures/fwd_peers.npz is made by tools/peers/make_fwd_fixtures.py from the image sets of
tests/fwd_inputs.py (photographs against blurred ones, against noise, resized non-square crops,
odd sides, tinted Fashion-MNIST); it also holds ptwt's packets of one odd-sized batch.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from needs import require_fashion_mnist
from fwd_inputs import coefficient_input, digest, has_fashion, make_sets, write_pngs
from imgdist.errors import ImageError, ImgdistError
from imgdist.extraction.packet_stats import PacketStats, check_memory, stats_bytes
from imgdist.extraction.sources import Skipped
from imgdist.extraction.wavelets import (WaveletPackets, haar_packets, packet_layout, packet_names,
                                         wavelet_statistics)
from imgdist.metrics.fwd import fwd, packet_distances

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "fwd_peers.npz")
RTOL = 1e-6


@pytest.fixture(scope="module")
def peers():
    with np.load(FIXTURE) as f:
        return {key: f[key] for key in f.files}


@pytest.fixture(scope="module")
def sets():
    return make_sets(with_fashion=has_fashion())


@pytest.fixture(scope="module")
def ours(sets, tmp_path_factory, one_thread):
    """Each set's two sides as PNG folders, read through imgdist's sources and decoder."""
    root = tmp_path_factory.mktemp("fwd")
    out = {}
    for name, (real, fake, resize) in sets.items():
        out[name] = tuple(wavelet_statistics(write_pngs(images, str(root / name / side)), resize=resize,
                                             batch_size=24)
                          for side, images in (("real", real), ("fake", fake)))
    return out


def test_packets_equal_ptwts(peers):
    # 23 x 17: a reflected sample on some side at every one of the three splits
    ours = haar_packets(torch.from_numpy(coefficient_input()), 3).numpy()
    ref = peers["coeff_level3"]          # N x P x C x h x w, natural order
    assert ref.shape == (2, 64, 3, 3, 3)
    np.testing.assert_allclose(ours, ref.reshape(2, 64, -1), rtol=0, atol=1e-13)


def test_packet_names_and_a_constant_image():
    assert packet_names(2)[:5] == ["aa", "ah", "av", "ad", "ha"] and len(packet_names(4)) == 256
    # a constant image has only the approximation: each split doubles it (sum of 4 / 2)
    x = torch.full((1, 3, 32, 32), 0.25, dtype=torch.float64)
    out = haar_packets(x, 4)
    assert out.shape == (1, 256, 3 * 2 * 2)
    assert torch.all(out[0, 0] == 0.25 * 16) and torch.all(out[0, 1:] == 0)
    # one channel's horizontal edge moves only the packets whose first split is 'h', and that
    # channel's coefficients, flattened channel-major
    edge = torch.zeros(1, 3, 32, 32, dtype=torch.float64)
    edge[0, 1, 0::2, :] = 1.0  # even rows 1, odd rows 0: the finest horizontal detail
    out = haar_packets(edge, 4)[0]
    nonzero = {packet_names(4)[p] for p in range(256) if out[p].abs().max() > 0}
    assert nonzero == {"aaaa", "haaa"}
    assert torch.all(out[packet_names(4).index("haaa")].view(3, 4)[[0, 2]] == 0)


@pytest.mark.parametrize("name", ["photos_blur", "photos_noise", "resized", "odd45", "fashion"])
def test_fwd_equals_pytorchfwd(peers, sets, ours, name):
    if name not in sets:
        require_fashion_mnist("t10k-images-idx3-ubyte.gz")  # skips locally, fails under CI=true
    real, fake, _ = sets[name]
    assert digest([real, fake]) == str(peers[f"{name}_digest"]), "fwd_inputs.py no longer gives the fixture's images"
    a, b = ours[name]
    assert (a.n, b.n, a.packets) == (64, 64, 256)
    per_packet = packet_distances(a.mu, a.sigma, b.mu, b.sigma)
    ref = peers[f"{name}_packet_fd"]
    np.testing.assert_allclose(per_packet, ref, rtol=RTOL)
    assert a.fwd(b) == pytest.approx(float(peers[f"{name}_fwd"]), rel=RTOL)
    for stats, side in ((a, "real"), (b, "fake")):
        traces = np.array([np.trace(stats.sigma[p]) for p in range(stats.packets)])
        np.testing.assert_allclose(traces, peers[f"{name}_trace_{side}"], rtol=1e-12)


def test_statistics_equal_pytorchfwds(peers, ours):
    a, b = ours["photos_blur"]
    np.testing.assert_allclose(a.mu, peers["photos_blur_mu_real"], rtol=0, atol=1e-13)
    np.testing.assert_allclose(b.mu, peers["photos_blur_mu_fake"], rtol=0, atol=1e-13)
    for stats, side in ((a, "real"), (b, "fake")):
        np.testing.assert_allclose(stats.sigma[0], peers[f"photos_blur_sigma_{side}_first"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(stats.sigma[255], peers[f"photos_blur_sigma_{side}_last"], rtol=0, atol=1e-12)


def test_off_distribution_set_is_far(peers):
    # noise against photographs is an order of magnitude further than blur (both from pytorchfwd)
    assert float(peers["photos_noise_fwd"]) > 5 * float(peers["photos_blur_fwd"])


def test_streaming_matches_a_float64_recomputation(sets, one_thread):
    real = sets["odd45"][0]
    coeffs = WaveletPackets()(real).numpy()             # N x P x D, from the uint8 NHWC batch
    stats = PacketStats(*coeffs.shape[1:])
    # uneven batches and a large common offset: the pairwise update keeps every digit
    # (against numpy's two-pass covariance of the same offset values; a one-pass sum x x^T - n mu mu^T
    # would keep no digit of these 1e-4 covariances next to 1e12 products)
    shifted = coeffs + 1e6
    for part in np.array_split(shifted, [5, 6, 40]):
        stats.update(torch.from_numpy(part))
    for p in (0, 17, 255):
        np.testing.assert_allclose(stats.mu[p], shifted[:, p].mean(axis=0), rtol=1e-15)
        ref = np.cov(shifted[:, p], rowvar=False)
        # each batch mean of values near 1e6 is known to ~1e-10: the merges then agree to ~1e-9
        # of the largest entry
        np.testing.assert_allclose(stats.sigma[p], ref, rtol=0, atol=1e-8 * np.abs(ref).max())
    # merged halves equal one pass, and the state round-trips
    first, second = PacketStats(*coeffs.shape[1:]), PacketStats(*coeffs.shape[1:])
    first.update(torch.from_numpy(coeffs[:30]))
    second.update(torch.from_numpy(coeffs[30:]))
    whole = PacketStats(*coeffs.shape[1:]).update(torch.from_numpy(coeffs))
    merged = PacketStats.from_state(*first.merge(second).state)
    assert merged.n == whole.n == len(coeffs)
    for got, want in ((merged.mu, whole.mu), (np.asarray(merged.sigma), np.asarray(whole.sigma))):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-14 * np.abs(want).max())  # rounding only


def test_fwd_closed_form_for_diagonal_gaussians():
    # per packet, diagonal covariances: FD = |m1 - m2|^2 + sum (sqrt(s1) - sqrt(s2))^2
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    v1, v2 = rng.random((4, 3)) + 0.1, rng.random((4, 3)) + 0.1
    sigma1 = np.stack([np.diag(v) for v in v1])
    sigma2 = np.stack([np.diag(v) for v in v2])
    expected = ((mu1 - mu2) ** 2).sum(axis=1) + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum(axis=1)
    np.testing.assert_allclose(packet_distances(mu1, sigma1, mu2, sigma2), expected, rtol=1e-12)
    assert fwd(mu1, sigma1, mu2, sigma2) == pytest.approx(expected.mean(), rel=1e-12)


def test_array_source_equals_png_folder(sets, ours, one_thread):
    real, _, _ = sets["photos_blur"]
    from_array = wavelet_statistics(real, batch_size=24)  # the same batches: the same bits
    np.testing.assert_array_equal(from_array.mu, ours["photos_blur"][0].mu)
    np.testing.assert_array_equal(np.asarray(from_array.sigma), np.asarray(ours["photos_blur"][0].sigma))


def test_memory_is_stated_and_bounded(tmp_path):
    # 256 px at level 4: 256 packets of 3 x 16 x 16 = 768 coefficients
    assert packet_layout(256, 256, 4) == (256, 768)
    assert stats_bytes(256, 768) == 8 * 256 * 768 * 769 == check_memory(256, 768)
    # 512 px: 19.3 GB per set, refused before any image is read (the folder does not even exist)
    with pytest.raises(ImgdistError, match=r"256 packets x 3072\^2 float64 = 19\.3 GB per set, over the limit "
                                           r"of 4\.29 GB") as err:
        wavelet_statistics(str(tmp_path / "missing"), resize=512)
    assert "\n" not in str(err.value)
    # the bound follows IMGDIST_FWD_MAX_BYTES; a level more divides the need by 4
    assert packet_layout(512, 512, 5) == (1024, 768)
    with pytest.raises(ImgdistError, match="over the limit of 1 MB"):
        check_memory(256, 768, limit=10**6)


def test_memory_bound_from_the_environment(monkeypatch):
    monkeypatch.setenv("IMGDIST_FWD_MAX_BYTES", "2_000_000")
    with pytest.raises(ImgdistError, match="4.82 MB per set, over the limit of 2 MB"):
        PacketStats(256, 48)
    monkeypatch.setenv("IMGDIST_FWD_MAX_BYTES", "lots")
    with pytest.raises(ImgdistError, match="IMGDIST_FWD_MAX_BYTES='lots'"):
        PacketStats(256, 48)


def test_bad_settings_and_sizes_are_one_line_errors(tmp_path):
    with pytest.raises(ImgdistError, match=r"fwd_wavelet \(--fwd-wavelet\) 'db2' is not supported: only haar"):
        WaveletPackets("db2")
    assert WaveletPackets("Haar").wavelet == "haar"  # pytorchfwd's own spelling
    with pytest.raises(ImgdistError, match=r"fwd_level \(--fwd-level\) must be at least 1"):
        WaveletPackets(level=0)
    # 9 -> 5 -> 3 -> 2 -> 1 is fine for 4 splits; 8 -> 4 -> 2 -> 1 leaves 1 pixel for a fifth
    assert packet_layout(9, 9, 4) == (256, 3)
    with pytest.raises(ImgdistError, match="8x8 pixels are too small for 5 wavelet levels"):
        packet_layout(8, 8, 5)
    with pytest.raises(ImgdistError, match=r"fwd_resize \(--fwd-resize\) must be a whole number"):
        wavelet_statistics(str(tmp_path), resize=0)


def test_mixed_sizes_need_a_resize(tmp_path, one_thread):
    folder = tmp_path / "mixed"
    write_pngs(np.zeros((3, 16, 16, 3), np.uint8), str(folder))
    from PIL import Image

    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(folder / "003.png")
    with pytest.raises(ImageError, match=r"003\.png: is 16x20, .*000\.png is 16x16; FWD needs one size "
                                         r"\(set fwd_resize\)"):
        wavelet_statistics(str(folder))
    stats = wavelet_statistics(str(folder), resize=16)
    assert stats.n == 4 and (stats.packets, stats.dim) == (256, 3)


def test_unreadable_images_skip_or_raise(tmp_path, one_thread):
    folder = tmp_path / "some-bad"
    write_pngs(np.random.default_rng(1).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8), str(folder))
    (folder / "002.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match=r"002\.png"):
        wavelet_statistics(str(folder))
    skipped = Skipped()
    stats = wavelet_statistics(str(folder), on_error="skip", skipped=skipped)
    assert stats.n == 3 and len(skipped) == 1


def test_sets_of_different_sizes_are_refused():
    a, b = PacketStats(256, 48), PacketStats(256, 27)
    a.update(torch.rand(3, 256, 48, dtype=torch.float64))
    b.update(torch.rand(3, 256, 27, dtype=torch.float64))
    with pytest.raises(ImgdistError, match="the other set has 256 packets of 27 coefficients, these statistics "
                                           "256 of 48"):
        a.fwd(b)
