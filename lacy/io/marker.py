"""Folders lacy owns: a marker file lists what lacy wrote there, so lacy replaces only its own output.

An export (``lacy_export.json``) or a world folder (``lacy_world.json``) is replaced only when it is absent, empty,
or holds just the files its marker lists, each as lacy wrote it (the marker keeps their SHA-256: a file edited
since, e.g. a world's kb.json, is the user's now); anything else is refused with one line, never deleted.

A cache folder (``data.cache_dir``) is lacy's when it holds ``lacy_cache.json`` (:func:`own_cache`): a folder of
the user's is refused before anything is written into it.

A single output file (an evaluation report, a plot, a measurement cached next to a model) may land in a folder
lacy shares with the user (the working directory, a folder named by an ``out`` option): :func:`write_output`
records it in that folder's ``lacy_outputs.json`` (or in the folder's own marker, an export's), and
:func:`check_output` lets lacy replace only a file so recorded and unchanged since.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import re
import sqlite3
from pathlib import Path

from lacy.errors import UsageError
from lacy.io.atomic import write_atomic

MARKER = "lacy_export.json"
OUTPUTS = "lacy_outputs.json"  # single files lacy wrote into a folder it shares
CACHE = "lacy_cache.json"
# what an unmarked cache of an earlier lacy holds: hashed folders, the digest memo, models, the GPT-2 files, the
# judge's answers and the summaries' index (sqlite files and their journals), and the hidden temporary siblings
# of any of them (lacy.io.atomic: ".<name>-XXXXXXXX", ".<name>-old-XXXXXXXX")
_CACHED = r"[0-9a-f]{16}|digests\.jsonl|models|gpt2|[\w.-]+\.sqlite"
_CACHE_ENTRY = re.compile(rf"(?:{_CACHED})(?:-journal|-wal|-shm)?|\.(?:{_CACHED})-(?:old-)?[a-z0-9_]{{8}}(?:\.sqlite)?")


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_marker(folder: Path, marker_name: str = MARKER) -> dict | None:
    """A lacy folder's marker ({"files": [...], "sha256": {name: digest}}), or None when ``folder`` holds no
    readable lacy marker. Markers written before the digests have none (their files are not checked)."""
    try:
        marker = json.loads((folder / marker_name).read_text())
        if marker.get("written_by") != "lacy":
            return None
        return {"files": set(marker["files"]), "sha256": dict(marker.get("sha256") or {}),
                "pending": dict(marker.get("pending") or {})}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def check_replaceable(out_dir: Path, marker: str = MARKER) -> None:
    """Raise UsageError unless ``out_dir`` is absent, an empty folder, or a folder lacy wrote (its ``marker`` file
    lists what it wrote: an export's, or a world folder's) holding only those files."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise UsageError(f"{out_dir}: exists and is not a folder; choose a new folder")
    present = {p.name for p in out_dir.iterdir()}
    if not present:
        return
    found = read_marker(out_dir, marker)
    if found is None:
        raise UsageError(f"{out_dir}: exists and was not written by lacy (no {marker}); refusing to replace it: "
                         "choose a new or empty folder, or move it away yourself")
    listed = found["files"] | {marker}
    foreign = sorted(name for name in present - listed if not _leftover(name, listed))
    if foreign:
        raise UsageError(f"{out_dir}: holds files lacy did not write ({', '.join(foreign[:5])}); refusing to replace "
                         "it: move them out, or choose a new folder")
    edited = sorted(name for name, digest in found["sha256"].items() if (out_dir / name).is_file()
                    and file_digest(out_dir / name) not in (digest, found["pending"].get(name)))
    if edited:
        raise UsageError(f"{out_dir}: {', '.join(edited[:5])} changed after lacy wrote it; refusing to replace an "
                         "edited file: copy it elsewhere (or undo the edit), or choose a new folder")


def _leftover(name: str, listed: set[str]) -> bool:
    """A hidden temporary sibling (lacy.io.atomic: ``.<name>-XXXXXXXX``) of a listed file, left by a killed write."""
    return any(re.fullmatch(rf"\.{re.escape(n)}-[a-z0-9_]{{8}}", name) for n in listed)


def write_marker(folder: Path, files: list[str], marker: str = MARKER, complete: bool = True) -> None:
    """The marker listing ``files``; ``complete``: with the SHA-256 of each (write it first with ``complete``
    off, so an interrupted write is recognisably lacy's and holds no digest of a file about to be replaced)."""
    digests = {name: file_digest(folder / name) for name in sorted(files) if complete and (folder / name).is_file()}
    write_atomic(folder / marker, json.dumps({"written_by": "lacy", "files": sorted(files), "sha256": digests},
                                             indent=1) + "\n")


