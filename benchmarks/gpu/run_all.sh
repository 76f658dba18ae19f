#!/usr/bin/env bash
# The GPU issue's measurements in one command, from the project root on a machine with a GPU:
#
#   bash benchmarks/gpu/run_all.sh            tables and JSON in $OUT (default /tmp/out)
#
# 1. bench_e2e.py --device cuda on two sets of $N (10,000) 256-px PNGs: imgdist's default, bf16,
#    tf32 and --resize-mode tf, and the three peers at their own defaults (pytorch-fid with sqrtm
#    patched, torchmetrics fed by a DataLoader with workers)            -> e2e.txt, e2e.json
# 2. strict fp32 parity: imgdist's default on the GPU and on the CPU, $PARITY_N (1,000) + 1,000 of
#    the same kind of PNGs; |dFID|/FID of the row "cpu" is the parity   -> parity.txt, parity.json
# 3. bench_pipeline.py --device cuda: the per-stage table, $PIPE_N images -> pipeline.txt, .json
#
# The peers: a python that imports pytorch_fid, torch_fidelity and torchmetrics (PEERS_PYTHON; by
# default this python, after installing any wheels in $WHEELS, default .whl/, into /tmp/site: the
# GPU machine lacks pytorch-fid and torch-fidelity; copy their wheels there and carry .whl/ along).
# PEERS_PYTHON=none skips them. A dry run on a CPU: DEVICE=cpu N=16 PARITY_N=16 PIPE_N=16 SIZE=64.
# Each step has its own time limit (E2E_S, PARITY_S, PIPE_S seconds; 330 + 120 + 120 fit in 10 min).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
N=${N:-10000}; PARITY_N=${PARITY_N:-1000}; PIPE_N=${PIPE_N:-2000}; SIZE=${SIZE:-256}
WHEELS=${WHEELS:-.whl}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$WHEELS"/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
PEERS_PYTHON=${PEERS_PYTHON:-$PY}
PEERS=(--peers-python "$PEERS_PYTHON")
if [ "$PEERS_PYTHON" = none ] || ! "$PEERS_PYTHON" -c "import pytorch_fid, torch_fidelity, torchmetrics" 2>/dev/null; then
    echo "peers skipped: ${PEERS_PYTHON} does not import pytorch_fid, torch_fidelity and torchmetrics" | tee "$OUT/peers-skipped.txt"
    PEERS=()
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/smi.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee "$OUT/versions.txt"

status=0
timeout "${E2E_S:-330}" "$PY" benchmarks/bench_e2e.py --device "$DEVICE" --images photos --size "$SIZE" --n "$N" \
    --variants default,bf16,tf32,tf,pytorch-fid,torch-fidelity,torchmetrics --peer-batch own "${PEERS[@]}" \
    --json "$OUT/e2e.json" 2>&1 | tee "$OUT/e2e.txt" || status=1
timeout "${PARITY_S:-120}" "$PY" benchmarks/bench_e2e.py --device "$DEVICE" --images photos --size "$SIZE" \
    --n "$PARITY_N" --variants default,cpu --json "$OUT/parity.json" 2>&1 | tee "$OUT/parity.txt" || status=1
timeout "${PIPE_S:-120}" "$PY" benchmarks/bench_pipeline.py --device "$DEVICE" --n "$PIPE_N" --size "$SIZE" \
    --batch-size 250 --json "$OUT/pipeline.json" 2>&1 | tee "$OUT/pipeline.txt" || status=1
exit $status
