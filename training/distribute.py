"""Data parallelism through ``tf.distribute``: ``--strategy default|mirrored|multi_worker``.

The loop builds every variable (networks, optimizers, EMA, step) under the strategy's scope,
feeds it ``experimental_distribute_dataset`` batches and runs the defense's step with
``strategy.run``: each replica gets a slice of the global batch, crafts its adversarial examples
itself, and the optimizers sum the replicas' gradients. A defense's step therefore works per
replica and must make every batch-level quantity a *global*-batch one, which the helpers below
provide (they reduce to the plain computation under the default strategy):

- ``global_batch_mean``: a replica's share of the global-batch mean of per-example losses
  (``tf.nn.compute_average_loss`` with the global batch size), so that the summed gradients are
  those of the global mean;
- ``global_max`` and ``gather_batch``: a maximum over, and the rows of, the whole global batch
  (L2L's gradient scale, RvS's optimal transport between the batch's features);
- ``ReplicaNoise``: random draws that depend on the global batch, not on how it is split, so
  PGD's random start and RvS's noise are the same under any number of replicas.

With these, one step under ``MirroredStrategy`` gives the weights one step of the default
strategy gives on the same global batch (tests/test_distribute.py). Batch-norm layers of the
learned attackers are ``synchronized`` for the same reason.

``mirrored`` uses every GPU; on a machine without one it splits the CPU into
``--cpu_replicas`` logical devices (for trying the code path, not for speed). ``multi_worker`` reads
the cluster from ``TF_CONFIG`` as TensorFlow documents it; worker 0 (or the chief) writes the
run directory, the others write their checkpoints to a temporary folder they delete.
"""
from __future__ import annotations

import json
import os

import tensorflow as tf

from training.config import STRATEGIES


class StrategyError(ValueError):
    """A strategy that cannot be set up as asked; the message names the fix."""


def make_strategy(name: str, cpu_replicas: int = 2) -> tf.distribute.Strategy:
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        split_cpu(cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise StrategyError("--strategy multi_worker needs TF_CONFIG (the cluster and this worker's task): "
                                "see docs/distribute.md's two-worker example")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError:
            raise StrategyError("TF_CONFIG is not valid JSON: see docs/distribute.md's two-worker example") from None
        if not tf.config.list_physical_devices("GPU"):
            split_cpu(1)
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise StrategyError(f"unknown --strategy '{name}': choose one of {', '.join(STRATEGIES)}")


def split_cpu(replicas: int) -> None:
    """Makes ``replicas`` logical CPU devices; TensorFlow allows this only before it starts its runtime."""
    if replicas < 1:
        raise StrategyError(f"--cpu_replicas must be >= 1, got {replicas}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if (len(current) if current else 1) == replicas:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError:
        raise StrategyError(f"cannot split the CPU into {replicas} devices after TensorFlow has started: "
                            f"choose the strategy first thing in the process") from None


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory: always, except a non-chief multi-worker task."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)


def task_id(strategy: tf.distribute.Strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None else 0


def _replica_context():
    """The replica context when several replicas run this code, else None."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return ctx


def global_batch_mean(per_example: tf.Tensor) -> tf.Tensor:
    """This replica's share of the mean over the global batch: sum over its rows / global batch size.
    Summed across replicas (the optimizers' gradient all-reduce) it is the global mean; with one
    replica it is ``tf.reduce_mean``."""
    per_example = tf.cast(per_example, tf.float32)
    ctx = _replica_context()
    if ctx is None:
        return tf.reduce_mean(per_example)
    _, global_size = batch_rows(tf.shape(per_example)[0])
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_size)


def replica_share(value: tf.Tensor) -> tf.Tensor:
    """A global-batch quantity every replica computes in full (such as an OT distance over the
    gathered batch), divided by the number of replicas, so that the summed gradients count it once."""
    ctx = _replica_context()
    return value if ctx is None else value / ctx.num_replicas_in_sync


def batch_rows(local_size: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(first row of this replica's slice in the global batch, global batch size). The loop splits
    every global batch evenly (``check_batch_split``), so this needs no communication."""
    ctx = _replica_context()
    local_size = tf.cast(local_size, tf.int32)
    if ctx is None:
        return tf.constant(0, tf.int32), local_size
    replica = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    return replica * local_size, local_size * ctx.num_replicas_in_sync


def check_batch_split(batch_size: int, strategy: tf.distribute.Strategy) -> None:
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise StrategyError(f"--batch_size {batch_size} does not split evenly over {replicas} replicas: "
                            f"choose a multiple of {replicas}")


def global_max(value: tf.Tensor) -> tf.Tensor:
    """The maximum of ``value`` over every replica (a scalar)."""
    ctx = _replica_context()
    value = tf.reduce_max(value)
    if ctx is None:
        return value
    return tf.reduce_max(ctx.all_gather(tf.reshape(value, [1]), axis=0))


def gather_batch(rows: tf.Tensor) -> tf.Tensor:
    """The global batch's rows, in replica order (differentiable: the gradient goes back to the
    replica each row came from)."""
    ctx = _replica_context()
    return rows if ctx is None else ctx.all_gather(rows, axis=0)


class ReplicaNoise:
    """Random draws, with ``tf.random.Generator``'s ``normal``/``uniform`` signatures, that depend on
    (seed, training step, draw) and on the *global* batch only: each replica draws the whole
    batch's values from a stateless generator and keeps its own rows. A run therefore draws the
    same random starts under any strategy, and a resumed run the same as an uninterrupted one
    (the step is in the checkpoint).

    Draws are numbered in the order a traced step makes them, separately for each replica (their
    step functions are traced side by side, in threads); ``begin`` restarts the count when a step
    function is traced.
    """

    def __init__(self, seed: int, step: tf.Variable):
        self.seed = int(seed)
        self.step = step
        self._first = 0
        self._draws: dict[int, int] = {}

    def begin(self, first_draw: int = 0) -> None:
        self._first = first_draw
        self._draws = {}

    def _next_draw(self) -> int:
        ctx = _replica_context()
        replica = 0 if ctx is None else int(tf.get_static_value(ctx.replica_id_in_sync_group))
        draw = self._draws.get(replica, self._first)
        self._draws[replica] = draw + 1
        return draw

    def normal(self, shape, dtype=tf.float32):
        return self._draw(shape, lambda s, seed: tf.random.stateless_normal(s, seed, dtype=dtype))

    def uniform(self, shape, minval=0.0, maxval=1.0, dtype=tf.float32):
        return self._draw(shape, lambda s, seed: tf.random.stateless_uniform(s, seed, minval, maxval, dtype=dtype))

    def _draw(self, shape, sample):
        shape = tf.cast(tf.convert_to_tensor(shape), tf.int32)
        offset, global_size = batch_rows(shape[0])
        seed = tf.stack([tf.constant(self.seed, tf.int64),
                         tf.cast(self.step.read_value(), tf.int64) * 1024 + self._next_draw()])
        values = sample(tf.concat([[global_size], shape[1:]], axis=0), seed)
        return values[offset:offset + shape[0]]
