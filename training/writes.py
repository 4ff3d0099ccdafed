"""Writes that fail in one line: a full disk (or any other write failure) becomes a ``WriteFailed``
naming the path and the space the write needs, and whatever the failed write left half-done
(a temporary file, a checkpoint's ``*_temp`` folder) is removed.

Free space is checked *before* each large write rather than trusting every library to fail
cleanly: TensorFlow's checkpoint writer raises ResourceExhaustedError and leaves its temporary
folder behind, and HDF5 has crashed the process outright on ENOSPC. After a failure nothing
claims the write happened (the training loop logs an epoch only after its checkpoint), so freeing
space and giving the same command resumes from the last good checkpoint.
"""
from __future__ import annotations

import contextlib
import errno
import shutil
from pathlib import Path

MARGIN_BYTES = 1 << 20  # room left for the small writes (logs, events) that follow a large one


class WriteFailed(ValueError):
    """A write could not be made (no space, a read-only or vanished file system); one line."""


def megabytes(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:.0f} kB"


def free_bytes(path: Path) -> int:
    """Free bytes on the file system of ``path`` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _resume_hint(hint: str) -> str:
    return hint or "free space and give the same command to go on from what was saved"


def require_space(path: Path, nbytes: int, what: str, hint: str = "") -> None:
    """Raises WriteFailed unless ``path``'s file system has ``nbytes`` plus a margin free."""
    free = free_bytes(path)
    if free < nbytes + MARGIN_BYTES:
        raise WriteFailed(f"not enough space to write {what} at {path}: it needs about {megabytes(nbytes + MARGIN_BYTES)}, "
                          f"{megabytes(free)} free; {_resume_hint(hint)}")


def is_write_failure(err: BaseException) -> bool:
    """An OSError, or TensorFlow's error for a failed file write (ResourceExhaustedError for a full
    disk, and the others its file system layer raises), recognised without importing TensorFlow."""
    if isinstance(err, OSError):
        return True
    name = type(err).__name__
    text = str(err)
    return name == "ResourceExhaustedError" or ("No space left on device" in text) or (
        name in ("PermissionDeniedError", "FailedPreconditionError", "UnavailableError", "DataLossError")
        and any(word in text for word in ("write", "Write", "file", "File")))


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC or "No space left on device" in str(err) \
            or type(err).__name__ == "ResourceExhaustedError":
        return "no space left on device"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__


@contextlib.contextmanager
def guarded(path: Path, what: str, nbytes: int = 0, leftovers=(), hint: str = ""):
    """Runs a write of ``what`` to ``path``: first checks that ``nbytes`` fit, then turns a write
    failure into a WriteFailed and removes ``leftovers`` (paths or a callable returning them)."""
    if nbytes:
        require_space(path, nbytes, what, hint)
    try:
        yield
    except Exception as err:
        if not is_write_failure(err):
            raise
        remove(leftovers() if callable(leftovers) else leftovers)
        need = f"; the write needs about {megabytes(nbytes + MARGIN_BYTES)}" if nbytes else ""
        raise WriteFailed(f"could not write {what} at {path} ({_reason(err)}{need}, "
                          f"{megabytes(free_bytes(path))} free): {_resume_hint(hint)}") from None


def remove(paths) -> None:
    """Removes files and folders left by a failed write (quietly: they may not exist)."""
    for leftover in paths:
        leftover = Path(leftover)
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str, what: str, hint: str = "") -> None:
    """``text`` to a temporary file beside ``path``, then renamed over it: a reader never sees half,
    and a failure leaves neither half a file nor the temporary one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    data = text.encode("utf-8")
    with guarded(path, what, len(data), leftovers=[tmp], hint=hint):
        tmp.write_bytes(data)
        tmp.replace(path)
