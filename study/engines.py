"""Where a study's jobs run: one at a time on this machine, or as Ray tasks on a cluster.

Both run each job (``study.jobs.run_job``) in a process of its own and answer the same three
calls: ``submit(job, avoid)``, ``poll(timeout)`` -> [(job, result or JobDied)], ``stop()``.

Ray: each job is a task, not a Tune trial. A study's runs are fixed in advance (no search, no
early-stopping scheduler), a run directory already checkpoints and resumes itself exactly, and
Tune would add its own trial directories and checkpoint syncing beside it. A task is a function
call that Ray places on a node with the CPUs (and GPUs) it asks for; ``max_calls=1`` gives each
its own worker process, which exits afterwards. Ray's own retries are off (``max_retries=0``):
the study retries a job whose process or node died itself, so that it can say so, and ask for
another node than the one that failed (a soft node affinity; the same node when there is no other).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from study import jobs

PROJECT_ROOT = str(Path(__file__).resolve().parents[1])
STOP_WAIT_SECONDS = 120.0  # a stopped job saves its checkpoint first


class EngineError(ValueError):
    """The engine cannot start as asked (no Ray, no cluster at the address, storage the nodes do
    not share); one line."""


@dataclasses.dataclass(frozen=True)
class JobDied:
    """A job's process (or its node) went away before it returned."""
    why: str


