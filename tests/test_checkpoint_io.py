"""Checkpoint files: atomic, umask-following writes that clean up after interrupted saves; safe, explained reads."""
import fcntl
import os
import stat
from types import SimpleNamespace

import pytest
import torch

from baselines import Vanilla
from lacy.io.checkpoints import (AtomicCheckpointIO, last_checkpoint, read_checkpoint, resolve_checkpoint,
                                tokenizer_difference)
from lacy.errors import UsageError
from lacy.data.tokenizer import train_bpe, with_call_token


def test_checkpoints_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "last.ckpt").stat().st_mode) == 0o644


def test_an_interrupted_saves_temp_file_goes_at_the_next_save(tmp_path):
    """A save killed mid-write leaves ``.<name>-XXXXXXXX`` of the checkpoint's size; the next save removes it,
    but not a temporary file a save in progress (another process) still holds locked, nor other hidden files."""
    io = AtomicCheckpointIO()
    stale = tmp_path / ".epoch=0-step=100.ckpt-k3j9x_0a"
    stale.write_bytes(b"\0" * 4096)
    busy = tmp_path / ".last.ckpt-abcdefgh"
    busy.write_bytes(b"\0" * 10)
    (tmp_path / ".notes-abcdefgh").write_text("mine")
    with open(busy, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        io.save_checkpoint({"step": 2}, tmp_path / "last.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.ckpt-abcdefgh", ".notes-abcdefgh", "last.ckpt"]
    io.save_checkpoint({"step": 3}, tmp_path / "last.ckpt")  # the lock is gone: so is the file
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes-abcdefgh", "last.ckpt"]
    assert read_checkpoint(tmp_path / "last.ckpt") == {"step": 3}


def test_a_resumed_run_removes_the_temp_file_its_interrupted_version_left(tmp_path):
    """Issue 29: a killed 3.6 GB save left a temporary file in version_0 for good (the resume writes version_1)."""
    stale = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / ".last.ckpt-k3j9x_0a"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\0" * 4096)
    mine = tmp_path / "elsewhere" / "checkpoints" / ".last.ckpt-k3j9x_0b"  # not a version of this run: untouched
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"\0")
    AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "lightning_logs" / "version_1" / "checkpoints" /
                                         "last.ckpt")
    assert not stale.exists() and mine.exists()


def test_resume_refuses_a_checkpoint_carrying_code(data_kwargs, tmp_path):
    """Lightning's own restore (trainer.fit(ckpt_path=...)) reads through AtomicCheckpointIO: weights_only."""
    from tests.helpers import fit

    sentinel = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.makedirs, (str(sentinel),)

    torch.save({"state_dict": {}, "global_step": Payload()}, tmp_path / "crafted.ckpt")
    with pytest.raises(UsageError, match=r"refused: .*\(os.makedirs\)"):
        fit(data_kwargs, tmp_path, [Vanilla()], max_steps=1, ckpt_path=str(tmp_path / "crafted.ckpt"))
    with pytest.raises(UsageError, match="--weights_only false: lacy reads checkpoints only with weights_only=True"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "crafted.ckpt", weights_only=False)
    assert not sentinel.exists()


def test_resume_from_a_truncated_checkpoint_says_so(data_kwargs, tmp_path):
    from tests.helpers import fit

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "last.ckpt").write_bytes(b"PK\x03\x04" + b"\0" * 96)
    with pytest.raises(UsageError, match=r"last.ckpt is not a readable checkpoint \(100 bytes; .* no readable"):
        fit(data_kwargs, tmp_path, [Vanilla()], max_steps=1, ckpt_path=str(tmp_path / "c" / "last.ckpt"))


def test_resolve_checkpoint_takes_a_run_folders_last_ckpt(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, tmp_path / "v0" / "checkpoints" / "last.ckpt")
    assert resolve_checkpoint(tmp_path / "v0") == tmp_path / "v0" / "checkpoints" / "last.ckpt"
    assert resolve_checkpoint(tmp_path / "v0" / "checkpoints") == tmp_path / "v0" / "checkpoints" / "last.ckpt"
    with pytest.raises(UsageError, match="is a folder without last.ckpt; pass a .ckpt file"):
        resolve_checkpoint(tmp_path)


