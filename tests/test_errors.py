"""One clear line for bad input at every entry point: `lacy: error: <file or option>; <fix>`, exit status 2;
LACY_TRACEBACK=1 (or --traceback) shows the traceback instead."""
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from lacy.cli import cli_main
from lacy.errors import EXIT_USAGE, UsageError, entry_point
from tests.helpers import configs_copy


def run(args: list[str], traceback: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    env.pop("LACY_TRACEBACK", None)
    if traceback:
        env["LACY_TRACEBACK"] = "1"
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120)


def in_process(args: list[str], capsys, monkeypatch, module: str | None = None) -> subprocess.CompletedProcess:
    """``python main.py ARGS[1:]`` (or ``python -m MODULE ARGS[1:]``) run in this process, seconds instead of an
    interpreter's start: its exit status and stderr."""
    monkeypatch.delenv("LACY_TRACEBACK", raising=False)
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # what seed_everything sets is undone after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "argv", args)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        runpy.run_module(module, run_name="__main__", alter_sys=True) if module else entry_point(cli_main)()
    return subprocess.CompletedProcess(args, e.value.code, "", capsys.readouterr().err)


def one_line(done: subprocess.CompletedProcess, *needles: str) -> str:
    """The run failed with exit 2 and exactly one error line, the last on stderr, naming each needle."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == EXIT_USAGE, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and [l for l in lines if "error" in l.lower()] == lines[-1:], done.stderr
    assert lines[-1].startswith("lacy: error: ") and all(n in lines[-1] for n in needles), lines[-1]
    return lines[-1]


def test_entry_point_prints_a_wrapped_usage_error_as_one_line(capsys, monkeypatch):
    def main():
        try:
            raise UsageError("data.block_size: must be > 0; set it to 256")
        except UsageError as e:
            raise ValueError("Does not validate against any of the Union subtypes\n...") from e  # as jsonargparse

    monkeypatch.delenv("LACY_TRACEBACK", raising=False)
    monkeypatch.setattr(sys, "argv", ["prog"])
    with pytest.raises(SystemExit) as e:
        entry_point(main)()
    assert e.value.code == EXIT_USAGE
    assert capsys.readouterr().err == ("lacy: error: data.block_size: must be > 0; set it to 256 "
                                       "(traceback: LACY_TRACEBACK=1)\n")
    monkeypatch.setattr(sys, "argv", ["prog", "--traceback"])
    with pytest.raises(ValueError, match="Union"):  # asked for: the real exception, traceback and all
        entry_point(main)()
    assert sys.argv == ["prog"]  # the flag is not passed on to the command's own parser

    def bug():
        raise KeyError("not the user's fault")

    monkeypatch.setattr(sys, "argv", ["prog"])
    with pytest.raises(KeyError):  # anything else is a bug: its traceback is shown
        entry_point(bug)()


def test_the_error_line_starts_on_its_own_line_after_an_open_progress_bar(capsys, monkeypatch):
    """17.1: "lacy: error:" used to follow an annotation bar on the same terminal line."""
    from tqdm import tqdm

    def main():
        bar = tqdm(total=10, desc="annotating", file=sys.stderr)
        bar.update(3)
        raise UsageError("judge endpoint failed")

    monkeypatch.delenv("LACY_TRACEBACK", raising=False)
    monkeypatch.setattr(sys, "argv", ["prog"])
    with pytest.raises(SystemExit):
        entry_point(main)()
    err = capsys.readouterr().err
    assert "annotating:  30%" in err and "\nlacy: error: judge endpoint failed" in err
    assert err.endswith("(traceback: LACY_TRACEBACK=1)\n")


def no_strategy_config(tmp_path) -> Path:
    path = configs_copy(tmp_path) / "no_strategy.yaml"
    text = (path.parent / "lacy.yaml").read_text()
    path.write_text(text.replace(text[text.index("  - class_path: lacy.LaCy"):text.index("  - base/export_hf.yaml")], ""))
    return path


def test_main_without_a_strategy_fails_before_reading_the_corpus(tmp_path):
    """The check runs on the parsed config, before any class is built: no cache, no annotation, no log folder."""
    args = ["fit", "--config", str(no_strategy_config(tmp_path)), "--data.cache_dir", str(tmp_path / "c"),
            "--trainer.default_root_dir", str(tmp_path / "runs")]
    with pytest.raises(UsageError, match=r"^trainer.callbacks: exactly one selection strategy .* found none; .*lacy.LaCy"):
        cli_main(args)
    assert not (tmp_path / "c").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, match", [
    (["fit", "--config", "configs/lacyy.yaml"], r"config.*File does not exist.*lacyy.yaml'; the options: .*--help"),
    (["fit", "--config", "configs/lacy.yaml", "--model.presett", "x"], "unrecognized arguments: --model.presett x"),
    (["fitt"], "invalid choice: 'fitt'"),
])
def test_main_parse_errors_are_usage_errors_not_a_usage_dump(args, match, capsys):
    with pytest.raises(UsageError, match=match):
        cli_main(args)
    assert "usage:" not in capsys.readouterr().err


@pytest.mark.parametrize("text, where, problem, joined", [
    ("trainer:\n  max_steps: [1\n", ":3:1", "expected ',' or ']'", True),
    ("model:\n  lr: 0.1\n   preset: tiny\n", ":3:10", "mapping values are not allowed here", False),
])
def test_main_names_the_config_file_and_line_of_a_yaml_syntax_error(text, where, problem, joined, tmp_path):
    """jsonargparse calls every config "<unicode string>": the line names the file, its line and column, for
    ``--config=FILE`` and ``--config FILE`` alike."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(UsageError) as err:
        cli_main(["fit", "--config", "configs/lacy.yaml", *([f"--config={bad}"] if joined else ["--config", str(bad)])])
    assert str(err.value).startswith(f"{bad}{where}: YAML syntax error: ") and problem in str(err.value)
    assert "unicode string" not in str(err.value)


