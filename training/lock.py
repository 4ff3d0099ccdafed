"""One writer per directory: an OS file lock that training and evaluation hold while they write.

The lock is ``fcntl.flock`` on ``<dir>/.lock``. The holder writes its PID and host into the file,
so that a second process can say who holds it; the file left behind means nothing by itself.
What the lock guarantees depends on the file system (docs/training.md, "One writer per run
directory"):

- a local disk: exclusive among this machine's processes, and released by the kernel when its
  process ends, however it ends (``kill -9``, the OOM killer; a power cut ends them all);
- NFS: Linux emulates ``flock`` with NFS byte-range locks, exclusive across clients. A client
  that dies holding one leaves it held until the server lets it go: on NFS v4 when the client's
  lease expires (90 s by default), on v3 only when the client comes back up (or an administrator
  clears it). Mounted with ``local_lock=flock`` or ``nolock`` it excludes this client's processes only;
- Lustre: exclusive across clients with the ``flock`` mount option (a dead client's lock goes when
  the servers evict it, within minutes); ``localflock`` excludes one client's processes only; with
  neither, ``flock`` fails with ENOSYS.

A file system without ``flock`` (ENOLCK: NFS v3 without its lock daemons; ENOSYS, EOPNOTSUPP:
Lustre without ``flock``, some FUSE file systems) is one line (``LockFailed``) naming it and the fix.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from pathlib import Path

LOCK_FILE = ".lock"
# flock's errors on a file system that has no flock (ENOTSUP is EOPNOTSUPP on Linux).
NO_FLOCK = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})


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
        except OSError as err:
            if err.errno not in NO_FLOCK:
                raise
            raise LockFailed(no_flock(role, folder, err)) from None
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
        except OSError as err:
            if err.errno not in NO_FLOCK:
                raise
            return None  # no flock there: nobody can be said to hold it
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def no_flock(role: str, folder: Path, err: OSError) -> str:
    """The one line for a file system without ``flock``: which one, and what to do."""
    kind, mount = file_system(folder)
    return (f"{role} cannot be locked: its file system ({kind} mounted at {mount}) does not support flock "
            f"({err.strerror or errno.errorcode.get(err.errno, err.errno)}): remount it with locking (NFS: v4, or "
            f"v3 with rpc.statd running; Lustre: -o flock) or choose a directory on a local disk")


def file_system(path: Path) -> tuple[str, str]:
    """(type, mount point) of the file system holding ``path``, from /proc/self/mounts (Linux);
    ("unknown", "?") where that cannot be read."""
    real = os.path.realpath(path)
    best = ("unknown", "?")
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and (best[1] == "?" or len(mount) >= len(best[1])):
                    best = (fields[2], mount)
    except OSError:
        pass
    return best


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (another user's process counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
