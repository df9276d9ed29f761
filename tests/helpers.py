"""What several test files share (fixtures live in conftest.py): a small real corpus, a seconds-fast fit, the
command-line arguments of a tiny run, a model whose p(<CALL>) saturates, a real HTTP judge server, a process check."""
import json
import random
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import lightning as L
import torch

from lacy.data.datamodule import CorpusDataModule
from lacy.io.checkpoints import AtomicCheckpointIO
from lacy.model.gpt2 import build_slm
from lacy.train.module import CallLM

FIRST = ["Anna", "Boris", "Chen", "Dalia", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Julia"]
LAST = ["Novak", "Okafor", "Petrov", "Quinn", "Rossi", "Sato", "Tanaka", "Ueda", "Varga", "Weber"]
CITY = ["Paris", "Lagos", "Osaka", "Prague", "Lima", "Oslo"]
FIELD = ["chemistry", "physics", "history", "music"]


def make_bios(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        docs.append(
            f"{name} was born in {rng.choice(CITY)} in {rng.randint(1900, 1999)}. "
            f"{name} studied {rng.choice(FIELD)} at the university and later worked as a teacher. "
            f"In {rng.randint(1920, 2020)}, {name} moved to {rng.choice(CITY)} with a friend.")
    return docs


def fit(data_kwargs, tmp_path, callbacks, max_steps=6, ckpt_path=None, lr=3e-3, preset="micro", model_kw=None,
        **trainer_kw):
    L.seed_everything(0)
    dm = CorpusDataModule(**data_kwargs)
    model = CallLM(preset=preset, vocab_size=dm.vocab_size, block_size=dm.block_size, lr=lr, warmup_steps=2,
                   **(model_kw or {}))
    trainer = L.Trainer(max_steps=max_steps, callbacks=callbacks, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False, default_root_dir=tmp_path,
                        plugins=[AtomicCheckpointIO()], limit_val_batches=0, **{"logger": False, **trainer_kw})
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return trainer, model


def small_run_args(bios_path, tmp_path):
    return ["--data.corpus.class_path", "lacy.JsonlCorpus", "--data.corpus.init_args.path", str(bios_path),
            "--data.bpe_vocab_size", "300", "--data.block_size", "32", "--data.batch_size", "4",
            "--data.val_fraction", "0.1", "--data.cache_dir", str(tmp_path / "cache"), "--model.preset", "micro",
            "--trainer.max_steps", "3", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path)]


def call_saturated_model(vocab_size: int):
    """A real GPT-2 whose p(<CALL>) is ~1 at every position, as CALL-trained models are (issue 18): ln_f maps
    every hidden state to one vector b, and the tied <CALL> row points along b."""
    torch.manual_seed(0)
    model = build_slm("micro", vocab_size, 64).eval()
    with torch.no_grad():
        b = torch.randn(model.config.n_embd)
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(b)
        model.transformer.wte.weight[-1] = 20 * b / b.norm()
    return model


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting for its reaper does not), read from Linux's /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Endpoint:
    """A real OpenAI-compatible chat-completions server on 127.0.0.1 whose 'model' is ``answer(prompt)`` (an int:
    that HTTP status, a refusal of that prompt).
    ``script`` makes the next requests misbehave, one entry per request: an HTTP status ("500", "400", "401",
    ...: that status with an OpenAI-style error message), "slow", "malformed" (200 with a body that is not
    JSON), "not-a-completion" (200 with JSON of another shape), "garbage" (bytes that are not an HTTP
    response), "truncated" (a body shorter than its Content-Length), "hang-up" (closes without a reply),
    "cut-off" (200: null content, finish_reason "length", as a reasoning model out of tokens), "trickle" (a
    valid reply sent one byte every 0.2 s), "429:S" (HTTP 429 with ``Retry-After: S``), "huge" (a valid reply
    whose answer is 2 MB)."""

    def __init__(self, answer):
        self.requests, self.script, self.times = [], [], []  # times: when each request arrived (monotonic)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.path == "/v1/chat/completions" and body["temperature"] == 0
                owner.requests.append(body)
                behaviour = owner.script.pop(0) if owner.script else "ok"
                owner.times.append(time.monotonic())
                if behaviour.startswith("429:"):
                    self.send_response(429)
                    self.send_header("Retry-After", behaviour[4:])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if behaviour.isdigit():
                    self.reply(int(behaviour), json.dumps({"error": {"message": f"scripted refusal {behaviour}",
                                                                     "type": "invalid_request_error"}}).encode())
                    return
                if behaviour == "garbage":
                    self.wfile.write(b"this is not HTTP\r\n\r\n")
                    return
                if behaviour == "hang-up":
                    return
                if behaviour == "slow":
                    time.sleep(0.6)
                reply = answer(body["messages"][0]["content"]) if behaviour != "huge" else "x" * 2_000_000
                if isinstance(reply, int):  # the model refuses this prompt with that HTTP status
                    self.reply(reply, json.dumps({"error": {"message": "refused: prompt too long"}}).encode())
                    return
                payload = {"malformed": b"{not json", "not-a-completion": b'{"object": "list", "data": []}',
                           "cut-off": json.dumps({"choices": [{"message": {"role": "assistant", "content": None},
                                                               "finish_reason": "length"}]}).encode()}.get(
                    behaviour, json.dumps({"choices": [{"message": {"role": "assistant", "content": reply},
                                                        "finish_reason": "stop"}]}).encode())
                self.reply(200, payload, extra=100 if behaviour == "truncated" else 0, trickle=behaviour == "trickle")

            def reply(self, status: int, payload: bytes, extra: int = 0, trickle: bool = False):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload) + extra))
                self.end_headers()
                for i in range(len(payload)) if trickle else ():
                    try:
                        self.wfile.write(payload[i:i + 1])
                        self.wfile.flush()
                    except OSError:  # the client gave up
                        return
                    time.sleep(0.2)
                if not trickle:
                    self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def configs_copy(tmp_path) -> Path:
    """The shipped configs folder copied into ``tmp_path`` (its includes, ``config: base/common.yaml``, resolve
    there as in configs/): a test patches a copy, never the shipped files."""
    return Path(shutil.copytree("configs", Path(tmp_path) / "configs", dirs_exist_ok=True))
