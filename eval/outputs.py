"""Where evaluation and report results go: checked writable before any attack runs, and an
earlier result made from other runs or settings moved aside (``<dir>.replaced-<time>``, never
deleted), so that a results.md never sits beside another evaluation's plots."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from training.rundir import RunDirError, move_aside


class OutputDirError(RunDirError):
    """An output folder that cannot be written; the message is one line with the fix."""


def check_writable(path: Path, flag: str) -> None:
    """Raises OutputDirError unless ``path`` is, or can be made as, a writable folder.

    Probes by creating a file (then removing it) in ``path`` or its nearest existing parent:
    permission bits say nothing for root, and a read-only file system ignores them."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputDirError(f"{flag} {path} cannot be a folder: {existing} is a file; choose another {flag}")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise OutputDirError(f"{flag} {path} is not writable ({existing}: {err.strerror or type(err).__name__}): "
                             f"choose another {flag}, or make {existing} writable") from None


def differs_from_earlier(out_dir: Path, record_file: str, inputs: dict, marker_files: tuple[str, ...]) -> bool:
    """Whether ``out_dir`` holds an earlier result (one of ``marker_files``) that was not made from
    ``inputs``: its ``record_file``'s ``protocol.inputs`` differ, or cannot be read. A folder
    holding none of the marker files is not an earlier result, and is written into as it is."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir() or not any((out_dir / name).exists() for name in marker_files):
        return False
    try:
        previous = json.loads((out_dir / record_file).read_text())["protocol"]["inputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return json.loads(json.dumps(inputs, default=str)) != previous


def prepare(out_dir: Path, flag: str, record_file: str, inputs: dict, marker_files: tuple[str, ...]):
    """Checks, reading only, that results can be written to ``out_dir`` (and, when an earlier
    result there must be moved aside, that its parent is writable). Returns a function that
    moves the earlier result aside if needed, to be called just before the first file is
    written; it returns where the result went, or None."""
    out_dir = Path(out_dir)
    check_writable(out_dir, flag)
    replace = differs_from_earlier(out_dir, record_file, inputs, marker_files)
    if replace:
        check_writable(out_dir.resolve().parent, f"the parent of {flag}")

    def set_aside() -> Path | None:
        return move_aside(out_dir) if replace else None

    return set_aside
