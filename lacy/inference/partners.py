"""Cascade partners: who writes the next piece when the SLM calls.

- ``ModelPartner``: a causal LM with the SLM's tokenizer (token hand-over; a KV cache per row, prefilling only the
  tokens it has not seen);
- ``TextPartner``: any causal LM with its own tokenizer (text hand-over, re-tokenised for the SLM);
- ``LookupPartner``: the knowledge base's true continuation, an oracle that isolates *where* the SLM calls from
  *how good* the partner is.

A piece is a ``token``, a ``word`` (to the end of the word) or an ``entity`` (to the next punctuation mark).
:func:`load_partner` reads a model source (lacy/model/loading.py) and :func:`partner_for` makes the right one of it.
"""
import torch

from lacy.data.tokenizer import text_only
from lacy.errors import UsageError
from lacy.model.loading import load_hf_tokenizer, load_model, model_source
from lacy.worlds.kb import KnowledgeBase

PIECES = ("token", "word", "entity")


def _piece_stop(piece: str, text: str, first: bool) -> bool:
    """True when a token with this text ends the piece before it (it is not part of the piece)."""
    if first:
        return False
    if piece == "token":
        return True
    if piece == "word":
        return not (text[:1].isalnum())
    return any(p in text for p in ".,;?!\n")


class ModelPartner:
    """A causal LM with the SLM's tokenizer. Args:
        model: the partner (HF causal LM); a ``<CALL>`` row, if any, is never chosen.
        call_id: the ``<CALL>`` id of the shared tokenizer.
        piece: token | word | entity.
        max_piece_tokens: cap on one piece.
        cache: keep a KV cache per row and prefill only unseen tokens (False: re-read the whole context at
            every call, the cost the cache avoids; for the benchmark).
    """

    def __init__(self, model, tokenizer, piece: str = "word", max_piece_tokens: int = 8, cache: bool = True):
        if piece not in PIECES:
            raise UsageError(f"partner piece {piece!r}: use one of {PIECES}")
        self.model, self.tok, self.piece, self.max_piece = model.eval(), tokenizer, piece, max_piece_tokens
        self.cache = cache
        self.tokens_processed = 0
        self.params = sum(p.numel() for p in model.parameters())
        self._texts = {}
        self.reset([])

    def reset(self, prompts: list[str]) -> None:
        """A new batch: one row per prompt (the cascade calls it before decoding)."""
        self.state = [{"seen": 0, "past": None, "logits": None} for _ in prompts]

    def _text(self, tok_id: int) -> str:
        if tok_id not in self._texts:
            self._texts[tok_id] = self.tok.decode([tok_id])
        return self._texts[tok_id]

    @torch.no_grad()
    def _feed(self, st: dict, ids: list[int]) -> torch.Tensor:
        out = self.model(input_ids=torch.tensor([ids]), past_key_values=st["past"], use_cache=True)
        self.tokens_processed += len(ids)
        st["past"], st["seen"] = out.past_key_values, st["seen"] + len(ids)
        logits = out.logits[0, -1].float()
        n = len(self.tok)
        if logits.shape[-1] >= n:  # the partner's own <CALL> row (lacy-trained): never written
            logits = logits[: n - 1]
        return logits

    def piece_for(self, row: int, context: list[int]) -> list[int]:
        st = self.state[row]
        if not self.cache:
            st.update(seen=0, past=None)
        new = context[st["seen"]:]
        logits = self._feed(st, new) if new else st["logits"]
        out = []
        while True:
            tok = int(logits.argmax())
            if _piece_stop(self.piece, self._text(tok), not out) or tok == self.tok.eos_token_id and out:
                break
            out.append(tok)
            if len(out) >= self.max_piece or tok == self.tok.eos_token_id:
                break
            logits = self._feed(st, [tok])
        st["logits"] = logits if st["seen"] == len(context) + len(out) else None
        # the piece's last token is not fed yet: the next call prefills it with the SLM's later tokens
        return out


