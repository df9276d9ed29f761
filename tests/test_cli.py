"""Every shipped config trains through the real CLI (on a tiny corpus and model), and prints its config."""
from pathlib import Path

import pytest

from lacy.cli import cli_main
from lacy.model.gpt2 import build_slm
from lacy.data.tokenizer import train_bpe
from tests.helpers import configs_copy, small_run_args

CONFIGS = sorted(p.stem for p in Path("configs").glob("*.yaml"))




def test_every_strategy_has_a_config():
    assert {"vanilla", "random_calls", "loss_only", "lacy", "spacy_only", "rho1", "spacy_ref", "llm_judge"} <= set(CONFIGS)


def config_for_test(name, tmp_path) -> str:
    """The shipped config, with real micro models (random weights) in place of the reference model and the
    SmolLM2 judge, so every config trains in seconds."""
    copy = configs_copy(tmp_path) / f"{name}.yaml"
    text = copy.read_text()
    if "runs/reference/hf" in text:
        build_slm("micro", 301, 32).save_pretrained(tmp_path / "reference")
        text = text.replace("runs/reference/hf", str(tmp_path / "reference"))
    if "model: smollm2" in text:
        tok = train_bpe(["a tiny judge " * 20], vocab_size=280)
        build_slm("micro", len(tok), 1024).save_pretrained(tmp_path / "judge")
        tok.save_pretrained(tmp_path / "judge")
        text = text.replace("model: smollm2", f"model: {tmp_path / 'judge'}").replace("max_new_tokens: 96", "max_new_tokens: 4")
    copy.write_text(text)
    return str(copy)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_trains_and_exports(name, bios_path, tmp_path):
    cli = cli_main(["fit", "--config", config_for_test(name, tmp_path), *small_run_args(bios_path, tmp_path)])
    assert cli.trainer.global_step == 3
    assert cli.model.hparams.vocab_size == cli.datamodule.vocab_size == 301  # linked, stated once
    log_dir = Path(cli.trainer.log_dir)
    assert (log_dir / "hf" / "model.safetensors").exists() and (log_dir / "config.yaml").exists()
    assert list(log_dir.glob("events.out.tfevents.*"))


