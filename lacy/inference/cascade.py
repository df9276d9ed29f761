"""The cascade (method.md sections 5-6): the SLM writes, and where its call score fires, a partner writes the
next piece; the SLM continues from the extended context.

- Batched greedy decoding with a KV cache. Every step appends exactly one token per row: the SLM's argmax,
  or the next token of a partner piece (a multi-token piece is queued and fed one token per step, so rows
  stay in lockstep and the SLM's cache always holds the text as written).
- Call scores: ``call`` = log-odds of ``<CALL>`` against the other tokens (CALL logit minus logsumexp of the
  rest; p(<CALL>) saturates, the log-odds do not); ``uncertainty`` = minus the max log-probability of the
  other tokens (for models trained without ``<CALL>``: the "confidence cascade").
- Decisions (``CallPolicy``): never, always, argmax (``<CALL>`` is the top token), fixed threshold, or a
  **budget**: a running quantile of recent
  scores, at the level the target rate needs given the mean piece length, lowered while the budget is under-
  spent and never exceeding a token credit (target rate x tokens written minus tokens spent), so the realised
  share of partner tokens tracks the target online.
- Partners (who writes a call's piece: a model with the same tokenizer, one with its own, or the KB lookup)
  are in lacy/inference/partners.py.
"""
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from lacy.errors import UsageError
from lacy.model.call_token import call_logit, noncall_logits



def call_scores(logits: torch.Tensor, score: str) -> torch.Tensor:
    """(B, V) logits, ``<CALL>`` last -> (B,) scores; higher = more reason to call."""
    logits = logits.float()
    rest = torch.logsumexp(noncall_logits(logits), dim=-1)
    if score == "call":
        return call_logit(logits) - rest
    if score == "uncertainty":
        return -(noncall_logits(logits).max(dim=-1).values - rest)
    raise UsageError(f"call score {score!r}: use 'call' (models trained with <CALL>) or 'uncertainty'")


@dataclass
class CallPolicy:
    """When to call. Args:
        mode: never | always | argmax (``<CALL>`` is the most likely token) | threshold | budget.
        rate: budget mode: target share of generated tokens written by the partner (paper: 22%).
        threshold: threshold mode: call when the score exceeds it.
        score: call | uncertainty (see ``call_scores``).
        window: budget mode: the quantile is taken over the last ``window`` decision scores (scores drift
            as a text goes on).
        catch_up: budget mode: an underspent budget lowers the threshold so the calls owed are made within
            about this many decoding steps.
    """
    mode: str = "budget"
    rate: float = 0.22
    threshold: float = 0.0
    score: str = "call"
    window: int = 512
    catch_up: int = 2
    _history: list = field(default_factory=list, repr=False)
    _seen: list = field(default_factory=list, repr=False)  # every budget decision's score, for calibration
    _fired: int = 0

    def __post_init__(self):
        if self.mode not in ("never", "always", "argmax", "threshold", "budget"):
            raise UsageError(f"cascade policy mode {self.mode!r}: use never, always, argmax, threshold or budget")
        if not 0.0 <= self.rate <= 1.0:
            raise UsageError(f"cascade policy rate={self.rate} must be in [0, 1]")

    def decide(self, scores: torch.Tensor, written: int, spent: int, piece_len: float) -> torch.Tensor:
        """Which of these rows call now, given the tokens written so far and how many the calls have spent."""
        if self.mode == "never" or len(scores) == 0:
            return torch.zeros(len(scores), dtype=torch.bool)
        if self.mode == "always":
            return torch.ones(len(scores), dtype=torch.bool)
        if self.mode in ("threshold", "argmax"):  # argmax: the Cascade passes CALL logit - max other logit
            return scores > self.threshold
        s = scores.numpy()
        self._history = (self._history + s.tolist())[-self.window:]
        self._seen += s.tolist()
        # share of decisions that must fire when a call writes piece_len tokens and pieces are not decisions
        q = self.rate / (piece_len * (1 - self.rate) + self.rate) if self.rate < 1 else 1.0
        credit = self.rate * (written + len(s)) - spent  # tokens the budget still owes (negative: overspent)
        q += max(0.0, credit) / (piece_len * len(s) * self.catch_up)  # under budget: repay within catch_up steps
        thr = np.quantile(self._history, max(0.0, 1.0 - q))
        fire = torch.zeros(len(s), dtype=torch.bool)
        for i in np.argsort(-s, kind="stable"):
            if s[i] < thr or credit <= 0:
                break
            fire[i] = True
            credit -= piece_len
        self._fired += int(fire.sum())
        return fire

    def calibrated_threshold(self) -> float:
        """After a budget run: the fixed threshold that fires the same share of decisions (for ``threshold``
        mode on other prompts: the paper's "threshold calibrated on a disjoint prompt set")."""
        if not self._seen:
            raise ValueError("calibrated_threshold needs a budget-mode generation first")
        return float(np.quantile(self._seen, 1.0 - self._fired / len(self._seen)))


