"""The LaCy objective's cost on the logits, forward + backward, against autograd through its plain formulas.

    python bench/objective.py [--batch-size 8] [--block-size 256] [--vocab 8193] [--repeats 5]

Defaults: the shape of a `make demo` step (8 x 256 targets, 8,192 BPE tokens + <CALL>). "autograd" is how
lacy.train.objective computed it before its hand-written backward: a slice, a logsumexp and a gather, each
differentiated by autograd. Both in one process, interleaved; prints the medians, their ratio and the largest
difference of the two gradients. The objective's result itself is the same computation in both.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lacy.train.objective import lacy_objective, token_losses


def autograd_objective(logits, labels, call):
    """The paper's objective (renormalised non-call targets) through autograd's own gradients."""
    vocab, valid = logits[..., :-1], labels >= 0
    lse = torch.logsumexp(vocab, -1)
    target = (lse - vocab.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)).masked_fill(~valid, 0.0)
    per_token = torch.where(call & valid, F.softplus(lse - logits[..., -1]), target)
    return (per_token * valid).sum() / valid.sum().clamp(min=1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--vocab", type=int, default=8193, help="logits per position, <CALL> included")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if min(args.batch_size, args.block_size, args.repeats) < 1 or args.vocab < 2:
        p.error("--batch-size, --block-size and --repeats must be >= 1, --vocab >= 2 (a token and <CALL>)")
    torch.manual_seed(0)
    shape = (args.batch_size, args.block_size, args.vocab)
    logits = torch.randn(shape, requires_grad=True)
    labels = torch.randint(0, args.vocab - 1, shape[:2])
    call = torch.rand(shape[:2]) < 0.15
    runs = {"autograd": lambda: autograd_objective(logits, labels, call),
            "lacy": lambda: lacy_objective(token_losses(logits, labels), call)}
    times, grads = {name: [] for name in runs}, {}
    for _ in range(args.repeats + 1):  # the first round warms up
        for name, run in runs.items():
            t = time.perf_counter()
            grads[name], = torch.autograd.grad(run(), logits)
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(ts[1:]) for name, ts in times.items()}
    for name, m in med.items():
        print(f"{name}: {m * 1e3:.0f} ms forward + backward on {shape[0]} x {shape[1]} x {shape[2]} logits")
    print(f"speed-up {med['autograd'] / med['lacy']:.2f}x (threads: {torch.get_num_threads()}); largest gradient "
          f"difference {(grads['autograd'] - grads['lacy']).abs().max().item():.1e}")


if __name__ == "__main__":
    main()
