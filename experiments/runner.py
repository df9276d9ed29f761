"""One run of a study: ``main.py fit`` (resumed from its last checkpoint when interrupted) then ``main.py test``,
with the run's configs written into its folder. A ``fit.done`` marker ends a fit (the HF export exists mid-run);
the result file ends the run (a run with it is skipped). One CPU thread per job: oversubscribed OpenMP slows two
jobs on 2 cores 2-5x.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lacy.errors import UsageError


def last_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("lightning_logs/version_*/checkpoints/last.ckpt"), key=os.path.getmtime)
    return found[-1] if found else None


def latest_export(folder: Path) -> Path | None:
    """The newest ``<log_dir>/hf`` export of a run folder."""
    found = sorted(folder.glob("lightning_logs/version_*/hf"), key=os.path.getmtime)
    return found[-1] if found else None


def trained_world(folder: Path):
    """(newest HF export, the ClosedWorld its fit trained on, read from the fit's saved config.yaml) of a study
    run folder; UsageError when the run has no export yet or its config is not a closed world."""
    from lacy.world import world_from_configs

    export = latest_export(Path(folder))
    if export is None:
        raise UsageError(f"{folder}: no Hugging Face export (lightning_logs/version_*/hf); fit the run first")
    return export, world_from_configs([str(export.parent / "config.yaml")])[0]


def write_run_configs(folder: Path, sources: list[str], subs: dict[str, str], seed: int,
                      budget: dict) -> list[str]:
    """Copy the run's configs into its folder with text substitutions (``key: old `` -> ``key: new ``, whole
    commented YAML lines stay readable), plus ``study.yaml``: the seed and the TokenBudget; so the run is
    reproducible from its folder alone. Returns the config paths in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in sources:
        text = Path(src).read_text()
        for a, b in subs.items():
            text = text.replace(a, b)
        (folder / Path(src).name).write_text(text)
        paths.append(str(folder / Path(src).name))
    study = {"seed_everything": seed, "trainer": {"callbacks+": [{"class_path": "lacy.budget.TokenBudget",
                                                                  "init_args": budget}]}}
    (folder / "study.yaml").write_text(yaml.safe_dump(study))
    return paths + [str(folder / "study.yaml")]


def fit_and_test(folder: Path, configs: list[str], result: str, fit_only: bool = False, test: bool = True,
                 checkpoint: Path | None = None) -> str:
    """Fit (unless ``fit.done``), then test (unless ``fit_only`` / not ``test``); returns a one-line status.
    ``checkpoint``: test this model, trained elsewhere (a reference row), and fit nothing."""
    name = folder.name
    if (folder / result).exists():
        return f"{name}: cached"
    args = [a for c in configs for a in ("--config", c)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.time()
    with open(folder / "log.txt", "a") as log:
        if checkpoint is None and not (folder / "fit.done").exists():
            last = last_checkpoint(folder)
            subprocess.run([sys.executable, "main.py", "fit", *args, "--trainer.default_root_dir", str(folder),
                            "--trainer.enable_progress_bar", "false", *(["--ckpt_path", str(last)] if last else [])],
                           env=env, stdout=log, stderr=log, check=True)
            (folder / "fit.done").touch()
        fit_s = time.time() - t0
        if fit_only or not test:
            return f"{name}: fitted in {fit_s:.0f}s"
        ckpt = checkpoint or last_checkpoint(folder)
        subprocess.run([sys.executable, "main.py", "test", *args, "--ckpt_path", str(ckpt),
                        "--trainer.default_root_dir", str(folder / "test"), "--trainer.enable_progress_bar", "false"],
                       env=env, stdout=log, stderr=log, check=True)
    (folder / "timing.json").write_text(json.dumps({"fit_and_test_s": time.time() - t0, "fit_s": fit_s}))
    return f"{name}: done in {time.time() - t0:.0f}s"
