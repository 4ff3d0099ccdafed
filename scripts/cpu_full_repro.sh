#!/usr/bin/env bash
# The second CPU-scale reproduction (docs/results/cifar10-cpu-full/): --preset cpu_full (width 0.5,
# generator width 0.5, all 50,000 training images with flip + shift, bfloat16, 20 epochs).
#
#   bash scripts/cpu_full_repro.sh STAGE [ROOT] [DATASET]
#
# Stages, in the order they should run (each resumable: finished runs are skipped, a stopped one
# resumes from its checkpoint; a session can run one stage in the background and commit its data).
# Sweep points are pruned before the Table 2 points' seeds, so the table comes before the curves:
#   calibrate  clean seed 0: how fast benign accuracy rises (picks the epoch count)
#   first-look seed 0 of the Table 2 points: clean, PGN at PGN_CL, FGM-AT,
#              PGN at PGN_CL with --pgn_grad_scale unit; first-look-report: the report of those
#   pgn-curve  PGN (both gradient scales) at c_L 0.1, 0.3, 1, seed 0: where PGN's curve meets the others
#   table      3 seeds at the Table 2 points: clean, FGM-AT and PGD-AT at eps 0.5, PGN at PGN_CL
#   curves     FGM-AT and PGD-AT at eps 0.25 and 1.0, seed 0 (PGD-AT's are the costliest, last)
#   source     the independent clean run (seed 3) on which black-box attacks are crafted
#   report     matching, evaluation of every table run on 1,000 test images (the paper's attacks,
#              black-box from the source, AutoAttack), Figure 5, the claims
# PGN_CL picks PGN's Table 2 point (default 0.3); set it from the pgn-curve stage. PGN with
# --pgn_grad_scale unit shares the root (its runs are named pgn-pgn_grad_scaleunit-...): the report
# gives it a row, a curve and claims of its own.
set -uo pipefail  # a diverged run is reported by its sweep; the others go on
STAGE=${1:?give a stage: calibrate, first-look, first-look-report, pgn-curve, table, curves, source or report}
ROOT=${2:-runs/cifar10-cpu-full}
DATASET=${3:-folder:../shared/data/cifar10-jpeg}
PGN_CL=${PGN_CL:-0.3}
cd "$(dirname "$0")/.."
sweep() {
  python run.py --mode sweep --preset cpu_full --dataset "$DATASET" --root "$ROOT" "$@"
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then exit "$rc"; fi  # bad input or Ctrl-C: stop here
}
unit=(--pgn_grad_scale unit)
# Every table run on 1,000 test images with the paper's attacks and AutoAttack's APGD-CE + APGD-T
# (the standard version with FAB-T and Square cost 6.8x more on the --preset cpu FGM-AT run; it runs on a subset apart).
report=(--match_benign lowest --test_limit 1000 --curve_test_limit 500 --attacks fgm,mim,deepfool,cw,autoattack
        --autoattack_version custom --autoattack_attacks apgd-ce,apgd-t --autoattack_curve 2)
case "$STAGE" in
  calibrate) sweep --defense none --seeds 0 ;;
  first-look)
    sweep --defense none --seeds 0
    sweep --defense pgn --sweep c_l="$PGN_CL" --seeds 0
    sweep --defense fgm --sweep eps=0.5 --seeds 0
    sweep --defense pgn --sweep c_l="$PGN_CL" "${unit[@]}" --seeds 0 ;;
  pgn-curve)
    sweep --defense pgn --sweep c_l=0.1,0.3,1 --seeds 0
    sweep --defense pgn --sweep c_l=0.1,0.3,1 "${unit[@]}" --seeds 0 ;;
  table)
    sweep --defense none --seeds 0,1,2
    sweep --defense fgm --sweep eps=0.5 --seeds 0,1,2
    sweep --defense pgn --sweep c_l="$PGN_CL" --seeds 0,1,2
    sweep --defense pgn --sweep c_l="$PGN_CL" "${unit[@]}" --seeds 0,1,2
    sweep --defense pgd --sweep eps=0.5 --seeds 0,1,2 ;;
  curves)
    sweep --defense fgm --sweep eps=0.25,1.0 --seeds 0
    sweep --defense pgd --sweep eps=0.25,1.0 --seeds 0 ;;
  source) sweep --defense none --seeds 3 ;;
  first-look-report)  # whatever has finished, without the black-box source, on 500 images: a first look
    python run.py --mode report --preset cpu_full --root "$ROOT" "${report[@]}" --test_limit 500 \
        --curve_test_limit 250 --figure2_epochs 3 ;;
  report)
    python run.py --mode report --preset cpu_full --root "$ROOT" "${report[@]}" --source_run "$ROOT/none-seed3" ;;
  *) echo "unknown stage '$STAGE': calibrate, first-look, first-look-report, pgn-curve, table, curves, source or report" >&2; exit 2 ;;
esac