def test_main_with_a_bad_strategy_argument_is_one_line_not_a_union_block(tmp_path, bios_path, capsys, monkeypatch):
    """jsonargparse wraps an error raised while building trainer.callbacks in a "Union subtypes" block; main.py
    prints lacy's own line instead; LACY_TRACEBACK=1 shows it all."""
    config = configs_copy(tmp_path) / "bad_rate.yaml"
    config.write_text((config.parent / "lacy.yaml").read_text().replace("call_rate: 0.15 ", "call_rate: 1.5 ", 1))
    args = ["main.py", "fit", "--config", str(config), "--data.corpus.class_path", "lacy.data.corpus.JsonlCorpus",
            "--data.corpus.init_args.path", str(bios_path), "--data.bpe_vocab_size", "300",
            "--data.cache_dir", str(tmp_path / "c"), "--trainer.default_root_dir", str(tmp_path / "runs")]
    done = in_process(args, capsys, monkeypatch)
    one_line(done, "LaCy: call_rate=1.5 must be in [0, 1)")
    assert "Union" not in done.stderr and not (tmp_path / "runs").exists()
    monkeypatch.setenv("LACY_TRACEBACK", "1")  # asked for: jsonargparse's own error, raised whole
    with pytest.raises(BaseException, match="Union subtypes"):
        entry_point(cli_main)()


