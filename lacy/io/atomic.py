"""Every file and folder lacy writes appears whole or not at all: written to a hidden temporary sibling, then renamed.

A run killed mid-write leaves the previous version intact (or nothing), never half a file that a later run reads
as complete. Temporary files follow the umask like ``open`` would (``mkstemp`` makes them 0600).
"""
import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path, directory: bool = False) -> None:
    """Give ``path`` (made by ``mkstemp``/``mkdtemp``: 0600/0700) the mode ``open``/``mkdir`` would have given it."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """``with atomic_path(path) as tmp: write(tmp)``: an empty temporary sibling (``.<name>-XXXXXXXX<suffix>``)
    for a writer that opens files by name (sqlite, a NumPy memmap), renamed over ``path`` when the block ends
    without an exception, removed otherwise."""
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=suffix)
    os.close(fd)
    try:
        with naming(path):
            follow_umask(tmp)
            yield Path(tmp)
            if os.path.exists(tmp):  # else the writer renamed it itself (atomic_file, under its lock)
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """A write error without a file name (the kernel's ENOSPC from ``write``) re-raised with ``path``, so the
    one line a command prints (lacy.errors.write_refused) names what was being written; marked as a write
    (``lacy_write``), so a refused read is never reported as one."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno is not None:
            named = OSError(err.errno, err.strerror, str(path))
            named.lacy_write = True
            raise named from err
        err.lacy_write = True
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path, lock: bool = False, fsync: bool = False, suffix: str = "") -> Iterator:
    """``with atomic_file(path) as f: f.write(...)``: a binary file object on an :func:`atomic_path`, renamed over
    ``path`` when the block ends without an exception, removed otherwise. ``lock``: hold an exclusive ``flock``
    while writing (a cleaner of stale temporary files skips locked ones, and the rename happens under the lock);
    ``fsync``: flush to disk before the rename (checkpoints)."""
    with atomic_path(path, suffix) as tmp, open(tmp, "r+b") as f:
        if lock:
            fcntl.flock(f, fcntl.LOCK_EX)
        yield f
        f.flush()
        if fsync:
            os.fsync(f.fileno())
        os.replace(tmp, path)  # still open (and locked): no cleaner can take the file before it is renamed


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (str: UTF-8) to ``path`` whole or not at all."""
    with atomic_file(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def atomic_dir(final: Path, write: Callable[[Path], None], replace: bool = False) -> Path:
    """Build a folder in a temporary sibling (``write(tmp)``) and rename it into place. A killed run leaves no half
    folder. ``final`` already there: used as is (a concurrent writer that finished first wins), or with
    ``replace`` swapped out for the new one (an export: the caller checked it may be replaced)."""
    if final.exists() and not replace:
        return final
    with naming(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
    try:
        follow_umask(tmp, directory=True)
        with naming(final):
            write(tmp)
        if replace and final.exists():
            # a fresh name for the previous folder: no leftover of an earlier swap can block this one
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-old-"))
            os.rename(final, old)  # over the empty folder just made
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except OSError:
        if replace or not final.exists():  # a real failure, not a concurrent writer that finished first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
