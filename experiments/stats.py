"""Paired comparisons of two methods over seeds, for the claims of docs/results.md (issue 14 item 3).

Each seed trains both methods once and tests both on the same prompts (one per person), so bio ``i`` of seed
``s`` is paired across the methods. A method's score in a seed is FActScore's: the mean over the bios that make
at least one claim (``None`` = no claim, left out, as FActScore does). The difference A - B is reported three ways:

- per seed: ``d_s = score_A(s) - score_B(s)``;
- **hierarchical bootstrap** (the interval we quote): resample seeds with replacement, then the paired prompt
  indices within each drawn seed, recompute the mean of ``d_s``; the 2.5/97.5 percentiles. It carries both
  sources of spread, training seeds and which people were asked about;
- **sign-flip permutation test** over the per-seed differences (exact: all 2^n sign patterns). With 5 seeds
  its smallest two-sided p is 2/32 = 0.0625: five seeds alone can never reach p < 0.05 this way, which is why
  the bootstrap interval is the headline and the p-value is shown next to it.
"""
import itertools
import math
import random
import statistics

Scores = list[float | None]  # one entry per prompt: a bio's FActScore, or None when it makes no claim


def method_score(scores: Scores, idx: list[int] | None = None) -> float:
    """FActScore over the bios with a claim (``idx``: which prompts, with repeats); NaN when none has one."""
    picked = [scores[i] for i in (range(len(scores)) if idx is None else idx)]
    kept = [s for s in picked if s is not None]
    return sum(kept) / len(kept) if kept else math.nan


def paired_difference(pairs: dict[int, tuple[Scores, Scores]], n_boot: int = 2000, seed: int = 0) -> dict:
    """A - B over seeds. ``pairs``: seed -> (A's per-prompt scores, B's), the same prompts in the same order.

    Returns ``per_seed`` (seed -> d_s), ``mean`` (mean d_s), ``sd`` (over seeds), ``ci95`` (hierarchical
    bootstrap percentile interval, ``n_boot`` draws), ``p_sign_flip`` (two-sided, exact) and ``seeds``.
    Raises ValueError when a seed's two lists differ in length (unpaired prompts).
    """
    for s, (a, b) in pairs.items():
        if len(a) != len(b):
            raise ValueError(f"seed {s}: {len(a)} and {len(b)} bios; a paired comparison needs the same prompts")
    seeds = sorted(pairs)
    per_seed = {s: method_score(pairs[s][0]) - method_score(pairs[s][1]) for s in seeds}
    diffs = [per_seed[s] for s in seeds]
    rng = random.Random(seed)
    boots = []
    for _ in range(n_boot):
        drawn = [rng.choice(seeds) for _ in seeds]
        ds = []
        for s in drawn:
            a, b = pairs[s]
            idx = [rng.randrange(len(a)) for _ in a]
            ds.append(method_score(a, idx) - method_score(b, idx))
        ds = [d for d in ds if not math.isnan(d)]
        if ds:
            boots.append(sum(ds) / len(ds))
    boots.sort()
    ci = (boots[int(0.025 * len(boots))], boots[min(len(boots) - 1, int(0.975 * len(boots)))]) if boots else (
        math.nan, math.nan)
    return {"seeds": seeds, "per_seed": per_seed, "mean": statistics.mean(diffs),
            "sd": statistics.stdev(diffs) if len(diffs) > 1 else math.nan, "ci95": ci,
            "p_sign_flip": sign_flip_p(diffs)}


def sign_flip_p(diffs: list[float]) -> float:
    """Exact two-sided sign-flip permutation p-value of mean(diffs) = 0 (every one of the 2^n sign patterns)."""
    observed = abs(sum(diffs))
    patterns = list(itertools.product((1, -1), repeat=len(diffs)))
    extreme = sum(abs(sum(sign * d for sign, d in zip(p, diffs))) >= observed - 1e-12 for p in patterns)
    return extreme / len(patterns)
