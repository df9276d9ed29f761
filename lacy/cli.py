"""The command line: ``python main.py fit|validate|test --config configs/<strategy>.yaml``.

main.py runs :func:`cli_main` inside ``lacy.errors.entry_point``: a lacy ``UsageError`` (raised while the config's
classes are built, where jsonargparse wraps it, or later) prints as one line and exits 2.
"""
import importlib
import sys
from argparse import ArgumentError

import yaml
from lightning.pytorch.cli import LightningCLI

from lacy.checkpoint_io import AtomicCheckpointIO, last_checkpoint, read_checkpoint, resolve_checkpoint
from lacy.data import CorpusDataModule
from lacy.errors import UsageError
from lacy.module import CallLM
from lacy.monitor import use_monitor
from lacy.strategy import one_strategy


class LaCyCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The vocabulary (<CALL> included) and the context are stated once, by the data.
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.block_size", "model.block_size")

    def _parse_ckpt_path(self) -> None:
        """Lightning parses a checkpoint's hyper-parameters over the config, so ``--model.lr`` on resume was
        silently ignored. lacy keeps this run's config: :meth:`check_ckpt_path` refuses what a checkpoint cannot
        change (architecture, tokenizer) and ``CallLM`` applies the rest (lr, schedule) on resume."""

    def check_ckpt_path(self) -> None:
        """Before ``fit|validate|test|predict`` (and so before data annotation): resolve ``--ckpt_path last`` and a
        run folder to a ``.ckpt`` file, and refuse an unreadable or unsafe checkpoint, another architecture or
        another tokenizer, with one line."""
        config = self.config_init[self.subcommand]
        given = config.get("ckpt_path")
        if not given or given in ("best", "hpc"):
            return
        path = resolve_checkpoint(last_checkpoint(self.trainer) if given == "last" else given)
        self.model.check_checkpoint(read_checkpoint(path, mmap=True), path, getattr(self.datamodule, "tokenizer", None))
        config["ckpt_path"] = str(path)

    before_fit = before_validate = before_test = before_predict = check_ckpt_path

    def before_instantiate_classes(self) -> None:
        """Config checks that need no data, before any work (tokenizing, annotating, training, testing)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        callbacks = config.trainer.callbacks or []
        one_strategy([_class(cb) for cb in (callbacks if isinstance(callbacks, list) else [callbacks])])

    def instantiate_trainer(self, **kwargs):
        return use_monitor(super().instantiate_trainer(**kwargs))  # TensorBoard without the empty cards


def _class(callback) -> type:
    """A callback's class, from its parsed config (``class_path``) or the object itself."""
    path = getattr(callback, "class_path", None)
    if path is None:
        return type(callback)
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def cli_main(args=None, run: bool = True) -> LaCyCLI:
    """Parse, build and run. A parse error (unknown option, missing config file, a value of the wrong type) is a
    ``UsageError`` carrying jsonargparse's message, not its usage dump."""
    raise_errors = {"exit_on_error": False}
    try:
        return LaCyCLI(
            CallLM, CorpusDataModule, args=args, run=run,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={**raise_errors, **{c: raise_errors for c in LaCyCLI.subcommands()}},
            # The sampler shards data across ranks itself (and resumes mid-epoch); checkpoints are atomic.
            trainer_defaults={
                "use_distributed_sampler": False,
                "plugins": [{"class_path": f"{AtomicCheckpointIO.__module__}.{AtomicCheckpointIO.__name__}"}],
            },
        )
    except ArgumentError as e:
        raise UsageError(yaml_syntax_error(args) or
                         f"{str(e).rstrip('.')}; the options: python main.py fit|validate|test --help") from e


def yaml_syntax_error(args: list[str] | None) -> str | None:
    """jsonargparse reports a YAML syntax error in a ``--config`` file as one in "<unicode string>"; this names
    the file, line and column (the first ``--config`` that does not parse), or None when all of them parse."""
    args = sys.argv[1:] if args is None else args
    paths = [b for a, b in zip(args, args[1:]) if a == "--config"] + [
        a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                yaml.safe_load(f)
        except OSError:
            continue  # a missing file: jsonargparse's own message names it
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
            return f"{where}: YAML syntax error: {e.problem or e.context}; fix the file"
    return None
