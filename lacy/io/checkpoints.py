"""Checkpoints on disk: atomic writes that follow the umask, and safe, explained reads.

Writes go to a hidden temporary file in the same folder, renamed over the target: a run killed mid-save leaves
the previous checkpoint intact, and its temporary file is removed at the next save. Reads use
``torch.load(weights_only=True)`` only (a checkpoint that holds pickled code is refused), and a path that is not a
readable checkpoint gets one line naming its size and the newest readable checkpoint next to it.
"""
import errno
import fcntl
import json
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import torch
from tokenizers import Tokenizer
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from lacy.errors import UsageError
from lacy.io.atomic import atomic_file
from lacy.model.gpt2 import build_slm
from lacy.model.slm import from_model_config

TOKENIZER_KEY = "lacy_tokenizer_files"  # a lacy checkpoint carries its tokenizer's files (lacy.ExportHF puts them in)
MODEL_CONFIG_KEY = "lacy_model_config"  # ... and its SLM's architecture (any family: rebuilt without its source)

# mkstemp(prefix=".<name>-") leaves ".<name>-" + 8 characters of [a-z0-9_]
_TEMP = re.compile(r"^\..+\.ckpt-[a-z0-9_]{8}$")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete temporary checkpoint files left by interrupted saves in ``folder``. A save holds an exclusive
    ``flock`` on its temporary file while writing, so a file whose lock can be taken belongs to no live save."""
    removed = []
    for path in folder.iterdir() if folder.is_dir() else ():
        if not _TEMP.match(path.name) or not path.is_file():
            continue
        try:
            with open(path, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink()
            removed.append(path)
        except OSError:  # locked by a save in progress, or already gone
            continue
    return removed


def _tensor_bytes(obj) -> int:
    """Bytes of the tensors in a checkpoint (its size on disk, about)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        folders = [path.parent]
        if path.parent.name == "checkpoints" and path.parent.parent.name.startswith("version_"):
            # a resume writes version_N+1: the interrupted save's temporary file is in an earlier version's folder
            folders += [f for f in path.parent.parent.parent.glob("version_*/checkpoints") if f != path.parent]
        for stale in (p for folder in folders for p in remove_stale_temp_files(folder)):
            rank_zero_info(f"removed {stale}, left by an interrupted checkpoint save")
        with atomic_file(path, lock=True, fsync=True) as f:
            try:
                torch.save(checkpoint, f)
            except RuntimeError as err:  # PyTorch's zip writer reports a full disk as "... unexpected pos ..."
                needed = _tensor_bytes(checkpoint)
                if shutil.disk_usage(path.parent).free >= needed:
                    raise
                full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
                full.needed = needed  # lacy.errors.write_refused says how much
                raise full from err

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        """Every checkpoint Lightning restores (``--ckpt_path``, ``trainer.fit(ckpt_path=...)``) goes through
        :func:`read_checkpoint`, with ``weights_only=True``; asking for less is refused, not ignored."""
        if weights_only is False:
            raise UsageError("--weights_only false: lacy reads checkpoints only with weights_only=True (a checkpoint "
                             "may carry code); drop the option")
        return read_checkpoint(path, map_location=map_location)


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ModelCheckpoint, whose ``last.ckpt`` also holds the final weights of a fit: Lightning writes it
    only at its intervals (and at the end when none was written), so a 706-step fit kept step 700's weights in
    last.ckpt while the export held step 706's, and ``main.py test --ckpt_path last.ckpt`` scored the older ones.
    Uses two Lightning internals (``_last_global_step_saved``, ``_save_last_checkpoint``): no public hook saves last.

    A ``dirpath`` the user chose (null: the run's own version folder) must be absent, empty or hold only lacy
    checkpoints (``*.ckpt`` a lacy fit wrote, and the hidden temporary files of interrupted saves): a fit never
    writes its checkpoints among a user's files, nor over another project's ``last.ckpt``."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        chosen = self.dirpath  # before Lightning resolves a null one into the run's version folder
        super().setup(trainer, pl_module, stage)
        if stage != "fit" or chosen is None or not Path(chosen).is_dir():
            return
        for entry in sorted(Path(chosen).iterdir()):
            if entry.name.startswith("."):
                continue
            if not (entry.is_file() and entry.suffix == ".ckpt" and _names_the_slm(entry)):
                raise UsageError(f"ModelCheckpoint dirpath={chosen}: holds {entry.name}, which no lacy fit wrote; "
                                 "checkpoints go into a folder of lacy's: give a new or empty folder (or null: the "
                                 "run's own folder)")

    def on_train_end(self, trainer, pl_module) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step and \
                not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


def is_readable(path: Path) -> bool:
    """A torch zip archive with its central directory intact (a truncated or interrupted file has none) and every
    record matching its CRC-32 (a flipped byte in a tensor loads silently otherwise: PyTorch #126952). Reads the
    whole file once (~0.6 GB/s)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.endswith("data.pkl") for name in z.namelist()) and z.testzip() is None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def _names_the_slm(path: Path) -> bool:
    """A checkpoint that carries lacy's SLM architecture or tokenizer: read without its tensors (mmap), so a folder
    of large checkpoints is checked in milliseconds (a resume checks the one it loads end to end)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch archive, or one that needs unsafe unpickling: not lacy's
        return False
    return isinstance(checkpoint, dict) and (MODEL_CONFIG_KEY in checkpoint or TOKENIZER_KEY in checkpoint)


def is_lacys(path: Path) -> bool:
    """A readable checkpoint written by a lacy fit (it carries the SLM's architecture or tokenizer), safe to load."""
    if not (is_readable(path) and loads_safely(path)):
        return False
    return _names_the_slm(path)  # (lacy 0.1: the tokenizer only)


def loads_safely(path: Path) -> bool:
    """``torch.load(weights_only=True)`` accepts it (tensors mapped, not read): a checkpoint worth naming."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return True
    except Exception:  # noqa: BLE001 - any refusal (pickled code, a broken archive) means: do not name it
        return False


def resolve_checkpoint(path: str | Path) -> Path:
    """The ``.ckpt`` file ``path`` names: a file, or a run folder's ``last.ckpt`` (``DIR/last.ckpt`` or
    ``DIR/checkpoints/last.ckpt``). Raises UsageError for a missing, unreadable (truncated) or folder path."""
    path = Path(path)
    if path.is_dir():
        inside = [p for p in (path / "last.ckpt", path / "checkpoints" / "last.ckpt") if p.is_file()]
        if not inside:
            raise UsageError(f"{path} is a folder without last.ckpt; pass a .ckpt file")
        rank_zero_info(f"{path} is a folder: using {inside[0]}")
        path = inside[0]
    if not path.is_file():
        raise UsageError(f"{path}: no such checkpoint; pass a .ckpt file written by `python main.py fit`")
    if not is_readable(path):
        others = sorted((p for p in path.parent.glob("*.ckpt") if p != path and p.is_file()),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        good = next((p for p in others if is_lacys(p)), None)  # a checkpoint of this run's, never another project's
        where = (f"the newest readable lacy checkpoint next to it is {good}" if good
                 else "no readable lacy checkpoint is next to it")
        raise UsageError(f"{path} is not a readable checkpoint ({path.stat().st_size} bytes; truncated, corrupted "
                         f"(a CRC mismatch) or not a checkpoint); {where}")
    return path


def read_checkpoint(path: str | Path, map_location=None, mmap: bool = False) -> dict:
    """Load a checkpoint with ``weights_only=True`` after :func:`resolve_checkpoint`. ``mmap``: map the tensors
    instead of reading them (cheap, for reading hyper-parameters). Raises UsageError for a checkpoint that holds
    anything but tensors and plain values (pickled code), instead of loading it."""
    path = resolve_checkpoint(path)
    try:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise UsageError(f"{path}: refused: it holds Python objects other than tensors and plain values{what}, which "
                         "could run code when loaded; use a checkpoint written by `python main.py fit`") from err


def last_checkpoint(trainer) -> Path:
    """``--ckpt_path last``: the newest ``last.ckpt`` among this run configuration's checkpoint folders: a
    ModelCheckpoint's explicit ``dirpath``, every ``version_*/checkpoints`` under the logger's root, or
    ``<default_root_dir>/checkpoints`` without a logger. Raises UsageError when there is none."""
    folders = [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
    root = getattr(trainer.logger, "root_dir", None) if trainer.logger else None
    if root:
        folders += Path(root).glob("version_*/checkpoints")
    elif trainer.logger is None:
        folders.append(Path(trainer.default_root_dir) / "checkpoints")
    found = [p for folder in folders for p in folder.glob("last*.ckpt") if p.is_file()]
    if not found:
        where = ", ".join(map(str, folders)) or "(no checkpoint folder: the logger has no root_dir)"
        raise UsageError(f"--ckpt_path last: no last.ckpt in {where}; pass the checkpoint's path, or drop "
                         "--ckpt_path to start a new run")
    newest = max(found, key=lambda p: p.stat().st_mtime)
    rank_zero_info(f"--ckpt_path last: resuming from {newest}")
    return newest


def tokenizer_difference(stored: dict[str, bytes], tokenizer) -> str | None:
    """How the tokenizer stored in a checkpoint (``tokenizer.json`` among ``stored``' files) differs from
    ``tokenizer`` (a fast HF tokenizer), or None when they encode text to the same ids."""
    if "tokenizer.json" not in stored:
        return None
    old, new = Tokenizer.from_str(stored["tokenizer.json"].decode()), tokenizer.backend_tokenizer
    a, b = old.get_vocab(with_added_tokens=True), new.get_vocab(with_added_tokens=True)
    if a != b:
        ta, tb = {i: t for t, i in a.items()}, {i: t for t, i in b.items()}
        changed = sum(ta.get(i) != tb.get(i) for i in range(max(len(ta), len(tb))))
        return f"{changed} of {len(tb)} ids stand for other tokens"

    def pipeline(tok) -> dict:
        spec = json.loads(tok.to_str())
        return {k: v for k, v in spec.items() if k not in ("truncation", "padding")}

    return None if pipeline(old) == pipeline(new) else "same vocabulary, but other merges or text normalisation"


def slm_from_checkpoint(checkpoint: dict):
    """The SLM (a ``transformers`` model) a lacy checkpoint holds: its saved architecture (or, in checkpoints of
    lacy 0.1, its GPT-2 preset) and its weights."""
    hp = checkpoint["hyper_parameters"]
    model = (from_model_config(checkpoint[MODEL_CONFIG_KEY]) if MODEL_CONFIG_KEY in checkpoint else
             build_slm(hp.get("preset", "tiny"), hp["vocab_size"], hp["block_size"], hp.get("dropout", 0.0)))
    prefix = "model."
    model.load_state_dict({k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)})
    return model
