"""Training step time per strategy, as ratios to Vanilla measured in one run (machines are noisy).

Each strategy trains the same model on the same batches (real data, real fact flags) for --steps steps,
rounds interleaved (V, L, ..., V, L, ...) so drift hits all alike; the median step time per strategy is
compared. It also counts SLM forward passes per training step: selection must add none (Rho-1's
reference forward is a different model). Rho-1 uses a reference of the same preset (random weights unless
--reference names an exported model): its cost, not its quality, is measured.

    python bench/step_time.py [--preset tiny] [--steps 40] [--rounds 3]                       # CPU
    python bench/step_time.py --pretrained smollm2 --strategies vanilla,lacy --batch-size 4 --steps 5 --rounds 2
    python bench/step_time.py --accelerator gpu --preset gpt2-334m --block-size 1024 \
        --bpe-vocab-size 32000 --precision bf16-mixed --strategies vanilla,lacy,rho1             # GPU check
"""
import argparse
import resource
import statistics
import tempfile
import time
from functools import partial

import lightning as L
import torch

from lightning.fabric.utilities.throughput import get_available_flops

from baselines import LossOnly, RandomCalls, ReferenceLoss, Rho1, SpacyOnly, Vanilla
from lacy.data.corpus import JsonlCorpus
from lacy.data.datamodule import CorpusDataModule
from lacy.annotators.spacy_facts import SpacyFactAnnotator
from lacy.model.slm import flops_per_token
from lacy.selection.lacy_rule import LaCy
from lacy.model.gpt2 import build_slm
from lacy.train.module import CallLM

STRATEGIES = {"vanilla": Vanilla, "lacy": LaCy, "loss_only": LossOnly, "random_calls": RandomCalls,
              "spacy_only": SpacyOnly}


class StepTimer(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.times, self.forwards = warmup, [], []

    def on_train_start(self, trainer, module):
        self._count, self.device = 0, module.device
        module.model.register_forward_hook(lambda *_: setattr(self, "_count", self._count + 1))

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if module.device.type == "cuda":
            torch.cuda.synchronize()
        self._count, self._t = 0, time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if module.device.type == "cuda":
            torch.cuda.synchronize()
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._t)
            self.forwards.append(self._count)


def run(name, dm, args) -> tuple[StepTimer, CallLM]:
    L.seed_everything(0, verbose=False)
    timer = StepTimer(warmup=3)
    model = CallLM(preset=args.preset, vocab_size=dm.vocab_size, block_size=dm.block_size, compile=args.compile,
                   finite_check_interval=10**9, pretrained=args.pretrained, cache_dir=args.cache_dir)
    trainer = L.Trainer(max_steps=args.steps + 3, accelerator=args.accelerator, devices=1, precision=args.precision,
                        callbacks=[timer, STRATEGIES[name]()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        use_distributed_sampler=False)
    trainer.fit(model, dm)
    return timer, model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--strategies", default="vanilla,lacy,loss_only,random_calls,rho1")
    p.add_argument("--bpe-vocab-size", type=int, default=8192)
    p.add_argument("--n-process", type=int, default=2, help="spaCy processes for the (cached) fact annotation")
    p.add_argument("--reference", default=None, help="Rho-1 reference folder (default: random, same preset)")
    p.add_argument("--compile", action="store_true", help="torch.compile the SLM")
    p.add_argument("--pretrained", default=None, help="a pretrained SLM (smollm2, a folder) with its own tokenizer")
    p.add_argument("--jsonl", default=None, help="a jsonl corpus instead of the Wikipedia summaries")
    p.add_argument("--cache-dir", default=".cache/lacy")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="device peak for MFU where Lightning's table lacks it (H200 dense bf16: 989)")
    args = p.parse_args(argv)
    corpus = JsonlCorpus(args.jsonl) if args.jsonl else None
    dm = CorpusDataModule(corpus=corpus, cache_dir=args.cache_dir, block_size=args.block_size, tokenizer=args.pretrained,
                          batch_size=args.batch_size, bpe_vocab_size=args.bpe_vocab_size,
                          annotators=[SpacyFactAnnotator(n_process=args.n_process)])
    dm.prepare_data()
    if "rho1" in args.strategies and args.reference is None:
        args.reference = tempfile.mkdtemp(prefix="rho1-ref-")
        build_slm(args.preset, dm.vocab_size, args.block_size).save_pretrained(args.reference)
    STRATEGIES["rho1"] = partial(Rho1, reference=args.reference)
    names = args.strategies.split(",")
    times = {n: [] for n in names}
    forwards = {n: [] for n in names}
    for _ in range(args.rounds):
        for n in names:
            timer, model = run(n, dm, args)
            times[n] += timer.times
            forwards[n] += timer.forwards
    base = statistics.median(times["vanilla"])
    tokens = args.block_size * args.batch_size
    on_gpu = timer.device.type == "cuda"  # read during fit: Lightning moves the module back to the CPU after it
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (
        get_available_flops(timer.device, args.precision) if on_gpu else None)
    device = torch.cuda.get_device_name() if on_gpu else f"CPU, {torch.get_num_threads()} threads"
    what = f"pretrained {args.pretrained}" if args.pretrained else f"preset {args.preset}"
    print(f"{what} ({flops_per_token(model.model, args.block_size) / 6e6:.0f}M matmul params), batch {args.batch_size} x "
          f"{args.block_size}, vocab {dm.vocab_size}, {args.precision}, {args.rounds} rounds x {args.steps} steps, {device}")
    print(f"{'strategy':<14}{'median step ms':>16}{'tokens/s':>10}{'MFU':>7}{'ratio to vanilla':>18}{'SLM forwards/step':>19}")
    for n in names:
        m = statistics.median(times[n])
        mfu = f"{tokens / m * flops_per_token(model.model, args.block_size) / peak:.1%}" if peak else "n/a"
        print(f"{n:<14}{m * 1e3:>16.1f}{tokens / m:>10.0f}{mfu:>7}{m / base:>18.3f}{max(forwards[n]):>19}")
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    if "rho1" in names:  # Rho-1's precomputed mode: the offline reference pass over training blocks
        ref = ReferenceLoss(args.reference, device="cuda" if args.accelerator == "gpu" else "cpu",
                            chunk_blocks=args.batch_size)
        blocks = dm.dataset("train")
        batch = {k: torch.stack([blocks[b][k] for b in range(args.batch_size)]) for k in ("input_ids", "labels")}
        ref.annotate_blocks(batch)  # load + warm-up
        t0 = time.perf_counter()
        for _ in range(args.steps):
            ref.annotate_blocks(batch)
        print(f"rho1 offline reference pass (ReferenceLoss): {args.steps * tokens / (time.perf_counter() - t0):.0f} tokens/s")


if __name__ == "__main__":
    main()
