"""Finding the checkpoint to resume from: the newest *readable* one in the folder, whatever the
folder's ``checkpoint`` index file says.

TensorFlow's ``latest_checkpoint`` trusts the index file, which still names a checkpoint a user
moved out by hand (and a half-written one after a crash). Here the folder's ``ckpt-N.index``
files are the truth: each candidate, newest first, is read tensor by tensor before anything is
restored from it, so that a truncated file is skipped instead of half-restored. Unreadable
checkpoints are moved into ``unreadable/`` (never deleted) and the index file is rewritten to
list what is left, so the CheckpointManager that saves next sees a consistent folder.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import tensorflow as tf

from training import writes

_INDEX = re.compile(r"^(?P<prefix>.+)-(?P<step>\d+)\.index$")
UNREADABLE_DIR = "unreadable"


def candidates(folder: Path) -> list[tuple[int, str]]:
    """(step, checkpoint path) of every checkpoint in ``folder``, newest first."""
    found = []
    for index in Path(folder).glob("*.index"):
        match = _INDEX.match(index.name)
        if match:
            found.append((int(match["step"]), str(index.with_suffix(""))))
    return sorted(found, reverse=True)


def unreadable_reason(path: str) -> str | None:
    """None when every tensor of the checkpoint at ``path`` reads; else why not (one phrase)."""
    try:
        reader = tf.train.load_checkpoint(path)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except Exception as err:  # TF raises many types for truncated or foreign files
        return type(err).__name__
    return None


def set_aside(folder: Path, path: str) -> Path:
    """Moves every file of the checkpoint at ``path`` into ``folder/unreadable/``; returns where."""
    target = Path(folder) / UNREADABLE_DIR
    target.mkdir(exist_ok=True)
    for file in Path(folder).glob(Path(path).name + ".*"):
        destination = target / file.name
        if destination.exists():
            destination = target / f"{file.name}.{time.strftime('%Y%m%d-%H%M%S')}"
        file.rename(destination)
    return target


def rewrite_index(folder: Path) -> None:
    """The folder's ``checkpoint`` index file (the text format CheckpointManager reads), listing the
    checkpoints that are there, oldest first, by names relative to the folder as the manager writes them."""
    present = [Path(path).name for _, path in reversed(candidates(folder))]
    index = Path(folder) / "checkpoint"
    if not present:
        index.unlink(missing_ok=True)
        return
    lines = [f'model_checkpoint_path: "{present[-1]}"'] + [f'all_model_checkpoint_paths: "{p}"' for p in present]
    writes.atomic_write_text(index, "\n".join(lines) + "\n", "the checkpoint index")


def newest_readable(folder: Path, say) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest readable checkpoint in ``folder`` (None if there is none) and the unreadable
    ones newer than it, (path, reason) each, which are set aside and said in one line each."""
    skipped = []
    for _, path in candidates(folder):
        reason = unreadable_reason(path)
        if reason is None:
            return path, skipped
        moved = set_aside(folder, path)
        skipped.append((path, reason))
        say(f"checkpoint {path} is unreadable ({reason}): moved to {moved}, trying the one before it")
    return None, skipped
