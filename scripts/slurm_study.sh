#!/usr/bin/env bash
# A study inside one SLURM allocation: a Ray cluster over the allocated nodes (the first node its
# head), the study driven from the first node, everything stopped when the study ends. The same
# sbatch again resumes: finished runs are skipped, stopped ones resume from their checkpoints
# (docs/studies.md, "Inside a SLURM allocation").
#
#   sbatch scripts/slurm_study.sh SPEC ROOT DATASET [more run.py flags, e.g. --cpus_per_run 4]
#   sbatch scripts/slurm_study.sh studies/cpu_full.toml /shared/runs/cpu-full folder:/shared/data/cifar10-jpeg
#
# ROOT and the dataset must be on storage every node mounts at the same path; the home directory
# (for Ray's token) too. Submit from the checkout: only the driver's node reads it.
#SBATCH --job-name=study
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --signal=B:INT@300
#SBATCH --requeue
#SBATCH --output=slurm-study-%j.out
set -euo pipefail
SPEC=$1 ROOT=$2 DATASET=$3
shift 3
cd "${SLURM_SUBMIT_DIR:-.}"

# Ray 2.60 authenticates nodes and clients with a token when one exists: one for all, in the
# shared home, and every Ray process told to use it.
export RAY_AUTH_MODE=token
[ -f ~/.ray/auth_token ] || ray get-auth-token --generate > /dev/null

mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head=${nodes[0]}
port=$((6379 + SLURM_JOB_ID % 1000))  # two studies' allocations sharing a node do not meet
cpus=${SLURM_CPUS_PER_TASK:-1}

srun --nodes=1 --ntasks=1 -w "$head" ray start --head --port="$port" --num-cpus="$cpus" \
    --include-dashboard=false --block &
sleep 15
for node in "${nodes[@]:1}"; do
    srun --nodes=1 --ntasks=1 -w "$node" ray start --address="$head:$port" --num-cpus="$cpus" --block &
done
sleep 15

# SIGINT 5 minutes before the time limit (--signal above), or SIGTERM on preemption: the study
# stops its jobs as Ctrl-C does (each saves its checkpoint) and exits 130; the same sbatch resumes.
python run.py --mode study --spec "$SPEC" --root "$ROOT" --dataset "$DATASET" --engine ray \
    --ray_address "$head:$port" "$@" &
study=$!
trap 'kill -INT "$study" 2> /dev/null' INT TERM
code=0
wait "$study" || code=$?
while kill -0 "$study" 2> /dev/null; do  # the trap interrupted the wait: wait for the study itself
    wait "$study" || code=$?
done
exit "$code"
