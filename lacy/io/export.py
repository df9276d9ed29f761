"""Export to a plain Hugging Face folder: ``AutoModelForCausalLM`` + ``AutoTokenizer``, ``<CALL>`` intact.

The tokenizer travels inside every checkpoint (a few hundred KB), so any checkpoint can be exported
later without the corpus: ``python -m lacy.export CKPT OUT_DIR``.

Two forms (issue 18):
- with ``<CALL>`` (default): the model as trained. p(``<CALL>``) is ~0.96-0.999 everywhere (the objective never
  trains it down), so ``generation_config.json`` suppresses ``<CALL>`` and plain ``generate()`` writes the SLM's
  own text, p_noCALL. ``model.generate(..., suppress_tokens=[])`` lets ``<CALL>`` through again.
- ``--no-call``: a standard GPT-2 folder and tokenizer without the ``<CALL>`` row, whose next-token distribution
  is exactly p_noCALL (the softmax over the other logits): what lm-eval, vLLM or llama.cpp should see.

An export only ever replaces a folder lacy wrote: each export holds a marker (``lacy_export.json``, listing its
files); an existing folder without it, or with files it does not list, is refused, never deleted. An empty
folder is used as is.
"""
import copy
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import lightning as L
from transformers import AutoTokenizer
from lightning.pytorch.utilities import rank_zero_warn

from lacy.data.tokenizer import check_call_token, load_tokenizer
from lacy.errors import UsageError
from lacy.io.atomic import atomic_dir, follow_umask
from lacy.io.checkpoints import TOKENIZER_KEY, read_checkpoint, slm_from_checkpoint
from lacy.io.marker import MARKER, check_replaceable, write_marker
from lacy.model.call_token import CALL_TOKEN, call_id

def tokenizer_files(tokenizer) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def _remove_leftovers(out_dir: Path) -> None:
    """Hidden siblings left by an interrupted export to ``out_dir`` (marked as lacy's own): removed."""
    pattern = re.compile(rf"^\.{re.escape(out_dir.name)}-(old-)?[a-z0-9_]{{8}}$")
    for p in out_dir.parent.iterdir():
        if pattern.match(p.name) and p.is_dir() and not p.is_symlink() and (p / MARKER).is_file():
            shutil.rmtree(p, ignore_errors=True)


def without_call(model, files: dict[str, bytes]):
    """The no-``<CALL>`` form of a model and its tokenizer files: the last (``<CALL>``) row of the tied
    embedding / LM head dropped, and ``<CALL>`` removed from the tokenizer. Its logits are the original
    logits[..., :-1], so its softmax is p_noCALL exactly. Returns (model copy, files); the inputs are untouched."""
    call_row = call_id(model.config.vocab_size)
    files = dict(files)
    tok_json = json.loads(files["tokenizer.json"])
    added = [t for t in tok_json["added_tokens"] if t["content"] == CALL_TOKEN]
    if [t["id"] for t in added] != [call_row]:
        raise ValueError(f"the tokenizer's {CALL_TOKEN} is not the model's last row ({call_row}); nothing to remove")
    tok_json["added_tokens"] = [t for t in tok_json["added_tokens"] if t["content"] != CALL_TOKEN]
    files["tokenizer.json"] = json.dumps(tok_json, ensure_ascii=False).encode()
    if "tokenizer_config.json" in files:
        config = json.loads(files["tokenizer_config.json"])
        for key in ("extra_special_tokens", "additional_special_tokens"):
            if isinstance(config.get(key), list):
                config[key] = [t for t in config[key] if t != CALL_TOKEN]
        config.get("added_tokens_decoder", {}).pop(str(call_row), None)
        files["tokenizer_config.json"] = json.dumps(config, indent=2, ensure_ascii=False).encode()
    model = copy.deepcopy(model)
    model.resize_token_embeddings(call_row, mean_resizing=False)  # keeps rows 0..call_row-1; the head stays tied
    return model, files


def _generation_config(model, tokenizer, call_id: int | None):
    """Plain ``generate()`` settings: stop at the end-of-text token; never write ``<CALL>`` (``call_id``)."""
    gen = copy.deepcopy(model.generation_config)
    gen.eos_token_id = gen.pad_token_id = tokenizer.eos_token_id
    gen.suppress_tokens = None if call_id is None else [call_id]
    gen._from_model_config = False  # ours, not derived from config.json: kept as written
    return gen


