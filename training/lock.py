"""One writer per directory: an OS file lock that training and evaluation hold while they write.

The lock is ``fcntl.flock`` on ``<dir>/.lock``: the kernel releases it when the process ends,
however it ends (``kill -9``, a node's power), so a lock left by a dead process never blocks
anyone, and the file left behind means nothing by itself. The holder writes its PID and host
into the file, so that a second process can say who holds it. On a network file system the lock
is as good as the file system's ``flock`` (NFS v4 and Lustre with ``flock`` mounts honour it).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

LOCK_FILE = ".lock"


class LockFailed(ValueError):
    """The lock file cannot be made (a read-only place, a file where the folder should be)."""


class DirectoryLocked(ValueError):
    """Another live process holds the directory's lock; the message names its PID and host."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder


@contextlib.contextmanager
def hold(folder: Path, role: str, fix: str):
    """Holds ``folder``'s lock for the block (creating ``folder`` if needed); raises DirectoryLocked,
    naming ``role`` (e.g. "--run_dir runs/x") and ``fix``, when another process holds it.

    A folder created here and left empty (the caller refused to start) is removed again."""
    folder = Path(folder)
    created = not folder.exists()
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise LockFailed(f"{role} cannot be locked ({path}: {err.strerror or type(err).__name__}): choose a "
                         "writable place") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise DirectoryLocked(f"{role} is in use by {holder}: {fix}", holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
        if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()


def holder(folder: Path) -> str | None:
    """Who holds ``folder``'s lock now ("PID n on host h"), or None when nobody does."""
    path = Path(folder) / LOCK_FILE
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
