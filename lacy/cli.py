"""The command line: ``python main.py fit|validate|test --config configs/<strategy>.yaml``.

main.py runs :func:`cli_main` inside ``lacy.errors.entry_point``: a lacy ``UsageError`` (raised while the config's
classes are built, where jsonargparse wraps it, or later) prints as one line and exits 2.
"""
import sys
from argparse import ArgumentError
from pathlib import Path

import yaml
from jsonargparse import ArgumentParser as ConfigParser
from lightning.pytorch.cli import LightningCLI

from lacy.data.datamodule import CorpusDataModule
from lacy.errors import UsageError
from lacy.io.checkpoints import AtomicCheckpointIO, last_checkpoint, read_checkpoint, resolve_checkpoint
from lacy.io.monitor import Monitor, use_monitor
from lacy.io.run_config import SaveConfig, check_replaceable_config
from lacy.io.unique_keys import DuplicateKey, UniqueKeyLoader
from lacy.selection.strategy import find_strategy
from lacy.train.module import CallLM
from lacy.worlds.closed_world import ClosedWorld


class LaCyCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The vocabulary (<CALL> included) and the context are stated once, by the data.
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.block_size", "model.block_size")
        parser.link_arguments("data.cache_dir", "model.cache_dir")  # where a GGUF / hub model is materialised

    def _parse_ckpt_path(self) -> None:
        """Lightning internal, overridden (LightningCLI has no switch for it): Lightning parses a checkpoint's
        hyper-parameters over the config, so ``--model.lr`` on resume was silently ignored. lacy keeps this run's
        config: :meth:`check_ckpt_path` refuses what a checkpoint cannot change (architecture, tokenizer) and
        ``CallLM`` applies the rest (lr, schedule) on resume."""

    def check_ckpt_path(self) -> None:
        """Before ``fit|validate|test|predict`` (and so before data annotation): resolve ``--ckpt_path last`` and a
        run folder to a ``.ckpt`` file, and refuse an unreadable or unsafe checkpoint, another architecture or
        another tokenizer, with one line."""
        config = self.config_init[self.subcommand]
        given = config.get("ckpt_path")
        if not given or given in ("best", "hpc"):
            return
        path = resolve_checkpoint(last_checkpoint(self.trainer) if given == "last" else given)
        checkpoint = read_checkpoint(path, mmap=True)
        self.model.check_checkpoint(checkpoint, path, getattr(self.datamodule, "tokenizer", None))
        if self.subcommand == "fit" and isinstance(self.datamodule, CorpusDataModule):  # before annotation
            self.datamodule.check_resume(checkpoint.get(type(self.datamodule).__qualname__), path, self.trainer,
                                         early=True)
        config["ckpt_path"] = str(path)

    def before_run(self) -> None:
        """Before ``fit|validate|test|predict``: the checkpoint (:meth:`check_ckpt_path`) and the config.yaml the
        run will write into its log folder, which must be absent or lacy's own (lacy/io/run_config.py)."""
        fresh = isinstance(self.trainer.logger, Monitor)  # its version folder is new: claimed when first named
        if self.save_config_callback and not fresh and self.trainer.log_dir is not None:
            check_replaceable_config(Path(self.trainer.log_dir) / "config.yaml")
        self.check_ckpt_path()

    before_fit = before_validate = before_test = before_predict = before_run

    def before_instantiate_classes(self) -> None:
        """Config checks that need no data, before any work (tokenizing, annotating, training, testing)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        callbacks = config.trainer.callbacks or []
        find_strategy(callbacks if isinstance(callbacks, list) else [callbacks])
        if config.trainer.logger is False:  # the log folder is default_root_dir (or the working directory)
            check_replaceable_config(Path(config.trainer.default_root_dir or ".") / "config.yaml")
        if self.subcommand == "fit" and config.trainer.max_steps == 0:
            raise UsageError("trainer.max_steps=0: a fit of no steps would save and export the random initial "
                             "weights; give a number of steps >= 1 (or -1 to train by trainer.max_epochs)")

    def instantiate_trainer(self, **kwargs):
        return use_monitor(super().instantiate_trainer(**kwargs))  # TensorBoard without the empty cards


class _DataOnly(LaCyCLI):
    """The CLI's parse (every ``--config`` merged as ``main.py`` merges them), building only the DataModule."""

    def instantiate_classes(self) -> None:
        parser = ConfigParser(exit_on_error=False)
        parser.add_class_arguments(CorpusDataModule, "data")
        self.datamodule = parser.instantiate_classes(parser.parse_object({"data": self.config.data.as_dict()})).data


