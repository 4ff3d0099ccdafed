"""What a run's machine is, for its record (``training.rundir.run_record``'s ``host``): the CPU
model and the GPUs, which a report names per run (study/report_protocol.py), so that numbers
from a cluster's different machines, or from a new machine, say where they came from."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str | None:
    """This machine's CPU model name ("AMD EPYC 9B14", ...), or None where it cannot tell."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def gpu_names() -> list[str]:
    """The GPUs TensorFlow sees, by name ([] without one)."""
    import tensorflow as tf
    return [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]