def test_last_checkpoint_is_the_newest_runs(tmp_path):
    io = AtomicCheckpointIO()
    logs = tmp_path / "lightning_logs"
    trainer = SimpleNamespace(checkpoint_callbacks=[], logger=SimpleNamespace(root_dir=str(logs)),
                              default_root_dir=str(tmp_path))
    with pytest.raises(UsageError, match="--ckpt_path last: no last.ckpt in"):
        last_checkpoint(trainer)
    io.save_checkpoint({"step": 1}, logs / "version_0" / "checkpoints" / "last.ckpt")
    io.save_checkpoint({"step": 2}, logs / "version_1" / "checkpoints" / "last.ckpt")
    (logs / "version_2").mkdir()  # a run that stopped before its first checkpoint
    os.utime(logs / "version_0" / "checkpoints" / "last.ckpt", (1e9, 1e9))
    assert last_checkpoint(trainer) == logs / "version_1" / "checkpoints" / "last.ckpt"
    no_logger = SimpleNamespace(checkpoint_callbacks=[], logger=None, default_root_dir=str(logs / "version_0"))
    assert last_checkpoint(no_logger) == logs / "version_0" / "checkpoints" / "last.ckpt"


def test_tokenizer_difference_counts_changed_ids():
    from tests.helpers import make_bios

    a = with_call_token(train_bpe(make_bios(60, seed=0), vocab_size=280))
    b = with_call_token(train_bpe([d.upper() for d in make_bios(60, seed=1)], vocab_size=280))
    files = {"tokenizer.json": a.backend_tokenizer.to_str().encode()}
    assert tokenizer_difference(files, a) is None
    ta = {i: t for t, i in a.get_vocab().items()}
    tb = {i: t for t, i in b.get_vocab().items()}
    changed = sum(ta[i] != tb[i] for i in range(len(a)))
    assert len(a) == len(b) and changed > 0
    assert tokenizer_difference(files, b) == f"{changed} of {len(b)} ids stand for other tokens"


def test_last_checkpoint_holds_the_final_weights_the_export_holds(data_kwargs, tmp_path):
    """A fit that ends between checkpoint intervals (7 steps, every 5): last.ckpt is written at the end too, so
    ``main.py test --ckpt_path last.ckpt`` scores the weights the export holds (Lightning's kept step 5's)."""
    from safetensors.torch import load_file

    from lacy.io.checkpoints import ModelCheckpoint
    from lacy.io.export import ExportHF
    from tests.helpers import fit

    ckpts = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=5, save_last=True, save_top_k=-1)
    fit(data_kwargs, tmp_path, [Vanilla(), ckpts, ExportHF(str(tmp_path / "hf"))], max_steps=7)
    last = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 7 and (tmp_path / "ck" / "epoch=0-step=5.ckpt").is_file()
    exported = load_file(tmp_path / "hf" / "model.safetensors")
    for name, tensor in exported.items():
        assert torch.equal(last["state_dict"][f"model.{name}"], tensor)
    # a chosen dirpath holding lacy's checkpoints takes more of them; a user's file or another project's
    # checkpoint there is refused at setup, before any step
    fit(data_kwargs, tmp_path, [Vanilla(), ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)], max_steps=1)
    (tmp_path / "mine").mkdir()
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "mine" / "last.ckpt")
    with pytest.raises(UsageError, match="dirpath=.*mine: holds last.ckpt, which no lacy fit wrote"):
        fit(data_kwargs, tmp_path, [Vanilla(), ModelCheckpoint(dirpath=tmp_path / "mine", save_last=True)],
            max_steps=1)
    assert list(torch.load(tmp_path / "mine" / "last.ckpt", weights_only=True)) == ["state_dict"]
