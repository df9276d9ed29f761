"""The command line: ``python main.py fit|validate|test --config configs/<strategy>.yaml``."""
from lightning.pytorch.cli import LightningCLI

from lacy.checkpoint_io import AtomicCheckpointIO
from lacy.data import CorpusDataModule
from lacy.module import CallLM
from lacy.monitor import use_monitor


class LaCyCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The vocabulary (<CALL> included) and the context are stated once, by the data.
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.block_size", "model.block_size")

    def instantiate_trainer(self, **kwargs):
        return use_monitor(super().instantiate_trainer(**kwargs))  # TensorBoard without the empty cards


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
