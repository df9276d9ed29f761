"""Export to a plain Hugging Face folder: ``AutoModelForCausalLM`` + ``AutoTokenizer``, ``<CALL>`` intact.

The tokenizer travels inside every checkpoint (a few hundred KB), so any checkpoint can be exported
later without the corpus: ``python -m lacy.export CKPT OUT_DIR``.
"""
import argparse
import inspect
import os
import shutil
import tempfile
from pathlib import Path

import lightning as L
import torch

from lacy.errors import UsageError, entry_point
from lacy.tokenizer import check_call_token, load_tokenizer

TOKENIZER_KEY = "lacy_tokenizer_files"


def tokenizer_files(tokenizer) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def export_hf(model, files: dict[str, bytes], out_dir: str | Path) -> Path:
    """Write model + tokenizer (``files``: name -> bytes) to ``out_dir`` atomically (a temp sibling renamed)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        tokenizer = load_tokenizer(tmp)
        check_call_token(tokenizer, f"tokenizer exported to {out_dir}")
        if len(tokenizer) != model.config.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} ids but the model {model.config.vocab_size} rows")
        model.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out_dir.with_name(f".{out_dir.name}-old")
    if out_dir.exists():
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


class ExportHF(L.Callback):
    """Puts the tokenizer into every checkpoint and keeps ``<log_dir>/hf`` an export of the latest one.

    Args:
        dirpath: export folder; default ``<trainer.log_dir>/hf``.
    """

    def __init__(self, dirpath: str | None = None):
        self.dirpath = dirpath

    def _target(self, trainer) -> Path:
        return Path(self.dirpath or Path(trainer.log_dir or ".") / "hf")

    # trainer.log_dir is a collective under DDP: every rank asks for the target, rank 0 writes.
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        files = tokenizer_files(trainer.datamodule.tokenizer)
        checkpoint[TOKENIZER_KEY] = files
        target = self._target(trainer)
        if trainer.is_global_zero:
            export_hf(pl_module.model, files, target)

    def on_fit_end(self, trainer, pl_module) -> None:
        target, log_dir = self._target(trainer), trainer.log_dir
        if trainer.is_global_zero:
            out = export_hf(pl_module.model, tokenizer_files(trainer.datamodule.tokenizer), target)
            print(f"exported Hugging Face model (with <CALL>) to {out}\nTensorBoard logs: {log_dir} "
                  "(view: tensorboard --logdir lightning_logs)")


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    from lacy.module import CallLM

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    if TOKENIZER_KEY not in ckpt:
        raise UsageError(f"{ckpt_path} has no tokenizer inside; it was saved without the lacy.ExportHF callback")
    params = inspect.signature(CallLM.__init__).parameters  # LightningCLI adds keys such as _instantiator
    module = CallLM(**{k: v for k, v in ckpt["hyper_parameters"].items() if k in params})
    module.load_state_dict(ckpt["state_dict"])
    return export_hf(module.model, ckpt[TOKENIZER_KEY], out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description="Export a lacy checkpoint to a Hugging Face folder.")
    parser.add_argument("ckpt", help="a .ckpt written by `python main.py fit`")
    parser.add_argument("out_dir", help="folder for AutoModelForCausalLM / AutoTokenizer.from_pretrained")
    args = parser.parse_args()
    if not Path(args.ckpt).exists():
        raise UsageError(f"{args.ckpt}: no such checkpoint; pass a .ckpt written by `python main.py fit` (e.g. "
                         "lightning_logs/version_0/checkpoints/last.ckpt)")
    print(export_checkpoint(args.ckpt, args.out_dir))


if __name__ == "__main__":
    entry_point(main)()
