"""TensorBoard as a person sees it: the first cards are the run's own metrics, not `epoch` or `hp_metric`."""
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lacy.cli import cli_main
from lacy.io.monitor import Monitor
from tests.helpers import small_run_args


def test_fit_logs_no_empty_cards(bios_path, tmp_path):
    cli = cli_main(["fit", "--config", "configs/random_calls.yaml", "--trainer.log_every_n_steps", "1",
                    *small_run_args(bios_path, tmp_path)])
    assert type(cli.trainer.logger) is Monitor
    assert Path(cli.trainer.log_dir) == tmp_path / "lightning_logs" / "version_0"  # Lightning's default folder
    tags = EventAccumulator(cli.trainer.log_dir).Reload().Tags()
    assert {"train/loss", "train/call_rate", "train/p_call_at_calls"} <= set(tags["scalars"])
    assert not {"epoch", "hp_metric"} & set(tags["scalars"])


def test_vanilla_logs_nothing_about_call_targets_it_does_not_have(bios_path, tmp_path):
    """Issue 30: Vanilla logged p(<CALL>) at call targets 0.0 with no call target; nothing to score is no scalar."""
    cli = cli_main(["fit", "--config", "configs/vanilla.yaml", "--trainer.log_every_n_steps", "1",
                    *small_run_args(bios_path, tmp_path)])
    tags = set(EventAccumulator(cli.trainer.log_dir).Reload().Tags()["scalars"])
    assert {"train/loss", "train/call_rate", "train/p_call_at_noncalls"} <= tags
    assert not {t for t in tags if t.endswith(("p_call_at_calls", "loss_call_targets", "orig_loss_at_calls"))}


def test_a_configured_logger_stays(bios_path, tmp_path):
    cli = cli_main(["fit", "--config", "configs/vanilla.yaml", "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                    "--trainer.logger.save_dir", str(tmp_path / "csv"), *small_run_args(bios_path, tmp_path)])
    assert type(cli.trainer.logger).__name__ == "CSVLogger"


def test_two_runs_started_together_claim_different_versions(tmp_path):
    """Issue 29: two fits on one default_root_dir both took version_0. The version folder is claimed by mkdir:
    two processes started at once get two versions (and in one process, a second logger the next one)."""
    import subprocess
    import sys

    code = ("import sys, time; from lacy.io.monitor import Monitor; m = Monitor(sys.argv[1]); "
            "time.sleep(max(0, float(sys.argv[2]) - time.time())); print(m.version)")
    start = __import__("time").time() + 8  # both imported and waiting, then both ask at once
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(start)], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    versions = sorted(int(p.communicate(timeout=120)[0]) for p in procs)
    assert versions == [0, 1] and sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == [
        "version_0", "version_1"]
    assert Monitor(str(tmp_path)).version == 2 and Monitor(str(tmp_path)).version == 3


def test_a_step_budgeted_run_shows_no_negative_epoch(bios_path, tmp_path):
    """Issue 28: Rich printed "Epoch 0/-2" (max_epochs - 1) in a TokenBudget run, whose max_epochs is -1."""
    from lacy.io.monitor import ProgressBar

    cli = cli_main(["fit", "--config", "configs/vanilla.yaml", *small_run_args(bios_path, tmp_path)[:-4],
                    "--trainer.default_root_dir", str(tmp_path), "--trainer.callbacks+=lacy.TokenBudget",
                    "--trainer.callbacks.max_tokens", "256"])
    bar = cli.trainer.progress_bar_callback
    assert type(bar) is ProgressBar and cli.trainer.max_epochs == -1
    assert bar._get_train_description(0).strip() == "Epoch 0"
