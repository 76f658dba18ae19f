"""Defaults of the commands and the extraction, one table for the Python keywords and the CLI flags.

Metric settings are not here: each metric declares its own settings with their defaults
(:mod:`imgdist.metrics.registry`), and that declaration is their only home. Kept free of heavy
imports: the CLI reads it to build ``--help``.
"""

EVAL_BACKBONE = "inception"              # eval / stats: the standard FID network
PAIR_BACKBONE = "efficientnet-lite0"     # compare / robustness: works offline
BATCH_SIZE = None                        # auto: CPU_BATCH_SIZE on a CPU, by memory on a GPU (features.choose_batch_size)
CPU_BATCH_SIZE = 50                      # measured: larger CPU batches are no faster (benchmarks/bench_pipeline.py)
DEVICE = "auto"                          # CUDA where available, else CPU
DEMO_CROPS = 64                          # imgdist demo: images per set
