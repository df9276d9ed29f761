"""The command line: ``python main.py fit|validate|test --config configs/<strategy>.yaml``."""
from lightning.pytorch.cli import LightningCLI

from lacy.checkpoint_io import AtomicCheckpointIO, last_checkpoint, read_checkpoint, resolve_checkpoint
from lacy.data import CorpusDataModule
from lacy.module import CallLM


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


def cli_main(args=None, run: bool = True) -> LaCyCLI:
    return LaCyCLI(
        CallLM, CorpusDataModule, args=args, run=run,
        save_config_kwargs={"overwrite": True},
        # The sampler shards data across ranks itself (and resumes mid-epoch); checkpoints are atomic.
        trainer_defaults={
            "use_distributed_sampler": False,
            "plugins": [{"class_path": f"{AtomicCheckpointIO.__module__}.{AtomicCheckpointIO.__name__}"}],
        },
    )
