"""Export to a plain Hugging Face folder: ``AutoModelForCausalLM`` + ``AutoTokenizer``, ``<CALL>`` intact.

The tokenizer travels inside every checkpoint (a few hundred KB), so any checkpoint can be exported
later without the corpus: ``python -m lacy.export CKPT OUT_DIR``.

Two forms (issue 18):
- with ``<CALL>`` (default): the model as trained. p(``<CALL>``) is ~0.96-0.999 everywhere (the objective never
  trains it down), so ``generation_config.json`` suppresses ``<CALL>`` and plain ``generate()`` writes the SLM's
  own text, p_noCALL. ``model.generate(..., suppress_tokens=[])`` lets ``<CALL>`` through again.
- ``--no-call``: a standard GPT-2 folder and tokenizer without the ``<CALL>`` row, whose next-token distribution
  is exactly p_noCALL (the softmax over the other logits): what lm-eval, vLLM or llama.cpp should see.
"""
import argparse
import copy
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

import lightning as L
import torch

from lacy.tokenizer import CALL_TOKEN, check_call_token, load_tokenizer

TOKENIZER_KEY = "lacy_tokenizer_files"


def tokenizer_files(tokenizer) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def without_call(model, files: dict[str, bytes]):
    """The no-``<CALL>`` form of a model and its tokenizer files: the last (``<CALL>``) row of the tied
    embedding / LM head dropped, and ``<CALL>`` removed from the tokenizer. Its logits are the original
    logits[..., :-1], so its softmax is p_noCALL exactly. Returns (model copy, files); the inputs are untouched."""
    call_id = model.config.vocab_size - 1
    files = dict(files)
    tok_json = json.loads(files["tokenizer.json"])
    added = [t for t in tok_json["added_tokens"] if t["content"] == CALL_TOKEN]
    if [t["id"] for t in added] != [call_id]:
        raise ValueError(f"the tokenizer's {CALL_TOKEN} is not the model's last row ({call_id}); nothing to remove")
    tok_json["added_tokens"] = [t for t in tok_json["added_tokens"] if t["content"] != CALL_TOKEN]
    files["tokenizer.json"] = json.dumps(tok_json, ensure_ascii=False).encode()
    if "tokenizer_config.json" in files:
        config = json.loads(files["tokenizer_config.json"])
        for key in ("extra_special_tokens", "additional_special_tokens"):
            if isinstance(config.get(key), list):
                config[key] = [t for t in config[key] if t != CALL_TOKEN]
        config.get("added_tokens_decoder", {}).pop(str(call_id), None)
        files["tokenizer_config.json"] = json.dumps(config, indent=2, ensure_ascii=False).encode()
    model = copy.deepcopy(model)
    model.resize_token_embeddings(call_id, mean_resizing=False)  # keeps rows 0..call_id-1; the head stays tied
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
    suppresses it in ``generation_config.json``."""
    if not call:
        model, files = without_call(model, files)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        tokenizer = _check_tokenizer(tmp, call, out_dir)
        if len(tokenizer) != model.config.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} ids but the model {model.config.vocab_size} rows")
        model.save_pretrained(tmp)
        _generation_config(model, tokenizer, len(tokenizer) - 1 if call else None).save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out_dir.with_name(f".{out_dir.name}-old")
    if out_dir.exists():
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def _check_tokenizer(folder: Path, call: bool, out_dir: Path):
    if call:
        tokenizer = load_tokenizer(folder)
        check_call_token(tokenizer, f"tokenizer exported to {out_dir}")
        return tokenizer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if CALL_TOKEN in tokenizer.get_vocab():
        raise ValueError(f"the no-call tokenizer exported to {out_dir} still has {CALL_TOKEN}")
    return tokenizer


class ExportHF(L.Callback):
    """Puts the tokenizer into every checkpoint and keeps ``<log_dir>/hf`` an export of the latest one.

    Args:
        dirpath: export folder; default ``<trainer.log_dir>/hf``.
        no_call: also keep ``<dirpath>_no_call``, the plain GPT-2 form without ``<CALL>`` (p_noCALL).
    """

    def __init__(self, dirpath: str | None = None, no_call: bool = False):
        self.dirpath, self.no_call = dirpath, no_call

    def _export(self, model, files: dict[str, bytes], target: Path) -> Path:
        if self.no_call:
            export_hf(model, files, target.with_name(f"{target.name}_no_call"), call=False)
        return export_hf(model, files, target)

    def _target(self, trainer) -> Path:
        return Path(self.dirpath or Path(trainer.log_dir or ".") / "hf")

    # trainer.log_dir is a collective under DDP: every rank asks for the target, rank 0 writes.
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        files = tokenizer_files(trainer.datamodule.tokenizer)
        checkpoint[TOKENIZER_KEY] = files
        target = self._target(trainer)
        if trainer.is_global_zero:
            self._export(pl_module.model, files, target)

    def on_fit_end(self, trainer, pl_module) -> None:
        target, log_dir = self._target(trainer), trainer.log_dir
        if trainer.is_global_zero:
            out = self._export(pl_module.model, tokenizer_files(trainer.datamodule.tokenizer), target)
            print(f"exported Hugging Face model (with <CALL>) to {out}\nTensorBoard logs: {log_dir} "
                  "(view: tensorboard --logdir lightning_logs)")


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path, call: bool = True) -> Path:
    """A checkpoint written by ``main.py fit`` to a Hugging Face folder; ``call=False``: the no-``<CALL>`` form."""
    from lacy.module import CallLM

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    if TOKENIZER_KEY not in ckpt:
        raise ValueError(f"{ckpt_path} has no tokenizer inside; it was saved without the lacy.ExportHF callback")
    params = inspect.signature(CallLM.__init__).parameters  # LightningCLI adds keys such as _instantiator
    module = CallLM(**{k: v for k, v in ckpt["hyper_parameters"].items() if k in params})
    module.load_state_dict(ckpt["state_dict"])
    return export_hf(module.model, ckpt[TOKENIZER_KEY], out_dir, call)


def main() -> None:
    parser = argparse.ArgumentParser(description="Export a lacy checkpoint to a Hugging Face folder.")
    parser.add_argument("ckpt", help="a .ckpt written by `python main.py fit`")
    parser.add_argument("out_dir", help="folder for AutoModelForCausalLM / AutoTokenizer.from_pretrained")
    parser.add_argument("--no-call", action="store_true",
                        help="a plain GPT-2 without the <CALL> row: its distribution is the SLM's p_noCALL")
    args = parser.parse_args()
    print(export_checkpoint(args.ckpt, args.out_dir, call=not args.no_call))


if __name__ == "__main__":
    main()
