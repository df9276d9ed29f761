"""A non-finite loss stops training with one line naming the first bad step and the newest checkpoint before it.

The module records the first bad step on the device (no per-step host sync) and checks it every
``finite_check_interval`` steps and before every checkpoint is written, so a bad checkpoint is never saved.
"""
from pathlib import Path

from lacy.errors import UsageError
from lacy.io.checkpoints import read_checkpoint


class NonFiniteLossError(UsageError, RuntimeError):
    """The loss went non-finite; the message names the step, the checkpoint to resume from and the fix (one line
    at the command line, as every UsageError)."""


def raise_if_non_finite(step: int, trainer, fit_started: float) -> None:
    """``step``: the first step whose loss was not finite (-1: none). Raises :class:`NonFiniteLossError`."""
    if step < 0:
        return
    found = checkpoint_before(step, trainer, fit_started)
    resumed = trainer.ckpt_path
    resumed_bad = resumed and int(read_checkpoint(resumed, mmap=True)["global_step"]) >= step
    held = (f"the checkpoint this run resumed from ({resumed}) already gives it, as does every checkpoint "
            f"from step {step} on" if resumed_bad
            else f"checkpoints from step {step} on (last.ckpt included) hold the weights that gave it")
    advice = (f"Last good checkpoint: {found[0]} (step {found[1]}); resume from it with a lower --model.lr "
              f"({held})" if found else f"No checkpoint was saved before it ({held}): start a new run, "
              "without --ckpt_path, with a lower --model.lr")
    raise NonFiniteLossError(f"non-finite training loss at step {step}; stopping. {advice}, or check the data")


def checkpoint_before(bad_step: int, trainer, fit_started: float) -> tuple[str, int] | None:
    """The newest checkpoint of this run (or of the run it resumed from, in that folder) saved before step
    ``bad_step``, the first non-finite loss, as (path, step). One saved at ``bad_step`` holds the weights that
    produced it. ``fit_started``: wall time of the fit's start (files written since are this run's)."""
    paths = []
    resumed = trainer.ckpt_path
    if resumed:
        paths += Path(resumed).parent.glob("*.ckpt")
    for cb in trainer.checkpoint_callbacks:  # ModelCheckpoint tracks only its newest file: list its folder
        folder = getattr(cb, "dirpath", None)
        if folder and Path(folder).is_dir():
            paths += [p for p in Path(folder).glob("*.ckpt") if p.stat().st_mtime >= fit_started]
    steps = {}
    for p in set(map(str, paths)):
        try:
            steps[p] = int(read_checkpoint(p, mmap=True)["global_step"])
        except (UsageError, KeyError):
            continue
    good = [(p, s) for p, s in steps.items() if s < bad_step]
    # among equals, an interval checkpoint: last.ckpt may be overwritten later
    return max(good, key=lambda ps: (ps[1], not Path(ps[0]).stem.startswith("last")), default=None)
