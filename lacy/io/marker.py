"""Folders lacy owns: a marker file lists what lacy wrote there, so lacy replaces only its own output.

An export (``lacy_export.json``) or a world folder (``lacy_world.json``) is replaced only when it is absent, empty,
or holds just the files its marker lists, each as lacy wrote it (the marker keeps their SHA-256: a file edited
since, e.g. a world's kb.json, is the user's now); anything else is refused with one line, never deleted.
"""
import hashlib
import json
from pathlib import Path

from lacy.errors import UsageError
from lacy.io.atomic import write_atomic

MARKER = "lacy_export.json"


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
        return {"files": set(marker["files"]), "sha256": dict(marker.get("sha256") or {})}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def check_replaceable(out_dir: Path, marker: str = MARKER) -> None:
    """Raise UsageError unless ``out_dir`` is absent, an empty folder, or a folder lacy wrote (its ``marker`` file
    lists what it wrote: an export's, or a world folder's) holding only those files."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise UsageError(f"{out_dir}: exists and is not a folder; choose a new folder for the export")
    present = {p.name for p in out_dir.iterdir()}
    if not present:
        return
    found = read_marker(out_dir, marker)
    if found is None:
        raise UsageError(f"{out_dir}: exists and was not written by lacy (no {marker}); refusing to replace it: "
                         "choose a new or empty folder, or move it away yourself")
    foreign = sorted(present - found["files"] - {marker})
    if foreign:
        raise UsageError(f"{out_dir}: holds files lacy did not write ({', '.join(foreign[:5])}); refusing to replace "
                         "it: move them out, or choose a new folder")
    edited = sorted(name for name, digest in found["sha256"].items()
                    if (out_dir / name).is_file() and file_digest(out_dir / name) != digest)
    if edited:
        raise UsageError(f"{out_dir}: {', '.join(edited[:5])} changed after lacy wrote it; refusing to replace an "
                         "edited file: copy it elsewhere (or undo the edit), or choose a new folder")


def write_marker(folder: Path, files: list[str], marker: str = MARKER, complete: bool = True) -> None:
    """The marker listing ``files``; ``complete``: with the SHA-256 of each (write it first with ``complete``
    off, so an interrupted write is recognisably lacy's and holds no digest of a file about to be replaced)."""
    digests = {name: file_digest(folder / name) for name in sorted(files) if complete and (folder / name).is_file()}
    write_atomic(folder / marker, json.dumps({"written_by": "lacy", "files": sorted(files), "sha256": digests},
                                             indent=1) + "\n")