@pytest.mark.parametrize("args, needles", [
    (["-m", "lacy.annotate", "--config", "{tmp}/bad.yaml"], ["--config {tmp}/bad.yaml", '"data.block_size"',
                                                             "Expected a <class 'int'>. Got value: lots"]),
    (["-m", "lacy.export", "missing.ckpt", "out"], ["missing.ckpt", "main.py fit"]),
    (["-m", "lacy.evaluate", "no/such/partner"], ["partner 'no/such/partner' is not a local folder", "make partner"]),
    (["-m", "lacy.world", "--out", "never_written", "--people", "100000"], ["people=100000", "unique names"]),
    # siblings: a YAML that does not parse (file and line), argparse's own errors, a file where a folder goes
    (["-m", "lacy.world", "--config", "{tmp}/broken.yaml"], ["{tmp}/broken.yaml:3:", "YAML syntax error", "fix the file"]),
    (["-m", "lacy.evaluate", "x", "--config", "{tmp}/broken.yaml"], ["partner 'x' is not a local folder"]),
    (["-m", "lacy.export"], ["the following arguments are required: ckpt, out_dir", "--help"]),
    (["-m", "lacy.annotate", "--config", "{tmp}/bad.yaml", "--shard", "3"], ["--shard 3 must be in [0, --num-shards=1)"]),
    (["-m", "lacy.world", "--out", "{tmp}/bad.yaml"], ["{tmp}/bad.yaml: exists and is not a folder"]),
])
def test_module_entry_points_print_one_line(args, needles, tmp_path, capsys, monkeypatch):
    """Each ``python -m`` entry point, run in this process (``runpy``, as ``-m`` runs it)."""
    (tmp_path / "bad.yaml").write_text("data:\n  block_size: lots\n")
    (tmp_path / "broken.yaml").write_text("data:\n  corpus: [unclosed\n")
    before = set(Path.cwd().iterdir())
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    one_line(in_process([args[1]] + args[2:], capsys, monkeypatch, module=args[1]),
             *[n.replace("{tmp}", str(tmp_path)) for n in needles])
    assert set(Path.cwd().iterdir()) == before  # nothing written


@pytest.mark.slow
def test_bad_numbers_and_library_configuration_errors_are_one_line(tmp_path, bios_path, capsys, monkeypatch):
    """Values no run can use fail when the config is built, naming the option; a configuration Lightning refuses
    (a LearningRateMonitor without a logger, as every shipped config has) is one line too."""
    base = ["main.py", "fit", "--config", "configs/vanilla.yaml", "--data.corpus.class_path", "lacy.data.corpus.JsonlCorpus",
            "--data.corpus.init_args.path", str(bios_path), "--data.bpe_vocab_size", "300", "--data.block_size", "32",
            "--data.cache_dir", str(tmp_path / "c"), "--model.preset", "micro", "--trainer.max_steps", "2",
            "--trainer.default_root_dir", str(tmp_path / "runs")]
    for option, needle in (("--data.block_size=-5", "data.block_size=-5: must be a whole number >= 1"),
                           ("--data.batch_size=0", "data.batch_size=0: must be a whole number >= 1"),
                           ("--model.dropout=2", "model.dropout=2.0: must be in [0, 1)")):
        one_line(in_process(base + [option], capsys, monkeypatch), needle)
    one_line(in_process(base + ["--trainer.logger", "false"], capsys, monkeypatch), "LearningRateMonitor", "no logger")
    one_line(run(base + ["--data.batch_size=0"]), "data.batch_size=0: must be a whole number >= 1")  # as a user runs it


def test_annotate_names_a_missing_config_file():
    from lacy.annotate import main

    with pytest.raises(UsageError, match="^--config missing.yaml: no such file; give a training YAML"):
        main(["--config", "missing.yaml"])


