"""Folders lacy owns: a marker file lists what lacy wrote there, so lacy replaces only its own output.

An export (``lacy_export.json``) or a world folder (``lacy_world.json``) is replaced only when it is absent, empty,
or holds just the files its marker lists; anything else is refused with one line, never deleted.
"""
import json
from pathlib import Path

from lacy.errors import UsageError

MARKER = "lacy_export.json"


def _marker_files(folder: Path, marker_name: str = MARKER) -> set[str] | None:
    """The files a lacy folder's marker lists, or None when ``folder`` holds no readable lacy marker."""
    try:
        marker = json.loads((folder / marker_name).read_text())
        return set(marker["files"]) if marker.get("written_by") == "lacy" else None
    except (OSError, ValueError, KeyError, TypeError):
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
    listed = _marker_files(out_dir, marker)
    if listed is None:
        raise UsageError(f"{out_dir}: exists and was not written by lacy (no {marker}); refusing to replace it: "
                         "choose a new or empty folder, or move it away yourself")
    foreign = sorted(present - listed - {marker})
    if foreign:
        raise UsageError(f"{out_dir}: holds files lacy did not write ({', '.join(foreign[:5])}); refusing to replace "
                         "it: move them out, or choose a new folder")


def write_marker(folder: Path, files: list[str], marker: str = MARKER) -> None:
    (folder / marker).write_text(json.dumps({"written_by": "lacy", "files": sorted(files)}, indent=1) + "\n")
