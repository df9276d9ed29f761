"""spaCy-only ablation: a uniform sample of fact tokens, LaCy's budget, no loss signal."""
from lacy.selection.lacy_rule import LaCy
from lacy.selection.topk import uniform_scores


class SpacyOnly(LaCy):
    """LaCy with random scores instead of the SLM's loss: isolates what the loss signal adds."""

    def scores(self, batch, losses, step):
        return uniform_scores(losses.valid.shape, self.step_seed(step), losses.valid.device)