@dataclass
class Generation:
    prompt: str
    text: str                      # the continuation, decoded
    tokens: list[int]              # the continuation's ids
    from_partner: list[bool]       # per token: written by the partner
    calls: list[int]               # token indices where a call fired (start of a partner piece)

    @property
    def spent(self) -> int:
        """Tokens charged to calls, as ``CascadeStats.spent`` counts them: the partner's tokens, plus one per
        empty call (a call whose token the SLM wrote because the partner had nothing to say)."""
        return sum(self.from_partner) + sum(not self.from_partner[i] for i in self.calls if i < len(self.from_partner))

    @property
    def call_rate(self) -> float:
        return self.spent / max(1, len(self.tokens))

    def token_spans(self, tokenizer) -> tuple[str, list[tuple[int, int]]]:
        """The bio as the tokens decode one by one (prompt included), and each generated token's character
        span in it: where claims found in the text meet the tokens (and who wrote them)."""
        text, spans = self.prompt, []
        for t in self.tokens:
            piece = tokenizer.decode([t])
            spans.append((len(text), len(text) + len(piece)))
            text += piece
        return text, spans

    def partner_texts(self, tokenizer) -> list[str]:
        """The text of each run of partner-written tokens, in order."""
        text, spans = self.token_spans(tokenizer)
        runs: list[str] = []
        for i, ((a, b), p) in enumerate(zip(spans, self.from_partner)):
            if p:
                if i == 0 or not self.from_partner[i - 1]:
                    runs.append("")
                runs[-1] += text[a:b]
        return runs

    def marked(self, tokenizer) -> str:
        """The continuation with each partner-written run of tokens in [brackets], for reading cascade text."""
        text, spans = self.token_spans(tokenizer)
        out, inside = "", False
        for (a, b), p in zip(spans, self.from_partner):
            piece = text[a:b]
            if p != inside:  # open after the piece's leading space, close before the next piece
                lead = len(piece) - len(piece.lstrip()) if p else 0
                piece, inside = piece[:lead] + ("[" if p else "]") + piece[lead:], p
            out += piece
        return out + ("]" if inside else "")


@dataclass
class CascadeStats:
    generated: int = 0
    partner_tokens: int = 0
    calls: int = 0
    empty_calls: int = 0           # calls where the partner had nothing to say (the SLM's token was used)
    slm_tokens_processed: int = 0
    partner_tokens_processed: int = 0
    slm_flops: float = 0.0
    partner_flops: float = 0.0

    @property
    def spent(self) -> int:
        """Tokens charged to the call budget: the partner's, plus one per call it could not answer."""
        return self.partner_tokens + self.empty_calls

    @property
    def call_rate(self) -> float:
        return self.spent / max(1, self.generated)


