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
#   first-look seed 0 of every Table 2 point: clean, PGN at PGN_CL, FGM-AT, PGN with
#              --pgn_grad_scale unit at PGN_CL and at PGN_UNIT_CL, PGD-AT; first-look-report: the
#              report of what has finished (the final report's settings, without the black-box source;
#              also the report of a session on a new machine that has not trained the source again)
#   table      seeds 1 and 2 of every Table 2 point (PGN with --pgn_grad_scale unit at PGN_UNIT_CL),
#              each trained until its benign accuracy reaches MATCH (--stop_at_benign): Table 2 needs
#              no later epoch, and a run stopped there is the full run up to it (TABLE_SEEDS: "1 2")
#   source     the independent clean run (seed 3) on which black-box attacks are crafted
#   pgn-curve  the rest of PGN's curves (both gradient scales) at c_L 0.1, 0.3, 1, seed 0
#   curves     FGM-AT and PGD-AT at eps 0.25 and 1.0, seed 0 (PGD-AT's are the costliest, last)
#   baselines  FGSM-RS and TRADES at L2 eps 0.5: seed 0 of both, then seeds 1 and 2 (TRADES costs
#              about 12x a clean step in bfloat16, so its three seeds alone are about 7 hours)
#   report     matching, evaluation of every table run on 1,000 test images (the paper's attacks,
#              black-box from the source, AutoAttack), Figure 5, the claims. Runs evaluated by an
#              earlier report (PRIOR, default the committed report.json) whose weights are gone come
#              back as their committed training logs (LOGS) and keep that report's numbers
#              (--prior_report): each session trains and evaluates what it can and commits the report.
#              Every stage restores those logs into ROOT first, so that no sweep trains such a run again
#   status     trains nothing: every training stage's runs, finished or how far they got, and the
#              hours each has left (run.py --mode sweep --dry_run, from the runs' step rates)
# PGN_CL and PGN_UNIT_CL are PGN's Table 2 points, chosen from the first look (defaults 0.3 and 1):
# PGN at c_L 0.3 ends at benign accuracy 0.726, the FGM-AT and clean runs pass it, and PGN with
# --pgn_grad_scale unit at c_L 0.3 stays below 0.70 (a stronger attacker), so its point is c_L 1.
# PGN with --pgn_grad_scale unit shares the root (its runs are named pgn-pgn_grad_scaleunit-...):
# the report gives it a row, a curve and claims of its own.
set -uo pipefail  # a diverged run is reported by its sweep; the others go on
STAGES="calibrate, first-look, first-look-report, table, source, pgn-curve, curves, baselines, report or status"
STAGE=${1:?give a stage: $STAGES}
ROOT=${2:-runs/cifar10-cpu-full}
DATASET=${3:-folder:../shared/data/cifar10-jpeg}
PGN_CL=${PGN_CL:-0.3}
PGN_UNIT_CL=${PGN_UNIT_CL:-1}
# The benign accuracy Table 2 compares at: fixed, so that each run's matched epoch (and its cached
# attacks) do not move as other runs finish; the first look's runs end at 0.726-0.817 (PGN at c_L
# 0.3 lowest), and every run is matched to within --match_tolerance 0.01 or marked unmatched.
MATCH=${MATCH:-0.72}
cd "$(dirname "$0")/.."
RESULTS=docs/results/cifar10-cpu-full
LOGS=${LOGS:-$RESULTS/training-logs}
PRIOR=${PRIOR:-$([ -f $RESULTS/report.json ] && echo $RESULTS/report.json || echo $RESULTS/seed0/report.json)}
DRY=()  # the status stage: --dry_run
sweep() {
  python run.py --mode sweep --preset cpu_full --dataset "$DATASET" --root "$ROOT" "${DRY[@]}" "$@"
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then exit "$rc"; fi  # bad input or Ctrl-C: stop here
}
unit=(--pgn_grad_scale unit)
# Every table run on 1,000 test images with the paper's attacks and AutoAttack's APGD-CE + APGD-T,
# completed to the standard version (FAB-T, Square) on a fixed random 100 of them: the standard
# version cost 6.8x its APGD stages on the --preset cpu FGM-AT run, about 13 minutes per
# adversarially trained run on 100 images at width 0.5 (an estimate from that run and the step-cost ratio).
report=(--match_benign "$MATCH" --test_limit 1000 --curve_test_limit 500 --attacks fgm,mim,deepfool,cw,autoattack
        --autoattack_version custom --autoattack_attacks apgd-ce,apgd-t --autoattack_curve 2
        --autoattack_complete 100 --figure2_epochs 3)
