"""The paper-scale configs parse, and their token budget reproduces the paper's step counts."""
from types import SimpleNamespace

import pytest

from baselines import Vanilla
from lacy.budget import TokenBudget
from lacy.cli import cli_main
from lacy.lacy_strategy import LaCy


@pytest.mark.parametrize("extra", [[], ["--config", "configs/paper/fsdp.yaml"]])
@pytest.mark.parametrize("name", ["gpt2-334m-lacy", "gpt2-1.3b-lacy"])
def test_paper_config_prints(name, extra, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["fit", "--config", f"configs/paper/{name}.yaml", *extra, "--print_config"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "block_size: 1024" in out and "bpe_vocab_size: 32000" in out
    assert ("FSDPStrategy" in out) == bool(extra)


def planned_steps(strategy, gpus=8, micro=14):
    loop = SimpleNamespace(epoch_loop=SimpleNamespace(max_steps=-1), max_epochs=None)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(batch_size=micro, block_size=1024), world_size=gpus,
                              accumulate_grad_batches=1, callbacks=[strategy], fit_loop=loop)
    TokenBudget(max_tokens=38_993_920_000, global_batch_size=112, count="gradient").setup(trainer, None, "fit")
    return loop.epoch_loop.max_steps, trainer.accumulate_grad_batches


def test_budget_gives_the_papers_340k_and_400k_steps():
    assert planned_steps(Vanilla()) == (340_000, 1)
    steps, accumulation = planned_steps(LaCy(call_rate=0.15), gpus=4)
    assert accumulation == 2 and steps == pytest.approx(400_000, rel=0.01)  # paper: ~400k