def data_from_configs(configs: list[str]) -> CorpusDataModule:
    """The DataModule a training config and its overlays (in order) describe, e.g. ``configs/lacy.yaml`` +
    ``configs/world/dense.yaml``; nothing is tokenized yet. UsageError for a missing file or a bad config."""
    for path in configs:
        if not Path(path).is_file():
            raise UsageError(f"--config {path}: no such file; give a training YAML, e.g. configs/lacy.yaml")
    args = [a for path in configs for a in ("--config", path)]
    return cli_main(args, run=False, cli=_DataOnly, where=f"--config {' '.join(configs)}").datamodule


def world_from_configs(configs: list[str]):
    """The ClosedWorld (and the BPE size) a training config and its overlays describe. UsageError when their
    data.corpus is not a ClosedWorld."""
    data = data_from_configs(configs)
    if not isinstance(data.corpus, ClosedWorld):
        raise UsageError(f"--config {' '.join(configs)}: data.corpus is {type(data.corpus).__name__}, not "
                         "lacy.ClosedWorld; give a world overlay such as configs/world/slm.yaml")
    return data.corpus, data.bpe_vocab_size


def cli_main(args=None, run: bool = True, cli: type[LaCyCLI] = LaCyCLI, where: str | None = None) -> LaCyCLI:
    """Parse, build and run. A parse error (unknown option, missing config file, a value of the wrong type) is a
    ``UsageError`` carrying jsonargparse's message, not its usage dump (after ``where``, when given: the configs
    another command read)."""
    raise_errors = {"exit_on_error": False}
    problem = config_file_error(args)  # before jsonargparse, which keeps a repeated key's last value silently
    if problem:
        raise UsageError(problem)
    try:
        return cli(
            CallLM, CorpusDataModule, args=args, run=run,
            save_config_callback=SaveConfig, save_config_kwargs={"overwrite": True},  # lacy's own file only
            parser_kwargs={**raise_errors, **{c: raise_errors for c in LaCyCLI.subcommands()}},
            # The sampler shards data across ranks itself (and resumes mid-epoch); checkpoints are atomic.
            trainer_defaults={
                "use_distributed_sampler": False,
                "plugins": [{"class_path": f"{AtomicCheckpointIO.__module__}.{AtomicCheckpointIO.__name__}"}],
            },
        )
    except ArgumentError as e:
        fix = f"{where}: {str(e).rstrip('.')}" if where else \
            f"{str(e).rstrip('.')}; the options: python main.py fit|validate|test --help"
        raise UsageError(fix) from e


def config_file_error(args: list[str] | None) -> str | None:
    """jsonargparse reports a YAML syntax error in a config file as one in "<unicode string>" and keeps the last
    of a repeated key silently; this names the file, line and column of the first ``--config`` file, or a file it
    includes (``config: base/common.yaml``, a list item naming a YAML file), that does not parse or repeats a
    key in one mapping. None when all of them are fine."""
    args = sys.argv[1:] if args is None else args
    paths = [b for a, b in zip(args, args[1:]) if a in ("--config", "-c")] + [
        a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    seen: set[Path] = set()
    return next((found for path in paths if (found := _file_error(Path(path), seen))), None)


def _file_error(path: Path, seen: set[Path]) -> str | None:
    if path in seen:
        return None
    seen.add(path)
    try:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.load(f, Loader=UniqueKeyLoader)
    except (OSError, UnicodeDecodeError):
        return None  # a missing or unreadable file: jsonargparse's own message names it
    except DuplicateKey as e:
        return (f"{path}:{e.line}: the key {e.key!r} is written twice in one block; YAML would keep the last and "
                "drop the first silently: merge them into one")
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        return f"{where}: YAML syntax error: {e.problem or e.context}; fix the file"
    except yaml.YAMLError as e:  # a character YAML does not allow (a control byte): no mark
        return f"{path}: not readable as YAML ({' '.join(str(e).split())[:200]}); fix the file"
    included = [v for v in _values(loaded) if isinstance(v, str) and v.endswith((".yaml", ".yml"))]
    return next((found for name in included if (found := _file_error(path.parent / name, seen))), None)


def _values(node):
    """Every value of a loaded YAML document (mapping values and list items, at any depth)."""
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield child
        yield from _values(child)
