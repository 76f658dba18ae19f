"""Text encoding throughput on this machine: prompts per second through CLIP's text towers.

    python benchmarks/bench_text.py [NAME ...] [--prompts 512] [--batch 256] [--repeats 3] [--threads N]

Default names: clip-vit-b32 and clip-vit-l14 (any backbone with a text tower can be named, e.g.
openclip-vit-b32). Stand-in weights (``build_text(None)``: random; speed does not depend on the
values). The prompts are generated captions of 8-60 words, so some of them fill the 77-token
context and are truncated. Two rates are printed, best of ``--repeats``:

* ``tokenize``  the BPE tokenizer alone (pure Python, one core; its per-word cache is warm after
                the first repeat, as it is over a real prompt set with a recurring vocabulary);
* ``encode``    tokenizing plus the text transformer (``encode_prompts``), what the CLIP score costs
                per prompt on top of the image tower.

The machine may be shared: numbers are indicative.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

WORDS = ("a photo of the red cat dog astronaut riding horse on moon beach sunset city street "
         "painting oil watercolor detailed 8k cinematic lighting portrait of an old man with hat "
         "in style by artstation trending castle forest mountain lake bowl fruit table wooden").split()


def make_prompts(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 61)))) for _ in range(count)]


def best_rate(run, count: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return count / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["clip-vit-b32", "clip-vit-l14"])
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from imgdist.extraction.backbones import get_spec
    from imgdist.extraction.tokenizer import Tokenizer

    prompts = make_prompts(args.prompts)
    print(f"{len(prompts)} prompts, batch {args.batch}, {args.threads} thread(s), torch {torch.__version__}")
    print(f"{'backbone':22s} {'params':>8s} {'tokenize/s':>11s} {'encode/s':>9s} {'truncated':>9s}")
    for name in args.names:
        tower = get_spec(name).text(None)
        tokenizer = Tokenizer(tower.cfg.specials)  # a fresh one: its cache starts cold
        tokenize = best_rate(lambda: tokenizer(prompts), len(prompts), args.repeats)
        encode = best_rate(lambda: tower.encode_prompts(prompts, batch_size=args.batch), len(prompts), args.repeats)
        params = sum(p.numel() for p in tower.parameters()) / 1e6
        truncated = tokenizer(prompts).n_truncated
        print(f"{name:22s} {params:7.0f}M {tokenize:11.0f} {encode:9.1f} {truncated:9d}")


if __name__ == "__main__":
    main()
