#!/usr/bin/env bash
# Does bfloat16 train as well as float32? Clean and PGD-AT (--preset cpu: width 0.25, 10,000
# training images, 15 epochs), each in float32 and mixed_bfloat16, then every run evaluated on the
# same 1,000 test images (FGM and MIM at L2 0.5, CW-L2). Resumable: finished runs are skipped.
#   bash scripts/bf16_check.sh [DATA_FOLDER] [ROOT]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/cifar10-jpeg}
ROOT=${2:-runs/bf16-check}
common=(--preset cpu --dataset "folder:$DATA" --root "$ROOT" --sweep precision=float32,mixed_bfloat16)
python run.py --mode sweep --defense none --seeds 0,1 "${common[@]}"
python run.py --mode sweep --defense pgd --seeds 0 "${common[@]}"
runs=()
for run in "$ROOT"/*-seed*; do runs+=(--run_dir "$run"); done
python run.py --mode eval "${runs[@]}" --attacks fgm,mim,cw --test_limit 1000 --eval_dir "$ROOT/eval"
