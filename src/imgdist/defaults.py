"""One table of defaults for the Python keywords and the CLI flags, so the two never disagree.

Kept free of heavy imports: the CLI reads it to build ``--help``.
"""

EVAL_BACKBONE = "inception"              # eval / stats: the standard FID network
PAIR_BACKBONE = "efficientnet-lite0"     # compare / robustness: works offline
METRICS = ("fid", "kid", "precision", "recall")
BATCH_SIZE = None                        # auto: CPU_BATCH_SIZE on a CPU, by memory on a GPU (features.choose_batch_size)
CPU_BATCH_SIZE = 50                      # measured: larger CPU batches are no faster (benchmarks/bench_pipeline.py)
DEVICE = "auto"                          # CUDA where available, else CPU
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
IS_SPLITS = 10
PR_K = 3                                 # Kynkäänniemi et al. 2019
DC_K = 5                                 # Naeem et al. 2020
BOOTSTRAP = 0
CI = 0.95
SEED = 0
CT_CELLS = 20                            # k-means cells of C_T (Meehan et al. 2020)
CT_MIN_FAKE_PER_CELL = 21                # C_T: cells with more than 20 fakes (tau = 20 / m)
COPIES_PERCENTILE = 1.0                  # copies: below the reals' 1st-percentile nearest-neighbour distance
VENDI_ORDERS = (0.5, 1.0, 2.0, float("inf"))  # Friedman & Dieng 2023; Pasarkar & Dieng 2024
REALISM_PRUNE_PERCENTILE = 50.0          # Kynkäänniemi et al. 2019: reals with radii above the median left out
ADM_K = 3                                # ADM's manifold estimate: each radius is the 3rd neighbour
ADM_IS_SPLIT = 5000                      # ADM's Inception Score: contiguous splits of 5,000 samples
DEMO_CROPS = 64                          # imgdist demo: images per set
