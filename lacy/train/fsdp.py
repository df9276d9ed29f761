"""FSDP for any SLM family: one FSDP unit per decoder layer, whichever family the SLM is.

Lightning's FSDPStrategy takes the wrap policy at construction, before the model exists, so a config cannot name
the layer class of a model it has not built yet (it hard-coded GPT-2's ``GPT2Block``). :class:`DecoderLayers` is a
torch auto-wrap policy that finds the class when FSDP first calls it with the root module
(lacy.model.slm.decoder_layer: the block transformers keeps whole).
"""
from torch import nn
from transformers import PreTrainedModel

from lacy.model.slm import decoder_layer


class DecoderLayers:
    """``auto_wrap_policy`` of ``lightning.pytorch.strategies.FSDPStrategy`` (configs/paper/fsdp.yaml)."""

    def __init__(self):
        self.layer: type[nn.Module] | None = None

    def __call__(self, module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
        if self.layer is None:  # the first call is FSDP's root: the LightningModule holding the SLM
            self.layer = decoder_layer(next(m for m in module.modules() if isinstance(m, PreTrainedModel)))
        return True if recurse else isinstance(module, self.layer)