class LocalEngine:
    """One job at a time, each in a child process of this machine."""
    capacity = 1
    nodes = 1

    def __init__(self, root: Path):
        self.folder = Path(root) / jobs.STATE_DIR / "jobs"
        self.running: dict = {}  # Popen -> (job, result path)

    def describe(self) -> str:
        return f"local ({socket.gethostname()}, one job at a time)"

    def submit(self, job: dict, avoid: str | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = self.folder / f"{job.kind}-{job.name}"
        Path(f"{stem}.job.json").write_text(json.dumps(job.to_json()))
        result = Path(f"{stem}.result.json")
        result.unlink(missing_ok=True)
        log = jobs.log_path(job.root, job.kind, job.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [PROJECT_ROOT, os.environ.get("PYTHONPATH")]))}
        with open(log, "a") as out:
            # Its own session: Ctrl-C at the terminal reaches the driver alone, which stops the job
            # with one SIGTERM (a second signal could cut its checkpoint short).
            process = subprocess.Popen([sys.executable, "-m", "study.jobs", f"{stem}.job.json", str(result)],
                                       stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.running[process] = (job, result)

    def poll(self, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        while True:
            done = [p for p in self.running if p.poll() is not None]
            if done or time.monotonic() >= deadline:
                break
            time.sleep(min(0.5, max(deadline - time.monotonic(), 0.0)))
        out = []
        for process in done:
            job, result = self.running.pop(process)
            try:
                out.append((job, json.loads(result.read_text())))
            except (OSError, ValueError):
                out.append((job, JobDied(f"its process ended with exit code {process.returncode} and no result")))
        return out

    def stop(self) -> list:
        for process in self.running:
            process.send_signal(signal.SIGTERM)
        return self.poll_all(STOP_WAIT_SECONDS)

    def poll_all(self, timeout: float) -> list:
        deadline, out = time.monotonic() + timeout, []
        while self.running and time.monotonic() < deadline:
            out += self.poll(1.0)
        for process in self.running:
            process.kill()
        return out

    def close(self) -> None:
        pass


def _ray_job(job: dict) -> dict:
    """A job inside a Ray worker: the node it runs on named for the study's lines."""
    import ray
    node = ray.get_runtime_context().get_node_id()
    return jobs.run_job(jobs.Job.from_json(job), node=f"{ray.util.get_node_ip_address()}/{node[:8]}", node_id=node)


class RayEngine:
    """Each job a Ray task with ``cpus`` CPUs (and ``gpus`` GPUs), on a Ray instance started here
    (``address`` None) or on the cluster at ``address`` ("auto" or HOST:PORT)."""

    def __init__(self, root: Path, address: str | None, cpus: float, gpus: float, data: Path | None = None):
        try:
            import ray
        except ImportError:
            raise EngineError("--engine ray needs Ray, which is not installed: pip install ray==2.60.0 "
                              "(requirements.txt), or use --engine local") from None
        self.ray, self.root = ray, Path(root)
        if address not in (None, "auto"):
            _probe_address(address)
        started = time.monotonic()
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [PROJECT_ROOT, os.environ.get("PYTHONPATH")]))}
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                     runtime_env={"env_vars": env})
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise EngineError(f"--ray_address {address}: no Ray cluster to join "
                              f"({str(err).splitlines()[0] if str(err) else type(err).__name__}): start one with "
                              f"`ray start --head`, or leave --ray_address out to run on this machine") from None
        self.startup_seconds = time.monotonic() - started
        self.task = ray.remote(max_calls=1, max_retries=0, num_cpus=cpus, num_gpus=gpus)(_ray_job)
        self.running: dict = {}  # ObjectRef -> job
        self.capacity = 10 ** 6  # Ray queues what does not fit
        if address is not None:
            self._check_shared_storage(data)

    @property
    def nodes(self) -> int:
        return len(self._alive())

    def _alive(self) -> list[dict]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def describe(self) -> str:
        nodes = self._alive()
        cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
        return f"ray ({len(nodes)} node(s), {cpus:g} CPUs; started or joined in {self.startup_seconds:.1f} s)"

    def submit(self, job: dict, avoid: str | None = None) -> None:
        task = self.task
        others = [n["NodeID"] for n in self._alive() if n["NodeID"] != avoid]
        if avoid and others:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            task = task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(others[0], soft=True))
        self.running[task.remote(job.to_json())] = job

    def poll(self, timeout: float) -> list:
        if not self.running:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
        out = []
        for ref in ready:
            job = self.running.pop(ref)
            try:
                out.append((job, self.ray.get(ref)))
            except self.ray.exceptions.TaskCancelledError:  # stopped before it started
                out.append((job, {"outcome": "cancelled"}))
            except self.ray.exceptions.RayError as err:
                out.append((job, JobDied(f"{type(err).__name__}: {_first_line(err)}")))
        return out

    def stop(self) -> list:
        for ref in self.running:
            self.ray.cancel(ref, force=False)  # a KeyboardInterrupt in the task: training saves a checkpoint
        deadline, out = time.monotonic() + STOP_WAIT_SECONDS, []
        while self.running and time.monotonic() < deadline:
            out += self.poll(1.0)
        return out

    def close(self) -> None:
        self.ray.shutdown()

    def _check_shared_storage(self, data: Path | None) -> None:
        """Every node must see the study's root at the same path (a run retried on another node
        resumes from the checkpoints its first attempt wrote there), and the image folder it
        trains on (``data``), checked with a task on each node."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        probe = self.root / jobs.STATE_DIR / f"probe-{uuid.uuid4().hex}"
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        paths = [str(probe)] + ([str(data)] if data else [])
        try:
            nodes = self._alive()
            checks = [self.ray.remote(num_cpus=0)(_seen).options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(paths)
                for n in nodes]
            for node, seen in zip(nodes, self.ray.get(checks, timeout=120)):
                if not seen[0]:
                    raise EngineError(f"--root {self.root} is not visible from Ray node {node['NodeManagerAddress']}: "
                                      f"a study's runs must live on storage every node mounts at the same path (a "
                                      f"shared file system), so that a run retried elsewhere resumes from its "
                                      f"checkpoints")
                if not all(seen):
                    raise EngineError(f"the dataset folder {data} is not visible from Ray node "
                                      f"{node['NodeManagerAddress']}: every node trains from it, at the same path")
        finally:
            probe.unlink(missing_ok=True)


def _seen(paths: list[str]) -> list[bool]:
    return [os.path.exists(p) for p in paths]


def _probe_address(address: str) -> None:
    """A HOST:PORT nobody answers at fails here, in seconds, not after Ray's minute of retries."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except ValueError:
        raise EngineError(f"--ray_address takes auto or HOST:PORT, got {address!r}") from None
    except OSError as err:
        raise EngineError(f"--ray_address {address}: nothing answers there ({err.strerror or type(err).__name__}): "
                          f"start the cluster's head with `ray start --head --port {port}`, or leave --ray_address "
                          f"out to run on this machine") from None


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


def make_engine(name: str, root: Path, address: str | None, cpus: float, gpus: float, data: Path | None = None):
    """``data``: the image folder the study trains from (None: a tfds dataset), which every Ray
    node must see."""
    if name == "local":
        if address:
            raise EngineError("--ray_address joins a Ray cluster: give it with --engine ray")
        return LocalEngine(root)
    return RayEngine(root, address, cpus, gpus, data)
