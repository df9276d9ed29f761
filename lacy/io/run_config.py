"""The run's ``config.yaml``: what LightningCLI saves into the log folder, replaced only while it is lacy's own.

Lightning writes the resolved config into ``trainer.log_dir`` with overwrite on; with ``--trainer.logger false``
and no ``default_root_dir`` that is the working directory, where it replaced a user's ``config.yaml`` (even the
``--config`` file itself; Lightning #17168). lacy stamps the file it writes with a first comment line holding the
SHA-256 of the rest, and refuses (one line, before any work) to replace a ``config.yaml`` that has no stamp or was
edited since.
"""
import hashlib
from pathlib import Path

from lightning.pytorch.cli import SaveConfigCallback

from lacy.errors import UsageError

STAMP = "# written by lacy (main.py): this run's resolved config; sha256 of the lines below: "


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def check_replaceable_config(path: Path) -> None:
    """UsageError unless ``path`` is absent or a config.yaml lacy wrote and nobody edited."""
    if not path.exists():
        return
    try:
        first, _, body = path.read_text(encoding="utf-8").partition("\n")
    except (OSError, UnicodeDecodeError):
        first, body = "", ""
    if first.startswith(STAMP) and first[len(STAMP):].strip() == _digest(body):
        return
    why = "was edited after lacy wrote it" if first.startswith(STAMP) else "was not written by lacy"
    raise UsageError(f"{path.absolute()}: {why}; the run would replace it with its resolved config: give "
                     "--trainer.default_root_dir a folder of its own (or keep the default logger), or move the file")


class SaveConfig(SaveConfigCallback):
    """Lightning's SaveConfigCallback whose file carries lacy's stamp (module docstring)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        saved = self.already_saved
        path = Path(trainer.log_dir or ".") / self.config_filename  # every rank: log_dir is a collective
        super().setup(trainer, pl_module, stage)
        if not saved and trainer.is_global_zero and path.is_file():
            body = path.read_text(encoding="utf-8")
            path.write_text(STAMP + _digest(body) + "\n" + body, encoding="utf-8")