first_look() {
  sweep --defense none --seeds 0
  sweep --defense pgn --sweep c_l="$PGN_CL" --seeds 0
  sweep --defense fgm --sweep eps=0.5 --seeds 0
  sweep --defense pgn --sweep c_l="$PGN_CL" "${unit[@]}" --seeds 0
  sweep --defense pgn --sweep c_l="$PGN_UNIT_CL" "${unit[@]}" --seeds 0
  sweep --defense pgd --sweep eps=0.5 --seeds 0
}
table() {  # seed by seed, so that a stopped stage leaves whole seeds
  local early=(--stop_at_benign "$MATCH")
  for seed in ${TABLE_SEEDS:-1 2}; do
    sweep --defense none --seeds "$seed" "${early[@]}"
    sweep --defense fgm --sweep eps=0.5 --seeds "$seed" "${early[@]}"
    sweep --defense pgn --sweep c_l="$PGN_CL" --seeds "$seed" "${early[@]}"
    sweep --defense pgn --sweep c_l="$PGN_UNIT_CL" "${unit[@]}" --seeds "$seed" "${early[@]}"
    sweep --defense pgd --sweep eps=0.5 --seeds "$seed" "${early[@]}"
  done
}
source_run() { sweep --defense none --seeds 3; }
pgn_curve() {
  sweep --defense pgn --sweep c_l=0.1,0.3,1 --seeds 0
  sweep --defense pgn --sweep c_l=0.1,0.3,1 "${unit[@]}" --seeds 0
}
curves() {
  sweep --defense fgm --sweep eps=0.25,1.0 --seeds 0
  sweep --defense pgd --sweep eps=0.25,1.0 --seeds 0
}
baselines() {
  for seeds in 0 1,2; do
    sweep --defense fgsm_rs --sweep eps=0.5 --seeds "$seeds"
    sweep --defense trades --sweep eps=0.5 --seeds "$seeds"
  done
}
restore_logs() {  # the runs PRIOR's reports evaluated and ROOT lacks: their committed training logs
  python - "$ROOT" "$LOGS" $PRIOR <<'PY'
import json, shutil, sys
from pathlib import Path
root, logs = Path(sys.argv[1]), Path(sys.argv[2])
for prior in sys.argv[3:]:
    report = json.loads(Path(prior).read_text())
    runs = {r["run"] for e in report["table"].values() for r in e["rows"]} | {p["run"] for p in report["curve_points"]}
    for run in sorted(runs):
        if not (root / run).exists():
            shutil.copytree(logs / run, root / run)
            print(f"{root / run}: the training log of a run {prior} evaluated (its weights are gone)")
PY
}
prior=()
for p in $PRIOR; do prior+=(--prior_report "$p"); done
case "$STAGE" in calibrate|first-look|first-look-report|table|source|pgn-curve|curves|baselines|report|status) ;;
  *) echo "unknown stage '$STAGE': $STAGES" >&2; exit 2 ;;
esac
# Every stage first: a run PRIOR evaluated is finished (its sweep skips it), whatever machine this is.
mkdir -p "$ROOT" && restore_logs || exit 2
case "$STAGE" in
  calibrate) sweep --defense none --seeds 0 ;;
  first-look) first_look ;;
  table) table ;;
  source) source_run ;;
  pgn-curve) pgn_curve ;;
  curves) curves ;;
  baselines) baselines ;;
  status)  # every training stage's runs: finished, how far the others got, the hours each has left
    DRY=(--dry_run)
    for stage in first_look table source_run pgn_curve curves baselines; do echo "== $stage"; "$stage"; done ;;
  first-look-report)  # whatever has finished, as the final report but without the black-box source:
    # its attacks are cached per run and matched epoch, so the final report computes only what is new
    python run.py --mode report --preset cpu_full --root "$ROOT" "${report[@]}" "${prior[@]}" ;;
  report)
    if [ ! -f "$ROOT/none-seed3/config.json" ]; then  # a new machine: the source's weights went with the old one
      echo "the black-box source $ROOT/none-seed3 is not trained on this machine: run the source stage first" \
           "(about 0.25 h, then 0.2 h crafting in the report), or first-look-report for this report without" \
           "black-box columns for the runs it evaluates" >&2
      exit 2
    fi
    python run.py --mode report --preset cpu_full --root "$ROOT" "${report[@]}" --source_run "$ROOT/none-seed3" \
      "${prior[@]}" ;;
esac
