"""Where a study's jobs run: one at a time on this machine, or as Ray tasks on a cluster.

Both run each job (``study.jobs.run_job``) in a process of its own and answer the same three
calls: ``submit(job)``, ``poll(timeout)`` -> [(job, result dict | Retrying | JobDied)], ``stop()``.
A job whose process or node dies is run again by the engine, at most ``MAX_ATTEMPTS`` times in
all (``Retrying`` says so; the run resumes from its own checkpoints); ``JobDied`` is final.

Ray: each job is a task, not a Tune trial. A study's runs are fixed in advance (no search, no
early-stopping scheduler), a run directory already checkpoints and resumes itself exactly, and
Tune would add its own trial directories and checkpoint syncing beside it. A task is a function
call that Ray places on a node with the CPUs (and GPUs) it asks for; ``max_calls=1`` gives each
its own worker process, which exits afterwards. Ray retries a task whose worker or node died
(``max_retries``: the run resumes from its checkpoints wherever the retry lands), placed like any
task (``SPREAD``: on the least loaded node with room, never held for one node). The code reaches
every node through Ray's ``runtime_env`` (this project's packages, shipped by the driver as the
tasks' working directory); a node needs the packages of requirements.txt, the study's root and its
data, not a checkout.

Local: each job a child process that dies with the driver (``PR_SET_PDEATHSIG``: a driver killed
outright leaves no job holding a run's lock); the engine runs a child that died again itself.
"""
from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from study import jobs
from training import native_stderr

PROJECT_ROOT = str(Path(__file__).resolve().parents[1])
# The packages a job imports, shipped to Ray's workers (not tests/, docs/, runs or data).
PACKAGES = ("attacks", "configs", "data", "eval", "models", "study", "training")
STOP_WAIT_SECONDS = 120.0  # a stopped job saves its checkpoint first
MAX_ATTEMPTS = 3           # a job's process (or node) may die twice; the third death is final


class EngineError(ValueError):
    """The engine cannot start as asked (no Ray, no cluster at the address, storage the nodes do
    not share); one line."""


@dataclasses.dataclass(frozen=True)
class JobDied:
    """A job's process (or its node) went away before it returned, ``MAX_ATTEMPTS`` times."""
    why: str


@dataclasses.dataclass(frozen=True)
class Retrying:
    """The engine runs the job again: ``why`` its previous attempt ended, ``attempt`` of ``attempts``."""
    why: str
    attempt: int
    attempts: int = MAX_ATTEMPTS


def _job_stem(job) -> str:
    return f"{job.kind}-{job.name}"


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------ local

_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with(parent: int):
    """Runs in the child between fork and exec: SIGTERM it when the driver dies (the job saves its
    checkpoint and releases the run's lock, as on Ctrl-C); a driver already gone ends it now."""
    def arrange():
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
    return arrange


class LocalEngine:
    """One job at a time, each in a child process of this machine."""
    capacity = 1
    nodes = 1

    def __init__(self, root: Path):
        self.folder = Path(root) / jobs.STATE_DIR / "jobs"
        self.running: dict = {}  # Popen -> (job, result path)
        self.stopping = False

    def describe(self) -> str:
        return f"local ({socket.gethostname()}, one job at a time)"

    def submit(self, job, avoid: str | None = None) -> None:  # avoid: the runner's, before engines retried
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = self.folder / _job_stem(job)
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
                                       stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                       preexec_fn=_die_with(os.getpid()))
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
            found = _read_json(result)
            if found is not None:
                out.append((job, found))
                continue
            state = jobs.read_state(job.root, job.kind, job.name) or {}
            why = f"its process (pid {process.pid}) ended with {_exit_text(process.returncode)} and no result"
            if self.stopping:  # our SIGTERM came before it could take it as a stop (it was starting)
                out.append((job, _stopped(job, state.get("node"))))
            elif job.attempt < MAX_ATTEMPTS:
                out.append((job, Retrying(why, job.attempt + 1)))
                self.submit(dataclasses.replace(job, attempt=job.attempt + 1))
            else:
                where = f" on {state['node']}" if state.get("node") else ""
                out.append((job, JobDied(f"its process died {job.attempt} times{where}; the last {why}")))
        return out

    def stop(self) -> list:
        self.stopping = True
        for process in self.running:
            process.send_signal(signal.SIGTERM)
        return self.poll_all(STOP_WAIT_SECONDS)

    def poll_all(self, timeout: float) -> list:
        deadline, out = time.monotonic() + timeout, []
        while self.running and time.monotonic() < deadline:
            out += [(job, r) for job, r in self.poll(1.0) if not isinstance(r, Retrying)]
        for process, (job, _) in list(self.running.items()):  # deaf to the stop: killed, and said so
            process.kill()
            process.wait()
            state = jobs.read_state(job.root, job.kind, job.name) or {}
            out.append((job, _stopped(job, state.get("node"), unanswered=timeout)))
        self.running.clear()
        return out

    def close(self) -> None:
        pass