def test_a_write_the_machine_refuses_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """Issue 28: a full disk or a read-only folder ended in a raw OSError deep in a writer. Every write goes through
    lacy's atomic writers, and every entry point reports a refused write as one line (file, reason, free space,
    fix), exit 2; the temporary file is gone and the previous file intact."""
    import errno
    import tempfile

    from lacy.io.atomic import write_atomic

    from lacy.io import atomic

    target = tmp_path / "cache" / "digests.jsonl"
    write_atomic(target, "old\n")

    class Full:  # a file on a disk that fills after a few bytes (the OSError names the file, as the kernel's)
        def __init__(self, path, mode):
            self.f, self.name = open(path, mode), path

        def write(self, data):
            self.f.write(data[:3])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.name))

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(atomic, "open", Full, raising=False)
    with pytest.raises(SystemExit) as e:
        entry_point(lambda: write_atomic(target, "new\n" * 10_000))()
    monkeypatch.undo()
    line = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(line.splitlines()) == 1
    assert ": lacy could not write it: the disk is full;" in line and "B free there" in line
    assert target.read_text() == "old\n" and sorted(p.name for p in target.parent.iterdir()) == ["digests.jsonl"]
    monkeypatch.setattr(tempfile, "mkstemp", lambda **k: (_ for _ in ()).throw(
        OSError(errno.EROFS, os.strerror(errno.EROFS), str(k["dir"]))))
    with pytest.raises(SystemExit):
        entry_point(lambda: write_atomic(target, "new\n"))()
    assert f"{target.parent}: lacy could not write it: the file system is read-only" in capsys.readouterr().err


def test_a_checkpoint_that_fills_the_disk_says_how_much_it_needs(tmp_path, monkeypatch, capsys):
    """PyTorch reports a full disk during a checkpoint write as "[enforce fail at inline_container.cc] unexpected
    pos"; lacy names the file and the size it needed, and keeps the previous checkpoint."""
    import shutil
    from collections import namedtuple

    import torch

    from lacy.io import checkpoints
    from lacy.io.checkpoints import AtomicCheckpointIO, read_checkpoint

    io = AtomicCheckpointIO()
    io.save_checkpoint({"w": torch.zeros(4)}, tmp_path / "last.ckpt")
    monkeypatch.setattr(checkpoints.torch, "save", lambda obj, f: (f.write(b"PK"), (_ for _ in ()).throw(
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")))[0])
    monkeypatch.setattr(shutil, "disk_usage", lambda p: namedtuple("u", "total used free")(1, 1, 0))
    with pytest.raises(SystemExit):
        entry_point(lambda: io.save_checkpoint({"w": torch.zeros(2**20)}, tmp_path / "last.ckpt"))()
    line = capsys.readouterr().err
    assert "last.ckpt: lacy could not write it: the disk is full; 0 MiB free there, 4 MiB needed" in line
    monkeypatch.undo()
    assert torch.equal(read_checkpoint(tmp_path / "last.ckpt")["w"], torch.zeros(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_world_written_onto_a_full_small_filesystem(tmp_path, capsys):
    """The real thing where the machine lets the test mount a 64 KiB tmpfs: ``python -m lacy.world --out`` fills it,
    gets one line and exit 2, and leaves no temporary file; with space it writes the world."""
    from lacy.world import main

    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("this machine does not let the test mount a tmpfs")
    try:
        with pytest.raises(SystemExit) as e:
            entry_point(lambda: main(["--out", str(small / "world")]))()
        line = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(line.splitlines()) == 1 and "the disk is full" in line
        assert not [p for p in (small / "world").iterdir() if p.name.startswith(".")]
    finally:
        subprocess.run(["umount", str(small)], check=True)
    main(["--out", str(tmp_path / "world")])
    assert (tmp_path / "world" / "kb.json").is_file()


def test_a_refused_read_is_not_reported_as_a_refused_write():
    """Only lacy's writers mark their errors: an EACCES from reading (an unreadable corpus) stays what it is."""
    import errno

    from lacy.errors import write_refused

    assert write_refused(OSError(errno.EACCES, "Permission denied", "/data/corpus.jsonl")) is None
    written = OSError(errno.EACCES, "Permission denied", "/data/cache/x.npy")
    written.lacy_write = True
    assert "permission denied" in str(write_refused(written))
    assert "read-only" in str(write_refused(OSError(errno.EROFS, "Read-only file system", "/ro/digests.jsonl")))
