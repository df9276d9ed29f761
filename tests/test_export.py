"""lacy.io.export: only ever replaces its own exports, swaps safely, follows the umask, reads checkpoints safely; the
two forms: with <CALL> (suppressed in plain generate()) and without it (exactly p_noCALL)."""
import hashlib
import json
import os
import stat
import zipfile
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from baselines import LossOnly, Vanilla
from lacy.data.datamodule import CorpusDataModule
from lacy.errors import UsageError
from lacy.io.marker import MARKER, check_replaceable
from lacy.io.export import ExportHF, export_checkpoint, export_hf, tokenizer_files
from lacy.model.gpt2 import build_slm
from lacy.train.module import CallLM
from lacy.train.objective import token_losses
from lacy.model.call_token import CALL_TOKEN
from lacy.data.tokenizer import train_bpe, with_call_token
from tests.helpers import call_saturated_model, make_bios


@pytest.fixture
def small():
    """A real micro model and a BPE tokenizer with <CALL>, the same vocabulary size."""
    tok = with_call_token(train_bpe(["Anna Novak was born in Paris in 1950."] * 20, vocab_size=280))
    return build_slm("micro", len(tok), 32), tokenizer_files(tok)


@pytest.fixture
def checkpoint(data_kwargs, tmp_path):
    """A real lacy checkpoint folder (2 steps of a micro model): ``<tmp>/run/checkpoints/last.ckpt``."""
    from tests.helpers import fit

    folder = tmp_path / "run" / "checkpoints"
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=folder, save_last=True)
    fit(data_kwargs, tmp_path, [Vanilla(), ckpt, ExportHF(dirpath=str(tmp_path / "run" / "hf"))], max_steps=2)
    return folder


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_export_refuses_a_folder_lacy_did_not_write(small, tmp_path):
    model, files = small
    mine = tmp_path / "mymodels"
    (mine / "i").mkdir(parents=True)
    (mine / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match=f"{mine}: exists and was not written by lacy"):
        export_hf(model, files, mine)
    assert tree(mine) == ["i", "notes.txt"] and (mine / "notes.txt").read_text() == "x"
    (tmp_path / "file").write_text("y")
    with pytest.raises(UsageError, match="is not a folder"):
        export_hf(model, files, tmp_path / "file")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nothing half-written


def test_export_replaces_its_own_export_but_not_files_added_to_it(small, tmp_path):
    model, files = small
    (tmp_path / "empty").mkdir()
    export_hf(model, files, tmp_path / "empty")  # an empty folder is used
    out = export_hf(model, files, tmp_path / "out")
    marker = json.loads((out / MARKER).read_text())
    assert marker["written_by"] == "lacy" and set(marker["files"]) == {p.name for p in out.iterdir()} - {MARKER}
    assert "model.safetensors" in marker["files"] and "tokenizer.json" in marker["files"]
    export_hf(model, files, out)  # its own export: replaced
    (out / "README.md").write_text("my notes")
    with pytest.raises(UsageError, match=r"holds files lacy did not write \(README.md\)"):
        export_hf(model, files, out)
    assert (out / "README.md").read_text() == "my notes"
    (out / "README.md").unlink()
    assert marker["sha256"]["config.json"] == hashlib.sha256((out / "config.json").read_bytes()).hexdigest()
    (out / "config.json").write_text((out / "config.json").read_text().replace("}", ', "note": "mine"}', 1))
    with pytest.raises(UsageError, match=r"config.json changed after lacy wrote it"):  # an edit is the user's
        export_hf(model, files, out)
    assert "mine" in (out / "config.json").read_text()


