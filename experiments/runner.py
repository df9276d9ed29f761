"""One run of a study: ``main.py fit`` (resumed from its last checkpoint when interrupted) then ``main.py test``,
with the run's configs written into its folder. A ``fit.done`` marker ends a fit (the HF export exists mid-run);
the result file ends the run (a run with it is skipped). One CPU thread per job: oversubscribed OpenMP slows two
jobs on 2 cores 2-5x.
"""
import copy
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
    from lacy.cli import world_from_configs

    export = latest_export(Path(folder))
    if export is None:
        raise UsageError(f"{folder}: no Hugging Face export (lightning_logs/version_*/hf); fit the run first")
    return export, world_from_configs([str(export.parent / "config.yaml")])[0]


def read_config(path: str | Path) -> dict:
    """A config file as ``main.py`` reads it alone, as one nested dict: a ``config: <file>`` key includes that file
    underneath (read the same way), each other top-level key replaces what it names there (a dotted key such as
    ``trainer.callbacks`` one key; a nested section its whole section, as jsonargparse does), and a list item that
    is a path to a YAML file is that file's content. Paths are relative to the file that names them."""
    path = Path(path)
    own = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(own, dict):
        raise UsageError(f"{path}: a YAML mapping (trainer:, model:, data:) was expected")
    out = read_config(path.parent / own.pop("config")) if "config" in own else {}
    for key, value in own.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _read_items(value, path.parent)
    return out


def _read_items(value, where: Path):
    """``value`` with every list item that names a YAML file replaced by the file's content (``read_config``)."""
    if isinstance(value, dict):
        return {k: _read_items(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [read_config(where / v) if isinstance(v, str) and v.endswith((".yaml", ".yml")) else _read_items(v, where)
                for v in value]
    return value


def merged_list(configs: list[dict], section: str, key: str) -> list[dict]:
    """The list ``section.key`` (e.g. trainer.callbacks) that configs given in this order end with: a ``key``
    replaces the list, a ``key+`` appends to it (a copy; items as the configs give them)."""
    items: list = []
    for config in configs:
        part = config.get(section) or {}
        if key in part:
            items = list(part[key] or [])
        if f"{key}+" in part:
            added = part[f"{key}+"]
            items += added if isinstance(added, list) else [added]
    return copy.deepcopy(items)


def set_init_args(items: list[dict], name: str, **values) -> int:
    """Set ``values`` in the init_args of every item whose class is called ``name`` (the last part of its
    class_path: ``KBEvaluation`` matches lacy.KBEvaluation); returns how many items matched."""
    found = [item for item in items if item["class_path"].rsplit(".", 1)[-1] == name]
    for item in found:
        item["init_args"] = {**(item.get("init_args") or {}), **values}
    return len(found)


def write_run_configs(folder: Path, sources: list[str], overlay: dict) -> list[str]:
    """Write the run's configs into its folder, so the run is reproducible from the folder alone: each source
    config as ``main.py`` reads it (``read_config``: includes and item files expanded, under the source's file
    name), then ``study.yaml``, the run's own changes over them (seed, TokenBudget, a strategy's or an
    evaluation's init_args, ...: a list it changes is given whole, as jsonargparse replaces a list). Returns
    the config paths in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in sources:
        path = folder / Path(src).name
        path.write_text(f"# {src} as main.py reads it (its includes expanded), written by experiments/runner.py\n"
                        + yaml.safe_dump(read_config(src), sort_keys=False))
        paths.append(str(path))
    path = folder / "study.yaml"
    path.write_text(f"# this run's changes over {', '.join(Path(p).name for p in paths)} (a list is given whole)\n"
                    + yaml.safe_dump(overlay, sort_keys=False))
    return paths + [str(path)]


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