class TextPartner:
    """Any causal LM with its own tokenizer (e.g. SmolLM2-135M-Instruct offline, Llama 3.2 1B with internet):
    text-level hand-over. At a call it reads the context as text (no ``<CALL>``; cut from the left to its own
    context less a piece, counted in ``contexts_cut``), writes greedily up to the end of the piece, and the piece
    is re-tokenised for the SLM. Its KV cache is kept per row and cut back to the
    longest token prefix shared with the new context, so only the new text is prefilled.

    Args:
        model, tokenizer: the partner and its own tokenizer.
        slm_tokenizer: the SLM's tokenizer (decodes the context, encodes the piece).
        piece: token | word | entity (judged on the partner's text).
        max_piece_tokens: cap, in partner tokens.
    """

    def __init__(self, model, tokenizer, slm_tokenizer, piece: str = "word", max_piece_tokens: int = 8):
        if piece not in PIECES:
            raise UsageError(f"partner piece {piece!r}: use one of {PIECES}")
        self.model, self.tok, self.slm_tok = model.eval(), tokenizer, slm_tokenizer
        self.piece, self.max_piece = piece, max_piece_tokens
        self.tokens_processed = self.contexts_cut = 0  # contexts_cut: calls whose text was cut from the left
        self.params = sum(p.numel() for p in model.parameters())
        self.reset([])

    def reset(self, prompts: list[str]) -> None:
        """A new batch: one row per prompt (the cascade calls it before decoding)."""
        self.state = [{"ids": [], "past": None} for _ in prompts]

    def prompt(self, row: int, text: str) -> str:
        """What the partner reads at a call on ``row`` whose text so far is ``text``: the text itself (a
        retrieval partner puts passages before it)."""
        return text

    @torch.no_grad()
    def _feed(self, st: dict, ids: list[int]) -> torch.Tensor:
        out = self.model(input_ids=torch.tensor([ids]), past_key_values=st["past"], use_cache=True)
        self.tokens_processed += len(ids)
        st["past"], st["ids"] = out.past_key_values, st["ids"] + ids
        return out.logits[0, -1].float()

    def piece_for(self, row: int, context: list[int]) -> list[int]:
        st = self.state[row]
        text = self.slm_tok.decode(context, skip_special_tokens=True)
        start = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        ids = [start] + self.tok(self.prompt(row, text), add_special_tokens=False)["input_ids"]  # a document start
        room = getattr(self.model.config, "max_position_embeddings", None)
        if room and len(ids) + self.max_piece > room:  # longer than the partner's context: its last tokens
            self.contexts_cut += 1
            ids = [start] + ids[len(ids) + self.max_piece + 1 - room:]
        keep = next((i for i, (a, b) in enumerate(zip(st["ids"], ids)) if a != b), min(len(st["ids"]), len(ids)))
        keep = min(keep, len(ids) - 1)  # at least one token is fed, so there are fresh logits
        if st["past"] is not None and keep < len(st["ids"]):
            st["past"].crop(keep - len(st["ids"]))  # negative = tokens to drop (old and new transformers agree)
            st["ids"] = st["ids"][:keep]
        if keep == 0:
            st["past"], st["ids"] = None, []
        logits = self._feed(st, ids[keep:])
        out: list[int] = []
        while len(out) < self.max_piece:
            tok = int(logits.argmax())
            if tok == self.tok.eos_token_id or _piece_stop(self.piece, self.tok.decode([tok]), not out):
                break
            out.append(tok)
            logits = self._feed(st, [tok])
        piece = self.tok.decode(out)
        if not piece:
            return []
        # the SLM's tokens for the piece as they follow this text (a prefix-space tokenizer would otherwise
        # start a word-continuing piece with a space); the piece alone where the boundary merges, which can
        # put a space inside a word the partner continued (a limit of text hand-over)
        base = self.slm_tok(text, add_special_tokens=False)["input_ids"]
        full = self.slm_tok(text + piece, add_special_tokens=False)["input_ids"]
        return full[len(base):] if full[:len(base)] == base else self.slm_tok(piece, add_special_tokens=False)[
            "input_ids"]