def test_export_swap_is_safe_against_leftovers(small, tmp_path):
    model, files = small
    out = export_hf(model, files, tmp_path / "hf")
    stale = tmp_path / ".hf-old"  # left by an earlier lacy's interrupted swap: blocked every later export
    (stale / "x").mkdir(parents=True)
    ours = tmp_path / ".hf-abcd1234"  # an interrupted export of ours (its marker comes first): cleaned up
    ours.mkdir()
    (ours / MARKER).write_text(json.dumps({"written_by": "lacy", "files": []}))
    theirs = tmp_path / ".hf-wxyz5678"  # same name pattern, no marker: not ours, left alone
    theirs.mkdir()
    export_hf(model, files, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hf-old", ".hf-wxyz5678", "hf"]
    assert (stale / "x").is_dir()


def test_exports_follow_the_umask(small, tmp_path):
    model, files = small
    old = os.umask(0o022)
    try:
        out = export_hf(model, files, tmp_path / "hf")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o644}


def test_export_checkpoint_reads_folders_and_refuses_bad_files(checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM

    out = export_checkpoint(checkpoint.parent, tmp_path / "a")  # a run folder: its checkpoints/last.ckpt
    ref = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "hf")
    got = AutoModelForCausalLM.from_pretrained(out)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), got.state_dict().values()))
    export_checkpoint(checkpoint, tmp_path / "b")  # the checkpoints folder: its last.ckpt
    with pytest.raises(UsageError, match=f"{tmp_path}/a is a folder without last.ckpt; pass a .ckpt file"):
        export_checkpoint(tmp_path / "a", tmp_path / "c")
    with pytest.raises(UsageError, match="no such checkpoint"):
        export_checkpoint(tmp_path / "nope.ckpt", tmp_path / "c")
    # the run's own folder as the output: refused before anything is read or deleted
    before = tree(checkpoint.parent)
    with pytest.raises(UsageError, match="not written by lacy"):
        export_checkpoint(checkpoint / "last.ckpt", checkpoint.parent)
    assert tree(checkpoint.parent) == before


def test_export_refuses_a_checkpoint_carrying_code(checkpoint, tmp_path):
    """A crafted .ckpt whose unpickling would call os.makedirs: refused, and nothing ran."""
    sentinel = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.makedirs, (str(sentinel),)

    crafted = torch.load(checkpoint / "last.ckpt", weights_only=True)
    crafted["hyper_parameters"]["preset"] = Payload()
    torch.save(crafted, tmp_path / "crafted.ckpt")
    with pytest.raises(UsageError, match=r"crafted.ckpt: refused: .*\(os.makedirs\)"):
        export_checkpoint(tmp_path / "crafted.ckpt", tmp_path / "out")
    assert not sentinel.exists() and not (tmp_path / "out").exists()


def test_truncated_checkpoint_names_the_newest_readable_one(checkpoint, tmp_path):
    last = checkpoint / "last.ckpt"
    good = next(p for p in checkpoint.glob("*.ckpt") if p.name != "last.ckpt")
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError) as err:
        export_checkpoint(last, tmp_path / "out")
    assert str(err.value) == (f"{last} is not a readable checkpoint ({len(data) // 2} bytes; truncated, corrupted "
                              f"(a CRC mismatch) or not a checkpoint); the newest readable lacy checkpoint next to it "
                              f"is {good}")
    assert "weights_only" not in str(err.value) and "central directory" not in str(err.value)
    export_checkpoint(good, tmp_path / "out")  # the one it names exports


def test_a_checkpoint_carrying_code_is_never_named_as_the_readable_one(checkpoint, tmp_path):
    """Newer than the good checkpoint but refused by weights_only loading: the truncated file's message skips it."""
    last = checkpoint / "last.ckpt"
    good = next(p for p in checkpoint.glob("*.ckpt") if p.name != "last.ckpt")
    crafted = torch.load(last, weights_only=True)
    crafted["hyper_parameters"]["preset"] = SimpleNamespace()  # a pickled object: weights_only refuses it
    torch.save(crafted, checkpoint / "crafted.ckpt")
    os.utime(good, (1, 1))  # the oldest
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match=rf"the newest readable lacy checkpoint next to it is {good}$"):
        export_checkpoint(last, tmp_path / "out")


