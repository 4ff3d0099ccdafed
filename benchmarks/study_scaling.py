"""A 4-run study on --engine local against --engine ray with one and with two single-CPU nodes, on
this machine (the nodes are ray.cluster_utils.Cluster's processes), plus Ray's start-up overhead.

    python benchmarks/study_scaling.py [--dataset folder:../shared/data/cifar10-jpeg]

Every engine gets one thread per job (``--cpus_per_run 1``), so each trains the same runs to the
same weights and only the scheduling differs; every study starts from an empty root (training,
evaluation and report). Prints a markdown table (docs/scaling.md) from this one run.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from study.runner import Options, run_study  # noqa: E402
from study.spec import load  # noqa: E402

SPEC = """
[study]
name = "scaling"
seeds = [0, 1]
[training]
epochs = 2
train_limit = 1024
test_limit = 128
batch_size = 64
width = 0.25
monitor_size = 64
log_every_steps = 4
keep_checkpoints = "all"
checkpoint_every_minutes = 0.0
[[arms]]
defense = "none"
[[arms]]
defense = "fgm"
sweep = { eps = [0.5] }
[matching]
target = "lowest"
tolerance = 1.0
[evaluation]
attacks = ["fgm"]
test_limit = 128
masking_iters = 2
[report]
figure2_epochs = 1
"""


PHASES = ("training:", "evaluation:", "report: queued", "summary:")


def _study(spec, options: Options) -> tuple[dict, list[str]]:
    """Runs the study in an empty root; {phase: seconds} (training, evaluation, report, wall) and its lines."""
    lines: list[str] = []
    marks: dict[str, float] = {}

    def say(line: str) -> None:
        lines.append(line)
        for phase in PHASES:
            if line.startswith(phase):
                marks.setdefault(phase, time.monotonic())

    with tempfile.TemporaryDirectory() as root:
        started = time.monotonic()
        code = run_study(spec, root, options, say=say)
        wall = time.monotonic() - started
    if code != 0:
        raise SystemExit("the study failed:\n" + "\n".join(lines))
    times = [marks[p] for p in PHASES]
    return {"training": times[1] - times[0], "evaluation": times[2] - times[1], "report": times[3] - times[2],
            "wall": wall}, lines


def _noop() -> int:
    return os.getpid()


def _on_cluster(spec, nodes: int) -> tuple[dict, float, float]:
    """(the study's phase seconds, cluster start + ray.init seconds, seconds a one-task worker
    takes to start and answer) on ``nodes`` single-CPU Ray nodes."""
    import ray
    from ray.cluster_utils import Cluster
    started = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        start = time.monotonic() - started
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        task = ray.remote(max_calls=1, num_cpus=1)(_noop)
        ray.get(task.remote())  # the first starts the job's worker pool
        began = time.monotonic()
        ray.get([task.remote() for _ in range(4)])
        per_task = (time.monotonic() - began) / 4 * nodes  # tasks ran `nodes` at a time
        ray.shutdown()
        phases, lines = _study(spec, Options("ray", cluster.address, 1, 0))
    finally:
        cluster.shutdown()
    joined = float(next(line.split("in ")[-1].split(" s")[0] for line in lines if "started or joined" in line))
    return phases, start + joined, per_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="folder:../shared/data/cifar10-jpeg")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scaling.toml"
        path.write_text(SPEC)
        spec = load(path, dataset=args.dataset)
        rows = []
        local, _ = _study(spec, Options("local", None, 1, 0))
        rows.append(("local, one job at a time", local, "-", "-"))
        for nodes in (1, 2):
            phases, start, per_task = _on_cluster(spec, nodes)
            rows.append((f"ray, {nodes} single-CPU node{'s' if nodes > 1 else ''}", phases, f"{start:.1f}",
                         f"{per_task:.2f}"))
    print(f"4-run study (2 arms x 2 seeds: 4 trainings, 4 evaluations, the report), one thread per job, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| engine | training s | evaluation s | report s | wall s | wall vs local | Ray start s (cluster + "
          "ray.init) | Ray worker start s per task |")
    print("|---|---|---|---|---|---|---|---|")
    for name, phases, start, per_task in rows:
        print(f"| {name} | {phases['training']:.0f} | {phases['evaluation']:.0f} | {phases['report']:.0f} | "
              f"{phases['wall']:.0f} | {local['wall'] / phases['wall']:.2f}x | {start} | {per_task} |")


if __name__ == "__main__":
    main()
