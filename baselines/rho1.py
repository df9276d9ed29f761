"""Rho-1 adapted to calls (paper section 5): delegate the tokens with the LOWEST excess loss.

    excess_i = loss_SLM(x_i) - loss_ref(x_i)        (signed)

Rho-1 trains on high-excess tokens (learnable, not yet learned); the paper's adaptation turns the 15% with
the lowest excess loss into ``<CALL>``. The reference is any causal LM with the same tokenizer (default: a
vanilla model trained on the same corpus: ``make reference``).

Two modes, one selector reading ``batch["ref_loss"]``:
  * online (``Rho1(reference=...)``): one no-grad forward of the reference per step, in eval mode, on the
    training device, attached to the batch before the step;
  * precomputed (``Rho1()`` + the :class:`ReferenceLoss` annotator): an offline pass over the same packed
    blocks writes ``ref_loss`` as a side array (sharded and resumable like the spaCy annotation).
Both see the same block context, so they select the same tokens (tests/test_rho1.py).
"""
import numpy as np
import torch

from lacy.data.annotation import BlockAnnotator
from lacy.errors import UsageError
from lacy.model.loading import ModelSource, load_model, model_source
from lacy.train.objective import token_losses
from lacy.selection.topk import budget, select_top
from lacy.selection.strategy import CallStrategy


def rho1_select(loss, ref_loss, valid, k):
    """The k valid targets with the lowest excess loss (SLM loss - reference loss)."""
    return select_top(-(loss - ref_loss), valid, k)


REFERENCE_HINT = ("train one with `make reference` (a vanilla SLM exported to runs/reference/hf) or point "
                  "`reference` at a Hugging Face folder")


def reference_source(path: str) -> ModelSource:
    return model_source(path, "reference model folder", REFERENCE_HINT)


def load_reference(path: str, device) -> torch.nn.Module:
    return load_model(reference_source(path)).to(device).eval().requires_grad_(False)


@torch.no_grad()
def reference_loss(model, batch: dict, has_call_row: bool) -> torch.Tensor:
    """The reference's -log p_noCALL of each target, exactly as the SLM's loss is computed."""
    logits = model(input_ids=batch["input_ids"]).logits
    if not has_call_row:  # a reference without <CALL>: p_noCALL is its plain softmax
        logits = torch.cat([logits, logits.new_full(logits.shape[:-1] + (1,), float("-inf"))], dim=-1)
    return token_losses(logits, batch["labels"]).target


class Rho1(CallStrategy):
    """Args:
        reference: local Hugging Face folder of the reference model for the online mode (same tokenizer;
            ``<CALL>`` row optional); null = precomputed mode, reading ``ref_loss`` from data.annotators.
        call_rate: fraction of each batch's valid targets that become ``<CALL>``.
    """

    requires = ("ref_loss",)

    def __init__(self, reference: str | None = None, call_rate: float = 0.15):
        super().__init__(call_rate)
        self.reference_path = reference
        self.reference = None

    def setup(self, trainer, pl_module, stage):
        super().setup(trainer, pl_module, stage)
        if self.reference_path is None:
            return
        self.reference = load_reference(self.reference_path, pl_module.device)
        rows, ours = self.reference.config.vocab_size, pl_module.hparams.vocab_size
        if rows not in (ours, ours - 1):
            raise UsageError(f"Rho1 reference {self.reference_path!r} has {rows} vocabulary rows; the SLM has {ours} "
                             "(<CALL> included): the reference must use the same tokenizer")
        self.has_call_row = rows == ours

    def _attach(self, trainer, batch):
        """Runs in the trainer's precision context (bf16 autocast on GPUs), like the SLM's own forward:
        callbacks sit outside it, and a full-precision reference forward costs more than the SLM's own step
        (measured on a GPU in docs/scaling.md, section 3)."""
        if self.reference is not None:
            with trainer.precision_plugin.forward_context():
                batch["ref_loss"] = reference_loss(self.reference, batch, self.has_call_row).float()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._attach(trainer, batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._attach(trainer, batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._attach(trainer, batch)

    def select(self, batch, losses, step):
        k = budget(losses.valid, self.call_rate)
        return rho1_select(losses.target, self.side(batch, "ref_loss").float(), losses.valid, k)


class ReferenceLoss(BlockAnnotator):
    """Precomputed reference losses (batch key ``ref_loss``), one offline pass over the training blocks.

    Args:
        reference: local Hugging Face folder of the reference model (same tokenizer).
        has_call_row: the reference's last row is ``<CALL>`` (true for models trained and exported by lacy).
        device: where the pass runs (``auto``: a GPU when there is one).
        chunk_blocks: blocks per forward and per resumable chunk.
    """

    name, dtype = "ref_loss", np.float32

    def __init__(self, reference: str, has_call_row: bool = True, device: str = "auto", chunk_blocks: int = 64):
        self.reference, self.has_call_row, self.chunk_blocks = reference, has_call_row, chunk_blocks
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self._model = None

    def fingerprint(self) -> str:
        return f"{reference_source(self.reference).digest()}-{int(self.has_call_row)}"

    def annotate_blocks(self, batch):
        if self._model is None:
            self._model = load_reference(self.reference, self.device)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return reference_loss(self._model, batch, self.has_call_row).cpu().numpy()
