"""Whether ``--precision mixed_bfloat16`` pays on this CPU: a short probe behind a one-line note.

bfloat16 trained 2-3x faster than float32 on the CPUs with AMX this project was measured on, 1.9x
on an AMD EPYC with AVX512-BF16, and 0.7x (slower) on an Intel Xeon with AVX512-BF16 but no AMX
(docs/results/cifar10-cpu-full/README.md, Stage 10): the instruction set alone does not tell, so
training in bfloat16 on a CPU first times one convolution's forward and backward pass in both
precisions and says so when bfloat16 is the slower. The note only informs: the run keeps the
precision it was given (its config.json records it), and ``python -m benchmarks.step_time
--precision float32,mixed_bfloat16`` times the real steps.
"""
from __future__ import annotations

import time

import tensorflow as tf

SLOWER = 0.9  # below this ratio of float32's time to bfloat16's, the note is said


def bfloat16_speedup(batch: int = 64, size: int = 16, channels: int = 64, rounds: int = 5, calls: int = 3) -> float:
    """float32's time over bfloat16's for a 3x3 convolution's forward and backward pass on the
    CPU (the best of ``rounds`` rounds of ``calls`` calls each, after a compiling call): above 1,
    bfloat16 is the faster."""
    seconds = {}
    with tf.device("/CPU:0"):
        for dtype in (tf.float32, tf.bfloat16):
            x = tf.cast(tf.random.stateless_normal([batch, size, size, channels], seed=(0, 1)), dtype)
            kernel = tf.Variable(tf.cast(tf.random.stateless_normal([3, 3, channels, channels], seed=(0, 2)), dtype))

            @tf.function
            def step():
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = tf.nn.conv2d(x, kernel, 1, "SAME")
                    loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
                return tape.gradient(loss, [x, kernel])

            step()
            best = float("inf")
            for _ in range(rounds):
                started = time.perf_counter()
                for _ in range(calls):
                    grads = step()
                grads[1].numpy()
                best = min(best, time.perf_counter() - started)
            seconds[dtype] = best
    return seconds[tf.float32] / seconds[tf.bfloat16]


def has_accelerator() -> bool:
    """A GPU or TPU is visible: bfloat16's speed there is not this probe's business."""
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def note_bfloat16_speed(say) -> float | None:
    """On a machine without an accelerator, probe bfloat16's speed against float32's and say so
    when it is the slower; returns the ratio (None where it was not probed)."""
    if has_accelerator():
        return None
    ratio = bfloat16_speedup()
    if ratio < SLOWER:
        say(f"note: on this CPU bfloat16 ran a convolution probe at {ratio:.2f}x float32's speed, so "
            "--precision mixed_bfloat16 likely trains slower than --precision float32 here (training goes on "
            "as asked; `python -m benchmarks.step_time --precision float32,mixed_bfloat16` times the real steps)")
    return ratio