def test_print_config(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["fit", "--config", "configs/lacy.yaml", "--print_config"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "lacy.LaCy" in out and "lacy.SpacyFactAnnotator" in out


def test_resume_by_last_or_folder_applies_lr_and_refuses_another_architecture(bios_path, tmp_path):
    """``--ckpt_path last`` is the newest run's last.ckpt; ``--model.lr`` given on resume applies (Lightning
    would parse the checkpoint's hyper-parameters over it); another preset is refused before any training."""
    from lacy.errors import UsageError

    args = ["--config", "configs/vanilla.yaml", *small_run_args(bios_path, tmp_path)]
    with pytest.raises(UsageError, match="--ckpt_path last: no last.ckpt in"):
        cli_main(["fit", *args, "--ckpt_path", "last"])
    first = cli_main(["fit", *args])
    assert first.trainer.global_step == 3 and first.model.hparams.lr == 0.002
    resumed = cli_main(["fit", *args, "--trainer.max_steps", "5", "--ckpt_path", "last", "--model.lr", "0.0005"])
    assert resumed.trainer.global_step == 5 and resumed.trainer.ckpt_path == str(
        Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt")
    assert resumed.model.hparams.lr == 0.0005
    assert resumed.trainer.lr_scheduler_configs[0].scheduler.base_lrs == [0.0005, 0.0005]
    run = Path(resumed.trainer.log_dir)
    checked = cli_main(["validate", *args, "--ckpt_path", str(run)])  # a run folder: its checkpoints/last.ckpt
    assert checked.trainer.ckpt_path == str(run / "checkpoints" / "last.ckpt")
    with pytest.raises(UsageError, match="--model.preset: this run asks for 'tiny' but .* trained with 'micro'"):
        cli_main(["fit", *args, "--ckpt_path", "last", "--model.preset", "tiny"])
    assert not (run.parent / "version_3").exists()  # refused before the trainer made a run folder
    # issue 29: another batch size moved the data position (24 blocks of the epoch skipped); refused, one line
    fix = ".*resume with the checkpoint's settings, or drop --ckpt_path"
    for option, value, message in (("--data.batch_size", "2", r"data.batch_size 4 \(checkpoint\) -> 2 \(this run\)" + fix),
                                   ("--data.seed", "7",
                                    "(the corpus, tokenizer, data.seed|tokenizer is not the one .* trained with)"),
                                   ):
        with pytest.raises(UsageError, match=message):  # another seed: another BPE split, so the tokenizer check
            cli_main(["fit", *args, "--trainer.max_steps", "6", "--ckpt_path", "last", option, value])
    assert not (run.parent / "version_3").exists()  # refused before any data work
    # the accumulation is known only after setup (lacy.TokenBudget may set it): refused at the restore
    with pytest.raises(UsageError, match="trainer.accumulate_grad_batches 1 .checkpoint. -> 2" + fix):
        cli_main(["fit", *args, "--trainer.max_steps", "6", "--ckpt_path", "last", "--trainer.accumulate_grad_batches",
                  "2"])


def test_no_logger_leaves_a_users_hf_folder_alone(bios_path, tmp_path, monkeypatch):
    """``--trainer.logger false`` in a folder holding the user's ``hf``: the export goes next to the checkpoints."""
    config = tmp_path / "nolog.yaml"  # the shipped configs' LearningRateMonitor needs a logger
    config.write_text("trainer:\n  callbacks:\n    - class_path: baselines.Vanilla\n    - class_path: lacy.ExportHF\n"
                      "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
                      "      init_args: {save_last: true}\n")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "notes.txt").write_text("mine")
    cli_main(["fit", "--config", str(config), *small_run_args(bios_path, tmp_path), "--trainer.logger", "false"])
    assert [p.name for p in (tmp_path / "hf").iterdir()] == ["notes.txt"]
    assert (tmp_path / "checkpoints" / "hf" / "model.safetensors").is_file()


def test_a_yaml_syntax_error_in_an_included_config_names_that_file(tmp_path):
    """A strategy config includes configs/base/common.yaml (``config:``) and list items naming YAML files: a syntax
    error in any of them is reported with its own file, line and column, not jsonargparse's "<unicode string>"."""
    from lacy.errors import UsageError

    (tmp_path / "base").mkdir()
    (tmp_path / "top.yaml").write_text("config: base/common.yaml\ntrainer.callbacks:\n  - base/item.yaml\n")
    (tmp_path / "base" / "common.yaml").write_text("model:\n  lr: 0.1\n")
    (tmp_path / "base" / "item.yaml").write_text("class_path: [unclosed\n")
    with pytest.raises(UsageError, match=r"base/item.yaml:2:1: YAML syntax error"):
        cli_main(["fit", "--config", str(tmp_path / "top.yaml")])


@pytest.mark.parametrize("where", ["top.yaml", "base/common.yaml"])
def test_a_key_written_twice_in_a_config_is_one_line(where, tmp_path):
    """Issue 29: a second ``model:`` block silently replaced the first (YAML keeps the last); in the file given or
    one it includes, the repeated key is named with its file and line."""
    from lacy.errors import UsageError

    (tmp_path / "base").mkdir()
    (tmp_path / "top.yaml").write_text("config: base/common.yaml\nseed_everything: 3\n")
    (tmp_path / "base" / "common.yaml").write_text("model:\n  lr: 0.1\n")
    (tmp_path / where).write_text((tmp_path / where).read_text() + "model:\n  lr: 0.2\nmodel:\n  warmup_steps: 5\n")
    line = 5 if where == "top.yaml" else 3  # the first repeat of "model:" in that file
    with pytest.raises(UsageError, match=rf"{where}:{line}: the key 'model' is written twice in one block"):
        cli_main(["fit", "--config", str(tmp_path / "top.yaml")])


def test_the_duplicate_key_check_accepts_yaml_merges_and_names_unreadable_bytes(tmp_path):
    """A merge ("<<: *base" then an override) is no duplicate; a control byte is one line, not a raw ReaderError."""
    from lacy.cli import config_file_error

    (tmp_path / "merge.yaml").write_text("base: &b {lr: 0.1}\nmodel:\n  <<: *b\n  lr: 0.2\n")
    assert config_file_error(["-c", str(tmp_path / "merge.yaml")]) is None
    (tmp_path / "bad.yaml").write_bytes(b"model:\n  lr: 0.1\x07\n")
    assert "bad.yaml: not readable as YAML" in config_file_error(["-c", str(tmp_path / "bad.yaml")])


def test_a_fit_of_zero_steps_is_refused_before_any_work(bios_path, tmp_path):
    from lacy.errors import UsageError

    with pytest.raises(UsageError, match=r"trainer.max_steps=0: .*random initial weights"):
        cli_main(["fit", "--config", "configs/vanilla.yaml", *small_run_args(bios_path, tmp_path),
                  "--trainer.max_steps", "0"])
    assert not (tmp_path / "cache").exists()



def test_a_users_config_yaml_in_the_log_folder_is_never_replaced(bios_path, tmp_path, monkeypatch):
    """Issue 29: with no logger and no default_root_dir the log folder is the working directory, and Lightning's
    config dump replaced the user's config.yaml, even the --config file itself. lacy stamps its own file and
    refuses (one line, before any data work) one it did not write or that was edited since."""
    from lacy.errors import UsageError
    from lacy.io.run_config import STAMP

    configs = configs_copy(tmp_path)
    monkeypatch.chdir(configs)
    (configs / "config.yaml").write_text((configs / "vanilla.yaml").read_text())  # the user's own config
    mine = (configs / "config.yaml").read_bytes()
    args = [*small_run_args(bios_path, tmp_path)[:-2], "--trainer.logger", "false"]  # no default_root_dir: cwd
    with pytest.raises(UsageError, match=r"config.yaml: was not written by lacy; the run would replace it"):
        cli_main(["fit", "--config", "config.yaml", *args])
    assert (configs / "config.yaml").read_bytes() == mine and not (tmp_path / "cache").exists()  # before data work
    own = tmp_path / "own"
    own.mkdir()
    monkeypatch.chdir(own)
    plain = configs / "plain.yaml"  # no LearningRateMonitor: it needs a logger
    plain.write_text((configs / "vanilla.yaml").read_text().replace("- base/lr_monitor.yaml", ""))
    for _ in range(2):  # lacy's own file, unedited: replaced by the next run
        cli_main(["fit", "--config", str(plain), *args])
        assert (own / "config.yaml").read_text().startswith(STAMP)
    (own / "config.yaml").write_text((own / "config.yaml").read_text() + "# my note\n")
    with pytest.raises(UsageError, match=r"own/config.yaml: was edited after lacy wrote it"):
        cli_main(["fit", "--config", str(plain), *args])
