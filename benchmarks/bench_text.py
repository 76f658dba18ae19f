"""Text encoding throughput on this machine: prompts per second through CLIP's text towers.

    python benchmarks/bench_text.py [NAME ...] [--prompts 512] [--batch 256] [--repeats 3] [--threads N]

Default names: clip-vit-b32 and clip-vit-l14 (any backbone with a text tower can be named, e.g.
openclip-vit-b32). Stand-in weights (``build_text(None)``: random; speed does not depend on the
values). The prompts are generated (``make_prompts``): mostly caption-sized, a tenth long enough to
fill the 77-token context and be truncated. Two rates are printed, best of ``--repeats``:

* ``tokenize``  the BPE tokenizer alone (pure Python, one core; its per-word cache is warm after
                the first repeat, as it is over a real prompt set with a recurring vocabulary);
* ``encode``    tokenizing plus the text transformer (``encode_prompts``: batches of similar length,
                each run only up to its longest prompt's end token), what the CLIP score costs per
                prompt on top of the image tower.

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
    """Caption-like lengths: 90% of 8-20 words (COCO captions average ~10), 10% of 40-90 words
    (long "prompt engineering" strings, most of them past the 77-token context)."""
    rng = np.random.default_rng(seed)
    sizes = np.where(rng.random(count) < 0.9, rng.integers(8, 21, count), rng.integers(40, 91, count))
    return [" ".join(rng.choice(WORDS, size=int(n))) for n in sizes]


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
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from imgdist.extraction.backbones import get_spec
    from imgdist.extraction.tokenizer import Tokenizer

    prompts = make_prompts(args.prompts)
    print(f"{len(prompts)} prompts, batch {args.batch}, {args.threads} thread(s), torch {torch.__version__}")
    print(f"{'backbone':22s} {'params':>8s} {'tokenize/s':>11s} {'encode/s':>9s} {'tokens/prompt':>13s} "
          f"{'truncated':>9s}")
    for name in args.names:
        tower = get_spec(name).text(None)
        tokenizer = Tokenizer(tower.cfg.specials)  # a fresh one: its cache starts cold
        tokenize = best_rate(lambda: tokenizer(prompts), len(prompts), args.repeats)
        encode = best_rate(lambda: tower.encode_prompts(prompts, batch_size=args.batch), len(prompts), args.repeats)
        params = sum(p.numel() for p in tower.parameters()) / 1e6
        tokens = tokenizer(prompts)
        length = float((tokens.ids.argmax(axis=1) + 1).mean())
        print(f"{name:22s} {params:7.0f}M {tokenize:11.0f} {encode:9.1f} {length:13.1f} {tokens.n_truncated:9d}")


if __name__ == "__main__":
    main()