def _stopped(job, node: str | None, unanswered: float | None = None) -> dict:
    """The result of a job stopped without one of its own: a run, at its last checkpoint.
    ``unanswered``: the seconds it was given to stop before it was ended (without a new checkpoint)."""
    result = {"outcome": "stopped", "error": "interrupted", "node": node}
    if unanswered is not None:
        result["unanswered"] = unanswered
    if job.kind == "train":
        from study.sweep import progress
        result["step"] = progress(job.run_dir, job.epochs, job.work.run.stop_at_benign)["step"]
    return result


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


# -------------------------------------------------------------------------------------------- ray

def _attempts_path(root: str, stem: str) -> Path:
    return Path(root) / jobs.STATE_DIR / "jobs" / f"{stem}.ray.json"


def answer_ray_cancel() -> None:
    """Ray stops a running task with ``_thread.interrupt_main()``, which does nothing where SIGINT
    is ignored: in every process of a study started in the background (`cmd &` in a script), the
    Ray instance it starts and its workers included. Python's own handler makes it a
    KeyboardInterrupt again, which training answers with a checkpoint."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _ray_job(record: dict, task: str) -> dict:
    """A job inside a Ray worker. Its attempts are counted in ``<root>/.study/jobs/<job>.ray.json``
    under ``task``, the submission's token (the same on every retry; not Ray's task id, which a
    new Ray instance deals out again in the same order), with where each ran and, at the end, the
    result (which the driver reads when Ray reports only that the task was cancelled)."""
    import ray

    job = jobs.Job.from_json(record)
    context = ray.get_runtime_context()
    node = context.get_node_id()
    where = f"{ray.util.get_node_ip_address()}/{node[:8]}"
    path = _attempts_path(job.root, _job_stem(job))
    path.parent.mkdir(parents=True, exist_ok=True)
    before = _read_json(path) or {}
    attempt = before.get("attempt", 0) + 1 if before.get("task") == task else 1
    mine = {"task": task, "attempt": attempt, "node": where, "node_id": node, "pid": os.getpid(),
            "before": {k: before.get(k) for k in ("node", "node_id", "pid")} if attempt > 1 else None}
    _write_json(path, mine)
    if not os.path.isdir(job.cwd):  # a node without the driver's working directory (paths sent are absolute)
        job = dataclasses.replace(job, cwd=job.root)
    answer_ray_cancel()
    result = jobs.run_job(dataclasses.replace(job, attempt=attempt), node=where, node_id=node)
    _write_json(path, {**mine, "result": result})
    return result


@dataclasses.dataclass
class _Task:
    job: object
    task: str            # the submission's token: the same on every retry
    attempt: int = 0     # the last attempt seen starting
    node: str | None = None
    node_id: str | None = None


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
        held: dict = {}
        handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        try:  # Ray's C++ client prints a line per failed try: one line says why instead
            with native_stderr.held_back(show=lambda error: error is None, into=held), \
                    tempfile.TemporaryDirectory(prefix="study-code-") as code:  # uploaded by ray.init
                ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                         runtime_env=runtime_env(Path(code)))
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as err:
            raise EngineError(_join_failed(address, err, held.get("text", ""))) from None
        finally:  # ray.init puts its own C++ handler under SIGTERM (a stack dump, then death): `kill`
            for number, handler in handlers.items():  # must stop the study as Ctrl-C does
                if handler is not None and threading.current_thread() is threading.main_thread():
                    signal.signal(number, handler)
        self.startup_seconds = time.monotonic() - started
        self.task = ray.remote(max_calls=1, max_retries=MAX_ATTEMPTS - 1, retry_exceptions=False, num_cpus=cpus,
                               num_gpus=gpus, scheduling_strategy="SPREAD")(_ray_job)
        self.running: dict = {}  # ObjectRef -> _Task
        self.cpus, self.gpus = cpus, gpus
        if address is not None:
            self._check_shared_storage(data)

    @property
    def capacity(self) -> int:
        """The jobs the cluster can run at once now (at least 1). The study keeps the rest in its
        own queue rather than handing them to Ray, whose queue runs tasks in the order they came:
        so an evaluation queued as a run finishes takes the next free slot, ahead of the training
        still to do. (Read each time: nodes join and leave.)"""
        total = self.ray.cluster_resources()
        slots = total.get("CPU", 0.0) // self.cpus if self.cpus else float("inf")
        if self.gpus:
            slots = min(slots, total.get("GPU", 0.0) // self.gpus)
        return int(max(1, min(slots, 10 ** 6)))

    @property
    def nodes(self) -> int:
        return len(self._alive())

    def _alive(self) -> list[dict]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def describe(self) -> str:
        nodes = self._alive()
        cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
        return f"ray ({len(nodes)} node(s), {cpus:g} CPUs; started or joined in {self.startup_seconds:.1f} s)"

    def submit(self, job, avoid: str | None = None) -> None:  # avoid: the runner's, before Ray retried
        token = uuid.uuid4().hex
        ref = self.task.remote(job.to_json(), token)
        self.running[ref] = _Task(job, token)

    def poll(self, timeout: float) -> list:
        if not self.running:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
        out = self._retries()
        for ref in ready:
            task = self.running.pop(ref)
            try:
                out.append((task.job, self.ray.get(ref)))
            except self.ray.exceptions.TaskCancelledError:  # stopped: what it was doing when it stopped
                out.append((task.job, self._cancelled(task)))
            except self.ray.exceptions.RayError as err:
                where = f" (the last on {task.node})" if task.node else ""
                out.append((task.job, JobDied(f"Ray gave up after {max(task.attempt, 1)} attempt(s){where}: "
                                              f"{type(err).__name__}: {_first_line(err)}")))
        return out

    def _retries(self) -> list:
        """(job, Retrying) for each task seen starting again since the last poll."""
        out = []
        alive = None
        for task in self.running.values():
            record = _read_json(_attempts_path(task.job.root, _job_stem(task.job))) or {}
            if record.get("task") != task.task or record.get("attempt", 0) <= task.attempt:
                continue
            if task.attempt:
                alive = alive if alive is not None else {n["NodeID"] for n in self._alive()}
                why = (f"its node {task.node} was lost" if task.node_id not in alive
                       else f"its process died on {task.node}")
                out.append((task.job, Retrying(why, record["attempt"])))
            task.attempt, task.node, task.node_id = record["attempt"], record.get("node"), record.get("node_id")
        return out

    def _cancelled(self, task: _Task) -> dict:
        """A task Ray reports cancelled: its own result if it returned one (training stopped at
        step N), "stopped" if it had started, "cancelled" (not started) if it never ran."""
        record = _read_json(_attempts_path(task.job.root, _job_stem(task.job))) or {}
        if record.get("task") != task.task:
            return {"outcome": "cancelled"}
        return record.get("result") or _stopped(task.job, record.get("node"))

    def stop(self) -> list:
        for ref in self.running:
            self.ray.cancel(ref, force=False)  # a KeyboardInterrupt in the task: training saves a checkpoint
        deadline, out = time.monotonic() + STOP_WAIT_SECONDS, []
        while self.running and time.monotonic() < deadline:
            out += [(job, r) for job, r in self.poll(1.0) if not isinstance(r, Retrying)]
        for ref, task in list(self.running.items()):  # deaf to the cancel: its worker is killed, and said so
            self.ray.cancel(ref, force=True)
            out.append((task.job, _stopped(task.job, task.node, unanswered=STOP_WAIT_SECONDS)))
        self.running.clear()
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


def runtime_env(folder: Path) -> dict:
    """This project's packages, copied into ``folder``, as the tasks' working directory: ray.init
    uploads it and every node unpacks it (cached by content), so a node runs the driver's code
    and needs no checkout. A working directory, not ``py_modules``: with one, Ray does not put the
    driver's own directory first on every worker's path (where a node holding another checkout at
    the same path would import that one)."""
    from training import rundir
    for name in PACKAGES:
        shutil.copytree(Path(PROJECT_ROOT) / name, Path(folder) / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # The copy has no .git: each run's config.json records the driver's commit from this instead.
    (Path(folder) / rundir.GIT_STATE_FILE).write_text(json.dumps(rundir.git_state()))
    return {"working_dir": str(folder)}


def _seen(paths: list[str]) -> list[bool]:
    return [os.path.exists(p) for p in paths]


def _join_failed(address: str | None, err: Exception, printed: str) -> str:
    """One line for a failed ``ray.init``; ``printed``: what Ray's C++ client wrote meanwhile."""
    text = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    said = f"{type(err).__name__} {err} {printed}"
    if any(word in said for word in ("InvalidAuthToken", "Unauthenticated", "AuthenticationError", "auth_token")):
        # Ray 2.60: a head started where a token exists (~/.ray/auth_token) asks every client for it.
        mode = os.environ.get("RAY_AUTH_MODE")
        here = "has no token" if mode == "token" else f"does not use it (RAY_AUTH_MODE={mode or 'unset'})"
        return (f"--ray_address {address}: the Ray cluster there uses token authentication and this process {here}: "
                f"run the study with RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token (or "
                f"RAY_AUTH_TOKEN), as every node was started (docs/studies.md, Running on a cluster)")
    return (f"--ray_address {address}: no Ray cluster to join ({text}): start one with `ray start --head`, or "
            f"leave --ray_address out to run on this machine")


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
