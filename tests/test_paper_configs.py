"""The shipped configs compose as documented: each strategy config is configs/base/common.yaml plus its own
strategy (nothing of the shared setup repeated), every key is commented where it is set; the paper-scale configs
parse, and their token budget reproduces the paper's step counts."""
import importlib
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import baselines
from baselines import Vanilla
from lacy import LaCy, TokenBudget
from lacy.cli import cli_main

# strategy config -> its selection strategy (the first callback)
STRATEGIES = {"lacy": LaCy, "vanilla": Vanilla, "random_calls": baselines.RandomCalls, "loss_only": baselines.LossOnly,
              "spacy_only": baselines.SpacyOnly, "rho1": baselines.Rho1, "spacy_ref": baselines.SpacyRef,
              "llm_judge": baselines.LLMJudge}
SHARED_CALLBACKS = ["lacy.ExportHF", "lacy.ModelCheckpoint",
                    "lightning.pytorch.callbacks.LearningRateMonitor"]
COMMON = yaml.safe_load(Path("configs/base/common.yaml").read_text())


def printed(args, capsys) -> dict:
    with pytest.raises(SystemExit) as e:
        cli_main([*args, "--print_config"])
    assert e.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def leaves(tree: dict, prefix: str = "") -> dict:
    """{dotted key: value} of a nested config; lists and empty mappings are values."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def own(name: str) -> dict:
    """A strategy config's own keys: all but its include of the shared setup, which comes first."""
    config = yaml.safe_load(Path(f"configs/{name}.yaml").read_text())
    assert next(iter(config)) == "config" and config.pop("config") == "base/common.yaml"
    return config


def test_the_top_level_configs_are_the_strategies():
    assert set(STRATEGIES) == {p.stem for p in Path("configs").glob("*.yaml")}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_config_is_its_strategy_on_the_shared_setup(name, capsys):
    """`main.py fit --config configs/<name>.yaml` alone: the strategy first, then the shared callbacks, and every
    key of configs/base/common.yaml that the strategy does not set itself."""
    cfg = printed(["fit", "--config", f"configs/{name}.yaml"], capsys)
    first, *rest = [c["class_path"] for c in cfg["trainer"]["callbacks"]]
    module, _, cls = first.rpartition(".")
    assert getattr(importlib.import_module(module), cls) is STRATEGIES[name] and rest == SHARED_CALLBACKS
    resolved, mine = leaves(cfg), set(own(name))
    shared = {k: v for k, v in leaves(COMMON).items() if k not in mine}
    assert shared and {k: resolved[k] for k in shared} == shared
    assert (cfg["data"]["annotators"] is None) == ("data.annotators" not in mine)


def test_strategy_configs_repeat_nothing_of_the_shared_setup():
    """Each strategy config sets only its callbacks list (and the annotators it reads), overriding, not repeating,
    the shared setup; what two of them have in common is only the paths of the shared pieces (configs/base/)."""
    common = leaves(COMMON)
    configs = {name: own(name) for name in STRATEGIES}
    for name, config in configs.items():
        assert set(config) <= {"trainer.callbacks", "data.annotators"}, name
        assert all(common.get(key, object()) != value for key, value in config.items()), name
        paths = [item for items in config.values() for item in items if isinstance(item, str)]
        assert all(Path("configs", p).is_file() and p.startswith("base/") for p in paths), name
    for a in configs:
        for b in configs:
            if a < b:
                for key in set(configs[a]) & set(configs[b]):
                    inline = [item for item in configs[a][key] if isinstance(item, dict)]
                    assert not [item for item in inline if item in configs[b][key]], (a, b, key)


def test_every_key_is_commented_where_it_is_set():
    """litgpt style: a line that sets a value says what it means (a class_path line may say it in the header)."""
    bare = [f"{path}:{num}: {line}" for path in sorted(Path("configs").rglob("*.yaml"))
            for num, line in enumerate(path.read_text().splitlines(), 1)
            if re.match(r"^\s*(- )?[\w.+-]+: \S", line) and "#" not in line
            and not re.match(r"^\s*(- )?class_path:", line)]
    assert not bare


@pytest.mark.parametrize("extra", [[], ["--config", "configs/paper/fsdp.yaml"]])
@pytest.mark.parametrize("name, size", [("gpt2-334m-lacy", ("gpt2-334m", 0.0003, 14)),
                                        ("gpt2-1.3b-lacy", ("gpt2-1.3b", 0.0002, 7))])
def test_paper_config_prints(name, size, extra, capsys):
    """Each size config is configs/paper/common.yaml with its own preset, learning rate and micro-batch."""
    cfg = printed(["fit", "--config", f"configs/paper/{name}.yaml", *extra], capsys)
    assert (cfg["model"]["preset"], cfg["model"]["lr"], cfg["data"]["batch_size"]) == size
    assert cfg["data"]["block_size"] == 1024 and cfg["data"]["bpe_vocab_size"] == 32000
    assert cfg["model"]["warmup_steps"] == 2000 and cfg["trainer"]["callbacks"][0]["class_path"] == "lacy.LaCy"
    assert ("FSDPStrategy" in str(cfg["trainer"]["strategy"])) == bool(extra)


def planned_steps(strategy, gpus=8, micro=14):
    loop = SimpleNamespace(epoch_loop=SimpleNamespace(max_steps=-1), max_epochs=None)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(batch_size=micro, block_size=1024), world_size=gpus,
                              accumulate_grad_batches=1, callbacks=[strategy], fit_loop=loop)
    module = SimpleNamespace(strategy=strategy)  # the module knows the run's strategy (so do the callbacks)
    TokenBudget(max_tokens=38_993_920_000, global_batch_size=112, count="gradient").setup(trainer, module, "fit")
    return loop.epoch_loop.max_steps, trainer.accumulate_grad_batches


def test_budget_gives_the_papers_340k_and_400k_steps():
    assert planned_steps(Vanilla()) == (340_000, 1)
    steps, accumulation = planned_steps(LaCy(call_rate=0.15), gpus=4)
    assert accumulation == 2 and steps == pytest.approx(400_000, rel=0.01)  # paper: ~400k
