"""One clear line for every bad input: lacy's own errors and how each entry point reports them.

A ``UsageError`` is something the person running lacy can fix (a bad config, file, option or checkpoint, a
missing package). Its message is one line that names the file or option and says the fix. Every entry point
(``main.py``, ``python -m lacy.annotate|export|evaluate|world|nlu``) runs inside :func:`entry_point`, which
prints that line as ``lacy: error: <message>`` and exits with status 2. ``LACY_TRACEBACK=1`` in the
environment (or ``--traceback`` on the command line) shows the full traceback instead.

Raise ``UsageError`` as early as possible: before any long work (annotation, training, a test loop). A write
the machine refuses (a full disk, a read-only folder) is reported the same way (:func:`write_refused`).
"""
import argparse
import errno
import os
import shutil
import sys
from collections.abc import Callable

EXIT_USAGE = 2
TRACEBACK_ENV = "LACY_TRACEBACK"
TRACEBACK_FLAG = "--traceback"


class UsageError(ValueError):
    """An error the user can act on; ``str(err)`` is the one line shown (path or option, then the fix).
    A ``ValueError`` (a bad value was given), so callers that catch those keep working."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse for lacy's commands: a bad or missing option is a :class:`UsageError` (one line, exit 2), not
    argparse's usage dump."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}; see {self.prog} --help")


# Lightning's own name for a configuration a user can fix (e.g. a LearningRateMonitor without a logger)
_LIBRARY_USAGE = ("MisconfigurationException",)
# the machine, not the input: a write that the disk or the folder refuses (lacy's writers leave nothing
# half-written: they write a temporary sibling and rename it, removed on failure)
_WRITE_REFUSED = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                  errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                  errno.EPERM: "permission denied"}


def write_refused(err: OSError) -> UsageError | None:
    """One line for an OSError of a refused write (full disk, quota, read-only or forbidden folder) that names
    the file, its folder's free space and the fix; None for any other OSError."""
    if err.errno not in _WRITE_REFUSED or not err.filename:
        return None
    if err.errno in (errno.EACCES, errno.EPERM) and not getattr(err, "lacy_write", False):
        return None  # a refused read (an unreadable corpus or checkpoint) is not a refused write
    path = os.path.abspath(os.fsdecode(err.filename))
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    size = lambda n: f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
    try:
        free = f"; {size(shutil.disk_usage(folder).free)} free there"
    except OSError:
        free = ""
    needed = f", {size(err.needed)} needed" if getattr(err, "needed", None) else ""
    return UsageError(f"{path}: lacy could not write it: {_WRITE_REFUSED[err.errno]}{free}{needed}; nothing half-"
                      "written was kept: free space or make the folder writable (or point the option at another "
                      "folder: data.cache_dir, trainer.default_root_dir, --out), then run again: finished work is kept")


def want_traceback(argv: list[str] | None = None) -> bool:
    argv = sys.argv if argv is None else argv
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0") or TRACEBACK_FLAG in argv


def entry_point(main: Callable[[], object]) -> Callable[[], None]:
    """Wrap a command's ``main()``: a :class:`UsageError` (also one raised inside a library, found through the
    exception chain) becomes one line on stderr and exit status 2, unless a traceback was asked for."""

    def run() -> None:
        show = want_traceback()
        if TRACEBACK_FLAG in sys.argv:
            sys.argv.remove(TRACEBACK_FLAG)
        try:
            main()
        except BaseException as err:  # noqa: BLE001 - a UsageError may arrive wrapped by a library
            usage = find_usage_error(err)
            if usage is None or show:
                raise
            line = " ".join(str(usage).split())  # one line, also for a library's multi-line message inside
            close_progress_bars()
            print(f"lacy: error: {line} (traceback: {TRACEBACK_ENV}=1)", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None

    return run


def close_progress_bars() -> None:
    """Close every open tqdm bar (ours or a library's), so a message printed next starts on its own line: an
    unclosed bar leaves the cursor right after itself."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def find_usage_error(err: BaseException | None) -> UsageError | None:
    """The first ``UsageError`` in ``err``'s cause/context chain (jsonargparse and Lightning wrap errors); a
    library's configuration error (Lightning's ``MisconfigurationException``) counts as one."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UsageError):
            return err
        if type(err).__name__ in _LIBRARY_USAGE:
            return UsageError(str(err))
        if isinstance(err, OSError) and (refused := write_refused(err)) is not None:
            return refused
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