def own_cache(folder: str | Path, option: str = "data.cache_dir") -> Path:
    """Check that ``folder`` may hold lacy's cache, marking it on first use: absent or empty (created and marked),
    marked (``lacy_cache.json``), or the cache of an earlier lacy (only names lacy gives there: marked now).
    Anything else is the user's folder: UsageError naming ``option``, before any file is written into it."""
    folder = Path(folder)
    if (folder / CACHE).is_file():
        return folder
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option}={folder}: exists and is not a folder; give a folder for lacy's cache")
    foreign = sorted(p.name for p in folder.iterdir() if not _cached_by_lacy(p)) if folder.is_dir() else []
    if foreign:
        raise UsageError(f"{option}={folder}: holds files lacy did not write ({', '.join(foreign[:5])}); lacy keeps "
                         "its cache in a folder of its own: give a new or empty folder (the default is .cache/lacy)")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        write_marker(folder, [], CACHE)
    except OSError:  # a read-only cache of lacy's is still read; a write lacy needs there names the folder itself
        if not any(folder.iterdir()):
            raise
    return folder


def _cached_by_lacy(entry: Path) -> bool:
    """An entry of an unmarked cache folder that an earlier lacy wrote: a name lacy gives there and, where a user
    could have a file of that name, lacy's content (the digest memo's records, the judge's or the summaries'
    sqlite tables, models under hashed folders)."""
    if not _CACHE_ENTRY.fullmatch(entry.name):
        return False
    if entry.name == "digests.jsonl":
        try:
            rows = [json.loads(line) for line in entry.read_text().splitlines() if line.strip()]
        except (OSError, ValueError):
            return False
        return all(isinstance(r, dict) and {"key", "digest", "docs"} <= r.keys() for r in rows)
    if entry.name.endswith(".sqlite"):
        try:
            db = sqlite3.connect(f"file:{entry}?mode=ro", uri=True)
            try:
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                db.close()
        except sqlite3.Error:
            return False
        return all(t in ("answers", "documents") or t.startswith("passages") for t in tables)
    if entry.name == "models":
        return entry.is_dir() and all(re.fullmatch(r"\.?[0-9a-f]{16}(-.+)?", m.name) for m in entry.iterdir())
    return True


def _output_marker(folder: Path) -> str:
    """The marker that records files written into ``folder``: an export's own when it is one, else OUTPUTS."""
    return MARKER if read_marker(folder, MARKER) is not None else OUTPUTS


def check_output(path: str | Path, option: str) -> None:
    """Raise UsageError unless ``path`` is absent or a file lacy wrote there (:func:`write_output`) that is unchanged
    since. Call it before the work whose result goes there; ``option`` names what sets the path."""
    path = Path(path)
    _refuse_foreign_marker(path.parent)
    if not path.exists() and not path.is_symlink():
        return
    found = read_marker(path.parent, _output_marker(path.parent))
    known = () if found is None else (found["sha256"].get(path.name), found["pending"].get(path.name))
    if path.is_symlink() or not path.is_file() or not any(known):
        raise UsageError(f"{path}: exists and was not written by lacy; refusing to replace it: set {option} to "
                         "another path, or move the file away yourself")
    if file_digest(path) not in known:  # the recorded digest, or the one of a write killed before it was recorded
        raise UsageError(f"{path}: changed after lacy wrote it; refusing to replace an edited file: copy it "
                         f"elsewhere, or set {option} to another path")


@contextlib.contextmanager
def _locked(folder: Path):
    """An exclusive ``flock`` on the folder itself (no lock file is left in a folder whose contents are checked)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_output(path: str | Path, data: str | bytes, option: str) -> Path:
    """Write ``data`` to ``path`` whole (checked by :func:`check_output` first) and record its SHA-256 in the
    folder's marker, under a lock (two processes recording files in one folder keep both). The new digest is
    recorded as pending before the write and as the file's after it, so a write killed in between leaves a file
    the next run still knows as lacy's."""
    path = Path(path)
    check_output(path, option)
    blob = data.encode("utf-8") if isinstance(data, str) else data
    digest = hashlib.sha256(blob).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    name = _output_marker(path.parent)
    _record(path, name, digest, pending=True)
    write_atomic(path, blob)
    _record(path, name, digest, pending=False)
    return path


def _refuse_foreign_marker(folder: Path) -> None:
    """A file named like lacy's record of outputs that lacy did not write is the user's: never replaced."""
    if (folder / OUTPUTS).exists() and read_marker(folder, OUTPUTS) is None and read_marker(folder, MARKER) is None:
        raise UsageError(f"{folder / OUTPUTS}: a file lacy did not write, where lacy keeps the record of its outputs "
                         "in this folder; move it away, or have lacy write into another folder")


def _record(path: Path, marker: str, digest: str, pending: bool) -> None:
    with _locked(path.parent):
        _refuse_foreign_marker(path.parent)
        found = read_marker(path.parent, marker) or {"files": set(), "sha256": {}, "pending": {}}
        found["files"].add(path.name)
        if pending:
            found["pending"][path.name] = digest
        else:
            found["sha256"][path.name] = digest
            found["pending"].pop(path.name, None)
        body = {"written_by": "lacy", "files": sorted(found["files"]), "sha256": dict(sorted(found["sha256"].items()))}
        if found["pending"]:
            body["pending"] = dict(sorted(found["pending"].items()))
        write_atomic(path.parent / marker, json.dumps(body, indent=1) + "\n")