class LookupPartner:
    """The knowledge base's true continuation of the fact the context is expressing (an oracle partner).

    At a call it finds whom the sentence being written is about (the KB checker's rule, ``KnowledgeBase.clauses``:
    the entity that opens the clause, else the last one that opened one, else the document's subject, the
    first entity it names; "a student of Bo Dahl" never makes Bo Dahl the subject) and, among that entity's
    attributes whose relation word occurs in the current sentence, the one whose value the context has started
    or not yet written; it returns the rest of that value (for an entity-valued relation, the other entity's
    name). Where it cannot tell, it returns nothing and the SLM's own token is used (the call is still counted).
    """

    def __init__(self, kb: KnowledgeBase, tokenizer, piece: str = "word", max_piece_tokens: int = 8):
        if piece not in PIECES:
            raise UsageError(f"partner piece {piece!r}: use one of {PIECES}")
        self.kb, self.tok, self.piece, self.max_piece = kb, tokenizer, piece, max_piece_tokens
        self.tokens_processed, self.params = 0, 0
        self._value_ids = {}

    def reset(self, prompts: list[str]) -> None:
        pass

    def _ids(self, value: str) -> list[int]:
        if value not in self._value_ids:
            self._value_ids[value] = self.tok(" " + value, add_special_tokens=False)["input_ids"]
        return self._value_ids[value]

    def piece_for(self, row: int, context: list[int]) -> list[int]:
        eos = self.tok.eos_token_id
        doc = context[len(context) - context[::-1].index(eos):] if eos in context else context
        text = self.tok.decode(doc)
        clauses = self.kb.clauses(text)
        if not clauses or clauses[-1][2] is None:
            return []
        entity = self.kb.entities[clauses[-1][2]]
        sentence = text[max(text.rfind(c) for c in ".?!\n") + 1:]
        best = None  # (already written tokens, relation word end, remaining ids)
        spans = self.kb.relation_spans(sentence)  # relation words with content, the longest phrase where nested
        for attr, value in entity.attributes.items():
            words = [end for _, end, a in spans if a == attr]
            if not words or value in sentence:  # no relation here, or the fact is already written
                continue
            ids = self._ids(value)
            k = max((k for k in range(len(ids)) if k == 0 or doc[-k:] == ids[:k]), default=0)
            cand = (k, words[-1], ids[k:])
            if best is None or cand[:2] > best[:2]:
                best = cand
        if best is None:
            return []
        rest, out = best[2], []
        for tok in rest:
            if _piece_stop(self.piece, self.tok.decode([tok]), not out) or len(out) >= self.max_piece:
                break
            out.append(tok)
        return out



PARTNER_HINT = "give smollm2 or a local Hugging Face model folder"


def load_partner(path: str, role: str = "partner", hint: str = PARTNER_HINT):
    """(model, tokenizer) of a partner source (``smollm2``, a local folder, or ``hf:NAME``); the tokenizer reads
    prompt text as text (never as a special token)."""
    source = model_source(path, role, hint, hub_allowed=True)
    return load_model(source), text_only(load_hf_tokenizer(source))


def partner_for(model, tok, slm_tokenizer, piece: str = "word"):
    """A loaded partner (``load_partner``) as the partner the tokenizers call for: the SLM's own tokenizer ->
    token hand-over (ModelPartner), another one -> text hand-over (TextPartner)."""
    if tok.get_vocab() == slm_tokenizer.get_vocab():
        return ModelPartner(model, slm_tokenizer, piece)
    return TextPartner(model, tok, slm_tokenizer, piece)
