"""One table of defaults for the Python keywords and the CLI flags, so the two never disagree.

Kept free of heavy imports: the CLI reads it to build ``--help``.
"""

EVAL_BACKBONE = "inception"              # eval / stats: the standard FID network
PAIR_BACKBONE = "efficientnet-lite0"     # compare / robustness: works offline
METRICS = ("fid", "kid", "precision", "recall")
BATCH_SIZE = 50
DEVICE = "auto"                          # CUDA where available, else CPU
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
IS_SPLITS = 10
PR_K = 3                                 # Kynkäänniemi et al. 2019
DC_K = 5                                 # Naeem et al. 2020
BOOTSTRAP = 0
CI = 0.95
SEED = 0
DEMO_CROPS = 64                          # imgdist demo: images per set