def export_hf(model, files: dict[str, bytes], out_dir: str | Path, call: bool = True) -> Path:
    """Write model + tokenizer (``files``: name -> bytes) to ``out_dir`` atomically (a temp sibling renamed).

    ``call=False`` writes the no-``<CALL>`` form (:func:`without_call`); the default keeps ``<CALL>`` and
    suppresses it in ``generation_config.json``. Raises UsageError, before writing anything, when ``out_dir`` is
    not replaceable (see the module docstring).
    """
    out_dir = Path(os.path.abspath(out_dir))  # "." has no parent to swap it in; symlinks are not followed
    check_replaceable(out_dir)
    if not call:
        model, files = without_call(model, files)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)

    def write(tmp: Path) -> None:
        write_marker(tmp, [], complete=False)  # first, so an interrupted export's leftover is recognisably lacy's
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        tokenizer = _check_tokenizer(tmp, call, out_dir)
        if len(tokenizer) != model.config.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} ids but the model {model.config.vocab_size} rows")
        model.save_pretrained(tmp)
        _generation_config(model, tokenizer, len(tokenizer) - 1 if call else None).save_pretrained(tmp)
        write_marker(tmp, [p.name for p in tmp.iterdir() if p.name != MARKER])
        for p in tmp.iterdir():  # some writers (safetensors via transformers) create 0600 files
            follow_umask(p, directory=p.is_dir())

    return atomic_dir(out_dir, write, replace=True)


def _check_tokenizer(folder: Path, call: bool, out_dir: Path):
    if call:
        tokenizer = load_tokenizer(folder)
        check_call_token(tokenizer, f"tokenizer exported to {out_dir}")
        return tokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if CALL_TOKEN in tokenizer.get_vocab():
        raise ValueError(f"the no-call tokenizer exported to {out_dir} still has {CALL_TOKEN}")
    return tokenizer


class ExportHF(L.Callback):
    """Puts the tokenizer into every checkpoint and keeps an export of the latest one next to the run's checkpoints.

    The export failing (a full disk, a folder lacy did not write appearing) is a warning: the checkpoint is still
    written and can be exported later with ``python -m lacy.export``.

    Args:
        dirpath: export folder; default ``<trainer.log_dir>/hf``, or ``<ModelCheckpoint dirpath>/hf`` when the run
            has no logger. Without a logger or a ModelCheckpoint it must be given. A folder lacy did not write
            refuses the run at its start.
        no_call: also keep ``<dirpath>_no_call``, the plain GPT-2 form without ``<CALL>`` (p_noCALL).
    """

    def __init__(self, dirpath: str | None = None, no_call: bool = False):
        self.dirpath, self.no_call = dirpath, no_call
        self._out: Path | None = None
        if dirpath is not None:
            check_replaceable(Path(dirpath))  # at instantiation: before data preparation and annotation

    def _target(self, trainer) -> Path:
        if self.dirpath:
            return Path(self.dirpath)
        if trainer.loggers:
            return Path(trainer.log_dir) / "hf"
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and ckpt.dirpath:
            return Path(ckpt.dirpath) / "hf"
        raise UsageError("lacy.ExportHF: this run has no logger and no ModelCheckpoint to export next to; "
                         "set the callback's dirpath (init_args: {dirpath: <folder>})")

    # trainer.log_dir is a collective under DDP: every rank asks for the target, rank 0 writes.
    def on_fit_start(self, trainer, pl_module) -> None:
        self._out = self._target(trainer)
        check_replaceable(self._out)  # before the first step, on every rank (read-only), so all ranks stop

    def _export(self, trainer, pl_module, files: dict[str, bytes]) -> Path | None:
        target = self._out or self._target(trainer)
        if not trainer.is_global_zero:
            return None
        try:
            if self.no_call:
                export_hf(pl_module.model, files, target.with_name(f"{target.name}_no_call"), call=False)
            return export_hf(pl_module.model, files, target)
        except Exception as err:  # noqa: BLE001 - an export must never cost a checkpoint or the run
            rank_zero_warn(f"lacy.ExportHF: exporting to {target} failed ({err}); checkpoints are unaffected: "
                           "export one later with `python -m lacy.export CKPT OUT_DIR`")
            return None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        files = tokenizer_files(trainer.datamodule.tokenizer)
        checkpoint[TOKENIZER_KEY] = files
        self._export(trainer, pl_module, files)

    def on_fit_end(self, trainer, pl_module) -> None:
        log_dir = trainer.log_dir
        out = self._export(trainer, pl_module, tokenizer_files(trainer.datamodule.tokenizer))
        if out is not None:
            print(f"exported Hugging Face model (with <CALL>) to {out}\nTensorBoard logs: {log_dir} "
                  "(view: tensorboard --logdir lightning_logs)")


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path, call: bool = True) -> Path:
    """Export a lacy checkpoint (a ``.ckpt`` file, or a run folder holding ``last.ckpt``) to ``out_dir``;
    ``call=False``: the no-``<CALL>`` form.

    Raises UsageError for an unreadable or unsafe checkpoint, one without a tokenizer, or an ``out_dir`` lacy did
    not write; all before anything is written.
    """
    check_replaceable(Path(out_dir))
    ckpt = read_checkpoint(ckpt_path)
    if TOKENIZER_KEY not in ckpt:
        raise UsageError(f"{ckpt_path}: has no tokenizer inside; it was saved without the lacy.ExportHF callback")
    return export_hf(slm_from_checkpoint(ckpt), ckpt[TOKENIZER_KEY], out_dir, call)