def test_a_flipped_byte_is_refused_and_another_projects_checkpoint_is_never_last_good(checkpoint, tmp_path):
    """Issue 29: a checkpoint with flipped bytes exported with rc 0 (weights up to 3.4e38): the zip directory was
    intact, the CRCs were not read. Now every record's CRC is checked; the checkpoint it names instead is lacy's."""
    last = checkpoint / "last.ckpt"
    good = next(p for p in checkpoint.glob("*.ckpt") if p.name != "last.ckpt")
    torch.save({"state_dict": {"w": torch.ones(3)}, "global_step": 9}, checkpoint / "theirs.ckpt")  # not lacy's
    os.utime(good, (1, 1))  # the oldest: the foreign one is newer
    data = bytearray(last.read_bytes())
    with zipfile.ZipFile(last) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size > 64)
    data[info.header_offset + 30 + len(info.filename) + info.extra.__len__() + info.file_size // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    with pytest.raises(UsageError, match=rf"corrupted \(a CRC mismatch\).*lacy checkpoint next to it is {good}$"):
        export_checkpoint(last, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_into_the_current_folder(small, tmp_path, monkeypatch):
    """`python -m lacy.export CKPT .` from an empty folder: "." is swapped like any other path."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    model, files = small
    out = export_hf(model, files, ".")
    assert out == here and (here / "config.json").is_file() and (here / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]  # no hidden leftovers next to it


def test_check_replaceable_accepts_absent_and_empty(tmp_path):
    check_replaceable(tmp_path / "absent")
    check_replaceable(tmp_path)  # empty
    (tmp_path / MARKER).write_text("{not json")
    with pytest.raises(UsageError, match="not written by lacy"):
        check_replaceable(tmp_path)


def test_without_a_logger_the_export_goes_next_to_the_checkpoints(data_kwargs, tmp_path, monkeypatch):
    """``--trainer.logger false`` with the working directory as root: a user's ``./hf`` is not the export."""
    from tests.helpers import fit

    monkeypatch.chdir(tmp_path)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "notes.txt").write_text("mine")
    ckpt = L.pytorch.callbacks.ModelCheckpoint(save_last=True)
    fit(data_kwargs, tmp_path, [Vanilla(), ckpt, ExportHF()], max_steps=2)
    assert tree(tmp_path / "hf") == ["notes.txt"]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "hf" / "model.safetensors").is_file()
    with pytest.raises(UsageError, match="no logger and no ModelCheckpoint.*set the callback's dirpath"):
        fit(data_kwargs, tmp_path, [Vanilla(), ExportHF()], max_steps=2, enable_checkpointing=False)


def test_an_export_folder_lacy_did_not_write_refuses_the_run_at_its_start(data_kwargs, tmp_path):
    from tests.helpers import fit

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not written by lacy"):
        ExportHF(dirpath=str(tmp_path / "out"))  # explicit: at instantiation, before any data work

    class Stamp(L.Callback):
        def on_fit_start(self, trainer, module):
            (tmp_path / "run" / "hf").mkdir(parents=True)
            (tmp_path / "run" / "hf" / "notes.txt").write_text("mine")

    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="run", version="")
    with pytest.raises(UsageError, match="run/hf: exists and was not written by lacy"):
        fit(data_kwargs, tmp_path, [Vanilla(), Stamp(), ExportHF()], max_steps=2, logger=logger)
    assert not list(tmp_path.rglob("*.ckpt"))


def test_an_export_failure_during_fit_is_a_warning_not_a_lost_checkpoint(data_kwargs, tmp_path):
    from tests.helpers import fit

    out = tmp_path / "hf"
    (tmp_path / ".hf-old" / "x").mkdir(parents=True)  # a stale leftover: made the first checkpoint die (Errno 39)

    class Meddle(L.Callback):  # after two exports (swapped past the leftover), someone drops a file in the folder
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 3:
                (out / "notes.txt").write_text("mine")

    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "c", every_n_train_steps=1, save_last=True)
    with pytest.warns(UserWarning, match=r"exporting to .*hf failed \(.*notes.txt.*\); checkpoints are unaffected"):
        trainer, _ = fit(data_kwargs, tmp_path, [Vanilla(), Meddle(), ckpt, ExportHF(dirpath=str(out))], max_steps=4)
    assert trainer.global_step == 4
    assert torch.load(tmp_path / "c" / "last.ckpt")["global_step"] == 4
    assert (out / "notes.txt").read_text() == "mine" and (tmp_path / ".hf-old" / "x").is_dir()


