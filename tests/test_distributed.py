"""Two gloo processes on CPU give exactly the single-process result."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import imgdist
from imgdist.distributed import all_reduce_stats, evaluate_distributed, sync_evaluator
from imgdist.stats import GaussianStats


def _images(seed, n=37):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8)


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        real, fake = _images(0), _images(1)
        result = evaluate_distributed(real, fake, metrics="fid,kid,prdc", backbone="pixels", mode="native",
                                      kid_subset_size=20, kid_subsets=5)
        ev = imgdist.Evaluator(backbone="pixels", mode="native", metrics="fid,kid", kid_subset_size=20,
                               kid_subsets=5)
        ev.update(real=real[rank::world])
        ev.update(fake=fake[rank::world])
        sync_evaluator(ev)
        streamed = ev.compute()
        stats = GaussianStats().update(real[rank::world].reshape(-1, 108).astype(np.float64))
        merged = all_reduce_stats(stats)
        # a large common offset: the gathered (n, mean, centred scatter) states merge without loss
        shifted = all_reduce_stats(GaussianStats().update(real[rank::world].reshape(-1, 108) + 1e6))
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), shifted_mu=shifted.mu, shifted_sigma=shifted.sigma,
                 values=np.array([result.values[k] for k in ("fid", "kid", "precision", "recall",
                                                             "density", "coverage")]),
                 streamed_fid=streamed.values["fid"], n=merged.n, mu=merged.mu, sigma=merged.sigma)
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    real, fake = _images(0), _images(1)
    single = imgdist.evaluate(real, fake, metrics="fid,kid,prdc", backbone="pixels", mode="native",
                              kid_subset_size=20, kid_subsets=5, progress=False)
    expected = np.array([single.values[k] for k in ("fid", "kid", "precision", "recall", "density", "coverage")])
    flat = real.reshape(-1, 108).astype(np.float64)
    for rank in range(world):
        got = np.load(tmp_path / f"rank{rank}.npz")
        # features are gathered back in source order, so even KID's seeded subsets coincide;
        # FID sees sums added in another order, amplified by the singular covariance (N < d)
        np.testing.assert_allclose(got["values"][1:], expected[1:], rtol=1e-12)
        assert got["values"][0] == pytest.approx(expected[0], rel=1e-8)
        assert float(got["streamed_fid"]) == pytest.approx(single.values["fid"], rel=1e-8)
        assert int(got["n"]) == len(real)
        np.testing.assert_allclose(got["mu"], flat.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(got["sigma"], np.cov(flat, rowvar=False), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got["shifted_mu"] - 1e6, flat.mean(axis=0), rtol=0, atol=1e-8)
        np.testing.assert_allclose(got["shifted_sigma"], np.cov(flat, rowvar=False), rtol=1e-9, atol=1e-9)
    # merged in rank order on every rank: identical statistics everywhere, bit for bit
    first, second = (np.load(tmp_path / f"rank{rank}.npz") for rank in range(world))
    for key in ("mu", "sigma", "shifted_mu", "shifted_sigma"):
        np.testing.assert_array_equal(first[key], second[key])


def test_needs_initialised_process_group():
    with pytest.raises(imgdist.ImgdistError, match="torchrun"):
        all_reduce_stats(GaussianStats(2))
