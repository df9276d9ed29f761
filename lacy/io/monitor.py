"""TensorBoard, the project's monitor: Lightning's default logger without the cards that say nothing, and the
figures and texts ``main.py test`` puts next to its scalars so a run can be read in the browser."""
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

BIOS_SHOWN = 3  # bios per cascade row in TensorBoard's text tab (all of them are in the JSON files)


class Monitor(TensorBoardLogger):
    """Lightning's default TensorBoard logger minus two cards: ``hp_metric`` (always -1: no run declares one)
    and ``epoch`` (always 0 in these step-budgeted runs), so the call rate, the losses and P(<CALL>) come first."""

    def __init__(self, save_dir, **kwargs):
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(save_dir, **kwargs)

    def log_metrics(self, metrics, step=None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)

    def _get_next_version(self) -> int:
        """The next ``version_N``, claimed by creating its folder (``mkdir`` is atomic): two runs started
        together on one ``default_root_dir`` took the same version_0 and mixed their files (Lightning #11418).
        Rank 0 claims; the other ranks of a run only read the number (Lightning broadcasts rank 0's log_dir)."""
        version = super()._get_next_version()
        if rank_zero_only.rank != 0:
            return version
        root = Path(self.root_dir)  # <save_dir>/<name>, where Lightning lists the versions
        root.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                (root / f"version_{version}").mkdir()
                return version
            except FileExistsError:
                version += 1


class ProgressBar(RichProgressBar):
    """Lightning's default progress bar, without "Epoch 0/-2" in a step-budgeted run (lacy.TokenBudget sets
    max_epochs to -1: the run ends by steps, and Rich printed max_epochs - 1)."""

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is None or self.trainer.max_epochs < 0:
            return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"
        return super()._get_train_description(current_epoch)


def use_monitor(trainer):
    """Put :class:`Monitor` in place of Lightning's default logger (``logger: true``: a plain TensorBoardLogger in
    ``<default_root_dir>/lightning_logs``), same folder and version, and :class:`ProgressBar` in place of a
    plain ``RichProgressBar`` (Lightning's default; one configured with options of its own is replaced too, with
    the defaults); any other configured logger or progress bar stays."""
    default = trainer.loggers[0] if len(trainer.loggers) == 1 else None
    if type(default) is TensorBoardLogger and default.name == "lightning_logs" and \
            Path(default.save_dir) == Path(trainer.default_root_dir):
        trainer.loggers = [Monitor(default.save_dir, name=default.name, version=default._version)]
    trainer.callbacks = [ProgressBar() if type(cb) is RichProgressBar else cb for cb in trainer.callbacks]
    return trainer


def _writers(trainer) -> list:
    if not trainer.is_global_zero:
        return []
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def log_text(trainer, tag: str, markdown: str) -> None:
    """Markdown (tables render) under TensorBoard's Text tab, at the current step."""
    for writer in _writers(trainer):
        writer.add_text(tag, markdown, trainer.global_step)


def log_image(trainer, tag: str, png: str | Path) -> None:
    """A PNG file (e.g. the FactScore-vs-call-rate plot) under TensorBoard's Images tab."""
    writers = _writers(trainer)
    if writers:
        import matplotlib.image  # here: only when an image is logged (~1 s import)

        image = matplotlib.image.imread(str(png))[..., :3]  # RGB floats in [0, 1], (H, W, 3)
        for writer in writers:
            writer.add_image(tag, image, trainer.global_step, dataformats="HWC")


def log_bios(trainer, prefix: str, bios: dict[str, list[dict]], n: int = BIOS_SHOWN) -> None:
    """The first ``n`` bios of each cascade row (``{"prompt"|"title", "text"}``, partner pieces in [brackets]) as
    text ``<prefix>_bios/<row>``."""
    for row, items in bios.items():
        lines = [f"**{b.get('prompt') or b.get('title', '')}** {b['text']}" for b in items[:n]]
        log_text(trainer, f"{prefix}_bios/{row}", "partner's words in [brackets]\n\n" + "\n\n".join(lines))
