"""FSDP wraps one unit per decoder layer of whatever family the SLM is (configs/paper/fsdp.yaml)."""
import subprocess
import sys

import pytest
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.strategies import FSDPStrategy

from lacy.train.fsdp import DecoderLayers

WRAP = """
import os, torch, torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from lacy.model.slm import build_slm
from lacy.train.fsdp import DecoderLayers
from lacy.train.module import CallLM
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
dist.init_process_group("gloo", rank=0, world_size=1)
for kw in ({"preset": "micro"}, {"architecture": {"family": "llama", "hidden_size": 32, "intermediate_size": 64,
                                                  "num_hidden_layers": 3, "num_attention_heads": 4}}):
    wrapped = FSDP(CallLM(vocab_size=301, block_size=32, **kw), auto_wrap_policy=DecoderLayers(),
                   device_id=torch.device("cpu"))
    units = [type(m.module).__name__ for m in wrapped.modules() if isinstance(m, FSDP)]
    print(units)
"""


@pytest.mark.slow
def test_the_policy_wraps_each_decoder_layer_of_gpt2_and_llama():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    run = subprocess.run([sys.executable, "-c", "import sys\n" + WRAP, port], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    gpt2, llama = [eval(line) for line in run.stdout.strip().splitlines()[-2:]]
    assert gpt2 == ["CallLM", "GPT2Block", "GPT2Block"] and llama == ["CallLM"] + ["LlamaDecoderLayer"] * 3


def test_the_fsdp_overlay_builds_the_policy():
    init = yaml.safe_load(open("configs/paper/fsdp.yaml"))["trainer"]["strategy"]["init_args"]
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(FSDPStrategy, "strategy", fail_untyped=False)
    strategy = parser.instantiate_classes(parser.parse_object({"strategy": init})).strategy
    assert isinstance(strategy.kwargs["auto_wrap_policy"], DecoderLayers)