class Cascade:
    """SLM + partner generation. Args:
        slm: HF causal LM whose last vocabulary row is ``<CALL>``.
        tokenizer: the SLM's tokenizer (with ``<CALL>``).
        partner: ModelPartner | TextPartner | LookupPartner | None (never call).
        policy: CallPolicy.
        batch_size: prompts decoded together.
    """

    def __init__(self, slm, tokenizer, partner=None, policy: CallPolicy | None = None, batch_size: int = 32):
        self.slm, self.tok, self.partner = slm.eval(), tokenizer, partner
        self.policy = policy or CallPolicy(mode="never")
        if self.partner is None and self.policy.mode != "never":
            raise UsageError("a cascade that calls needs a partner (cascade partner is null)")
        self.batch_size = batch_size
        self.slm_params = sum(p.numel() for p in slm.parameters())
        self.stats = CascadeStats()

    def generate(self, prompts: list[str], max_new_tokens: int = 96, stop_at_eos: bool = True) -> list[Generation]:
        """Greedy continuations of each prompt, written after the document separator (EOS).

        Batching changes nothing a row writes (with a row-independent policy: never, always, argmax, threshold;
        the budget policy shares its running budget across rows by design): each row writes up to
        ``min(max_new_tokens, n_positions - its own length)`` tokens (EOS + prompt + text never outgrow the
        SLM's context). A prompt that leaves no room for one new token is cut from the left to its last
        ``n_positions - 1`` tokens (its document-start EOS goes first), with a warning, and writes one token."""
        out = []
        for i in range(0, len(prompts), self.batch_size):
            out += self._generate_batch(prompts[i:i + self.batch_size], max_new_tokens, stop_at_eos)
        self.stats.slm_flops = 2.0 * self.slm_params * self.stats.slm_tokens_processed
        if self.partner is not None:
            self.stats.partner_tokens_processed = self.partner.tokens_processed
            self.stats.partner_flops = 2.0 * self.partner.params * self.partner.tokens_processed
        return out

    def _prompt_ids(self, prompts: list[str], room: int) -> list[list[int]]:
        """EOS + each prompt's ids, a prompt too long for the context cut from the left (see ``generate``)."""
        ids = [[self.tok.eos_token_id] + self.tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        long = [i for i, x in enumerate(ids) if len(x) >= room]
        if long:
            warnings.warn(f"cascade: {len(long)} prompt(s) of {max(len(ids[i]) for i in long)} tokens leave no room "
                          f"in the SLM's context of {room}; each keeps its last {room - 1} tokens")
        return [x[-(room - 1):] if len(x) >= room else x for x in ids]

    @torch.no_grad()
    def _generate_batch(self, prompts: list[str], max_new: int, stop_at_eos: bool) -> list[Generation]:
        eos, pad = self.tok.eos_token_id, self.tok.eos_token_id
        room = self.slm.config.max_position_embeddings
        ids = self._prompt_ids(prompts, room)
        B, width = len(ids), max(map(len, ids))
        budget = [min(max_new, room - len(x)) for x in ids]  # each row's own room: batching changes nothing
        inp = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -1:]  # each row's last position
        out = self.slm(input_ids=inp, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                       use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1]
        self.stats.slm_tokens_processed += int(mask.sum())
        if self.partner is not None:
            self.partner.reset(prompts)
        context = [list(x) for x in ids]
        gens = [Generation(p, "", [], [], []) for p in prompts]
        queue: list[list[int]] = [[] for _ in range(B)]
        done = [n <= 0 for n in budget]
        while not all(done):
            step = torch.full((B,), pad, dtype=torch.long)
            free = [b for b in range(B) if not done[b] and not queue[b]]
            fire = torch.zeros(0, dtype=torch.bool)
            if free:
                scores = (call_logit(logits[free]) - noncall_logits(logits[free]).max(-1).values
                          if self.policy.mode == "argmax"
                          else call_scores(logits[free], self.policy.score))
                piece_len = self.stats.spent / max(1, self.stats.calls)
                fire = self.policy.decide(scores, self.stats.generated, self.stats.spent, piece_len or 1.0)
            slm_choice = noncall_logits(logits).argmax(-1)  # the SLM's own word: p_noCALL
            for j, b in enumerate(free):
                if fire[j]:
                    self.stats.calls += 1
                    gens[b].calls.append(len(gens[b].tokens))
                    queue[b] = self.partner.piece_for(b, context[b])
                    if not queue[b]:
                        self.stats.empty_calls += 1
            for b in range(B):
                if done[b]:
                    continue
                from_partner = bool(queue[b])
                tok = queue[b].pop(0) if queue[b] else int(slm_choice[b])
                step[b] = tok
                context[b].append(tok)
                gens[b].tokens.append(tok)
                gens[b].from_partner.append(from_partner)
                self.stats.generated += 1
                self.stats.partner_tokens += from_partner
                if tok == eos and stop_at_eos or len(gens[b].tokens) >= budget[b]:
                    done[b] = True
                    queue[b] = []  # a piece cut by the row's end is not written
            if all(done):
                break
            live = torch.tensor([not d for d in done])
            # finished rows are fed a masked pad at their last position (never past the context)
            mask = torch.cat([mask, live[:, None].to(mask.dtype)], dim=1)
            pos = pos + live[:, None]
            out = self.slm(input_ids=step[:, None], attention_mask=mask, position_ids=pos, past_key_values=past,
                           use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1]
            self.stats.slm_tokens_processed += int(live.sum())
        for g in gens:
            body = g.tokens[:-1] if g.tokens and g.tokens[-1] == eos else g.tokens
            g.text = self.tok.decode(body)
        return gens
