import re

import numpy as np
import pytest
import torch

from baselines.llm_judge import PROMPT, HFJudge, JudgeAnnotator, LLMJudge, OpenAIJudge, parse_spans
from lacy.model import build_slm
from lacy.objective import TokenLosses
from lacy.tokenizer import train_bpe
from tests.conftest import Endpoint

TEXT = "Anna Novak was born in Paris in 1950. Anna studied music."


def test_parse_spans_strict_format():
    assert parse_spans("Anna Novak\nParis\n1950\nAnna", TEXT) == [(0, 10), (23, 28), (32, 36), (38, 42)]
    assert parse_spans("- Paris\n* \"1950\"", TEXT) == [(23, 28), (32, 36)]
    assert parse_spans("NONE", TEXT) == []
    assert parse_spans("Paris\nLondon", TEXT) is None  # a span that is not in the text rejects the answer
    assert parse_spans("", TEXT) is None


def name_capitalised_words(prompt: str) -> str:
    """The endpoint's 'model' for the judge: names the capitalised words and numbers of the text."""
    return "\n".join(re.findall(r"\b(?:[A-Z][a-z]+|\d+)\b", prompt.split("Text: ", 1)[1]))


@pytest.fixture
def endpoint():
    e = Endpoint(name_capitalised_words)
    yield e
    e.close()


def offsets_of(text):
    tok = train_bpe([text], vocab_size=280)
    return tok, np.asarray(tok.backend_tokenizer.encode(text, add_special_tokens=False).offsets)


def test_endpoint_judge_flags_named_spans_and_caches(endpoint, tmp_path):
    judge = OpenAIJudge(endpoint.url, "judge-model", cache=str(tmp_path / "c.sqlite"), backoff=0.01)
    ann = JudgeAnnotator(judge)
    tok, off = offsets_of(TEXT)
    (flags,) = ann.annotate([TEXT], [off])
    pieces = {TEXT[a:b].strip() for (a, b), f in zip(off, flags) if f}
    assert "".join(sorted(pieces)) and {"was", "born", "in", "studied"}.isdisjoint(pieces)
    assert any(p and p in "1950" for p in pieces) and ann.unparseable == 0
    sent = len(endpoint.requests)
    ann.annotate([TEXT], [off])  # cached: nothing sent
    assert len(endpoint.requests) == sent == 1
    assert endpoint.requests[0]["messages"][0]["content"] == PROMPT.format(text=TEXT)


def test_endpoint_errors_retry_timeouts_and_malformed_answers(endpoint, tmp_path):
    judge = OpenAIJudge(endpoint.url, "m", cache=str(tmp_path / "c.sqlite"), timeout=0.3, retries=2, backoff=0.01)
    endpoint.script = ["500", "slow"]  # a server error, then a timeout, then an answer
    assert judge.answer(["Text: Oslo"]) == ["Oslo"] and len(endpoint.requests) == 3
    endpoint.script = ["malformed"]
    ann = JudgeAnnotator(judge)
    tok, off = offsets_of("Lima is far.")
    (flags,) = ann.annotate(["Lima is far."], [off])
    assert not flags.any() and ann.unparseable == 1  # logged, no span, no crash
    endpoint.script = ["500", "500", "500"]
    with pytest.raises(RuntimeError, match="failed 3 times"):
        judge.answer(["Text: Prague"])


def test_local_hf_judge_is_batched_greedy_and_never_crashes(tmp_path):
    tok = train_bpe(["a tiny judge model that knows nothing " * 10], vocab_size=300)
    torch.manual_seed(0)
    build_slm("micro", len(tok), 1024).save_pretrained(tmp_path / "judge")
    tok.save_pretrained(tmp_path / "judge")
    judge = HFJudge(str(tmp_path / "judge"), max_new_tokens=8, batch_size=2, device="cpu")
    texts = ["Anna met Boris.", "Lima is far away from Oslo.", "Nothing here."]
    first = judge.answer([PROMPT.format(text=t) for t in texts])
    assert first == judge.answer([PROMPT.format(text=t) for t in texts])  # greedy: deterministic
    single = HFJudge(str(tmp_path / "judge"), max_new_tokens=8, batch_size=1, device="cpu")
    assert single.answer([PROMPT.format(text=texts[1])]) == [first[1]]  # left padding does not change answers
    ann = JudgeAnnotator(judge)
    flags = ann.annotate(texts, [offsets_of(t)[1] for t in texts])
    assert [len(f) for f in flags] == [len(offsets_of(t)[1]) for t in texts] and ann.answers == 3


def test_llm_judge_strategy_caps_at_the_budget_highest_loss_first():
    judge = torch.tensor([[True, True, True, False, True, False, False, False, False, False]])
    loss = torch.tensor([[1.0, 5.0, 3.0, 9.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    valid = torch.ones(1, 10, dtype=torch.bool)
    batch = {"judge": judge, "labels": torch.zeros(1, 10, dtype=torch.long)}
    s = LLMJudge(call_rate=0.2)
    call = s.select(batch, TokenLosses(loss, loss, loss, valid), 0)
    assert call.tolist() == [[False, True, False, False, True] + [False] * 5]
    assert s.metrics(batch, call)["cap_binds"].item() == 1.0