TEXT = "Anna Novak was born in Paris in 1950."




@pytest.fixture(scope="module")
def tok():
    return train_bpe(make_bios(60), 300)


def test_generate_on_the_call_export_writes_no_call(tok, tmp_path):
    export_hf(call_saturated_model(len(tok)), tokenizer_files(tok), tmp_path / "hf")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "hf")
    call_id = loaded.convert_tokens_to_ids(CALL_TOKEN)
    enc = loaded(TEXT, return_tensors="pt")
    with torch.no_grad():
        assert torch.softmax(model(**enc).logits, -1)[0, :, call_id].min() > 0.99  # the situation
        plain = model.generate(**enc, max_new_tokens=20, do_sample=False)[0, enc["input_ids"].shape[1]:]
        let_through = model.generate(**enc, max_new_tokens=20, do_sample=False, suppress_tokens=[])
    assert len(plain) > 0 and call_id not in plain.tolist()
    assert let_through[0, enc["input_ids"].shape[1]:].tolist() == [call_id] * 20  # the README's way back


def test_no_call_export_is_exactly_p_nocall(tok, tmp_path):
    slm = call_saturated_model(len(tok))
    export_hf(slm, tokenizer_files(tok), tmp_path / "plain", call=False)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "plain")
    plain_tok = AutoTokenizer.from_pretrained(tmp_path / "plain")
    assert CALL_TOKEN not in plain_tok.get_vocab()
    assert len(plain_tok) == model.config.vocab_size == len(tok) - 1
    assert model.config.model_type == "gpt2" and model.lm_head.weight is model.transformer.wte.weight
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    assert plain_tok(TEXT, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    assert CALL_TOKEN not in plain_tok.convert_ids_to_tokens(plain_tok(f"x {CALL_TOKEN}")["input_ids"])
    with torch.no_grad():
        full, cut = slm(ids).logits, model(ids).logits
    p_nocall = torch.log_softmax(full[..., :-1], -1)
    assert torch.allclose(torch.log_softmax(cut, -1), p_nocall, atol=1e-5)
    # and its cross-entropy is the objective's no-call loss at every position
    labels = torch.cat([ids[:, 1:], torch.full((1, 1), -100)], 1)
    target = token_losses(full, labels).target[0, :-1]
    ce = torch.nn.functional.cross_entropy(cut[0, :-1], ids[0, 1:], reduction="none")
    assert torch.allclose(ce, target, atol=1e-5)
    assert slm.config.vocab_size == len(tok)  # the source model is untouched


def test_no_call_from_a_checkpoint_and_from_the_callback(data_kwargs, tmp_path):
    L.seed_everything(0)
    dm = CorpusDataModule(**data_kwargs)
    module = CallLM(preset="micro", vocab_size=dm.vocab_size, block_size=dm.block_size, warmup_steps=1)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "c", save_last=True)
    trainer = L.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False, limit_val_batches=0, default_root_dir=tmp_path,
                        callbacks=[LossOnly(), ckpt, ExportHF(dirpath=str(tmp_path / "hf"), no_call=True)])
    trainer.fit(module, dm)
    ids = torch.tensor([dm.tokenizer(TEXT)["input_ids"]])
    with torch.no_grad():
        want = torch.log_softmax(module.model.eval()(ids).logits[..., :-1], -1)
    for folder in (tmp_path / "hf_no_call", export_checkpoint(tmp_path / "c" / "last.ckpt", tmp_path / "x", call=False)):
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert CALL_TOKEN not in AutoTokenizer.from_pretrained(folder).get_vocab()
        with torch.no_grad():
            assert torch.allclose(torch.log_softmax(model(ids).logits, -1), want, atol=1e-5)
    assert AutoTokenizer.from_pretrained(tmp_path / "hf").convert_tokens_to_ids(CALL_TOKEN) == dm.vocab_size - 1
