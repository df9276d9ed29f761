"""The multi-process path on CPU: 2-process DDP (gloo) through the real CLI against the 1-process run."""
import glob
import json
import os
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import small_run_args


def last_scalars(log_root):
    (events,) = glob.glob(f"{log_root}/lightning_logs/version_0/events.out.tfevents.*")
    ea = EventAccumulator(events)
    ea.Reload()
    return {tag: ea.Scalars(tag)[-1].value for tag in ea.Tags()["scalars"]}


def run(tmp_path, name, devices, batch_size, bios_path):
    args = small_run_args(bios_path, tmp_path / name)
    args[args.index("--data.cache_dir") + 1] = str(tmp_path / "cache")  # one cache for both runs
    args += ["--data.block_size", "40", "--data.batch_size", str(batch_size), "--trainer.max_steps", "6",
             "--trainer.val_check_interval", "6", "--trainer.log_every_n_steps", "1",
             "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
             "--trainer.strategy", "ddp" if devices > 1 else "auto"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    done = subprocess.run([sys.executable, "main.py", "fit", "--config", "configs/lacy.yaml", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return last_scalars(tmp_path / name)



@pytest.mark.slow
@pytest.mark.xdist_group("ddp")  # `make test`: both two-process tests on one worker, one after the other
def test_two_process_ddp_matches_one_process(tmp_path, bios_path):
    # same global batch: 2 ranks x 2 sequences vs 1 x 4; 15% of 80 and of 160 targets are whole numbers
    one = run(tmp_path, "one", 1, 4, bios_path)
    two = run(tmp_path, "two", 2, 2, bios_path)
    assert one["train/call_rate"] == pytest.approx(0.15) and two["train/call_rate"] == pytest.approx(0.15)
    assert two["train/tokens_seen"] == one["train/tokens_seen"] == 6 * 4 * 40
    # LaCy picks top-k per rank instead of over the whole batch, so the runs differ slightly, not much
    assert two["val/loss"] == pytest.approx(one["val/loss"], rel=0.02)


@pytest.mark.slow
@pytest.mark.xdist_group("ddp")
def test_two_process_ddp_test_writes_the_evaluation(tmp_path):
    """`main.py test` under 2-process DDP with the world overlay: the evaluation's report reads the log folder
    (a collective) on every rank, so the run ends instead of deadlocking, and rank 0 writes one kb_eval.json."""
    args = ["test", "--config", "configs/vanilla.yaml", "--config", "configs/world/slm.yaml",
            "--data.corpus.init_args.people", "12", "--data.corpus.init_args.val_docs", "4", "--data.block_size", "32",
            "--data.bpe_vocab_size", "300", "--data.cache_dir", str(tmp_path / "cache"), "--model.preset", "micro",
            "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu", "--trainer.devices", "2",
            "--trainer.strategy", "ddp", "--trainer.callbacks.partner=null", "--trainer.callbacks.limit=2",
            "--trainer.callbacks.max_new_tokens=4", "--trainer.callbacks.modes=[never]"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    try:
        done = subprocess.run([sys.executable, "main.py", *args], env=env, capture_output=True, text=True,
                              timeout=240)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"main.py test under DDP did not finish (deadlock?): {str(e.stderr)[-2000:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = glob.glob(f"{tmp_path}/lightning_logs/version_*/kb_eval.json")
    res = json.loads(open(result).read())
    assert set(res) == {"slm", "slm_alone"} and res["slm_alone"]["call_rate"] == 0.0
    assert done.stdout.count("(written to ") == 1  # rank 0 only
    assert any(t.startswith("world/slm_alone/") for t in last_scalars(tmp_path))
