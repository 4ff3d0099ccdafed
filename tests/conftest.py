"""Shared fixtures: a tiny learnable image folder, and the real CIFAR-10 copy when present."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# A suite started from a background shell (`nohup pytest &`) inherits SIGINT ignored, and so would
# every command the tests start: the Ctrl-C tests would then test nothing. A Python handler here
# is reset to the default on exec, so the commands the tests start get Ctrl-C as a user's would.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

CIFAR10_JPEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"


def write_image_folder(root: Path, classes=3, per_class_train=32, per_class_test=8, size=16, seed=0):
    """PATH/{train,test}/<class>/*.png with a class-dependent colour, so a CNN can learn it."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            base = np.zeros(3)
            base[c % 3] = 170
            for i in range(count):
                noise = rng.integers(0, 85, size=(size, size, 3))
                pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("tiny_folder"))


@pytest.fixture(scope="session")
def cifar10_jpeg() -> Path:
    if not CIFAR10_JPEG.is_dir():
        pytest.skip(f"the CIFAR-10 JPEG copy is not at {CIFAR10_JPEG} (it exists only beside this project's "
                    "development checkout)")
    return CIFAR10_JPEG
