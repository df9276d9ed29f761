"""Tables and plots of the closed-world study from the finished runs' kb_eval.json files.

Writes ``<out>/results.md`` (mean ± sd over seeds; every number comes from the run folders) and PNGs:
FactScore vs call rate per method (trained partner, the seed-1 run's sweep), FactScore vs fact leakage.
"""
import json
import math
import statistics
from pathlib import Path

from lacy.io.marker import write_output

BUCKETS = ("1", "2-4", "5-9", "10+")
LABELS = {"vanilla": "vanilla (confidence cascade)", "llm_judge_oracle": "llm_judge (KB oracle judge)",
          "lacy_true_mask": "lacy, true fact mask (oracle)", "lacy_full": "lacy, full softmax [ours]"}
LABELLING = {  # where each method's call labels come from, and what they cost
    "vanilla": "none (calls by uncertainty at inference)", "loss_only": "none (own loss in the batch)",
    "random_calls": "none", "rho1": "reference forward per training token",
    "spacy_only": "spaCy, once per corpus", "lacy": "spaCy, once per corpus",
    "spacy_ref": "spaCy once + reference forward per token", "llm_judge_oracle": "KB lookup (oracle judge)",
    "lacy_true_mask": "KB lookup (oracle)", "lacy_full": "spaCy, once per corpus"}
TABLES = {  # title: [(row, metric, header)]
    "Main comparison (paper Fig. 2 / Table 2): cascade at the paper's 22% call budget": [
        ("trained_budget", "factscore", "FactScore, trained partner"),
        ("trained_budget", "factscore_penalised", "penalised"),
        ("lookup_budget", "factscore", "FactScore, lookup partner (oracle)"),
        ("slm_alone", "factscore", "SLM alone"),
        ("slm", "leakage", "fact leakage"),
        ("slm", "leakage_chance", "leakage of a constant guess"),
        ("slm", "answered", "probes answered with a value"),
        ("slm", "placement_precision", "call precision (val, top 15%)"),
        ("slm", "placement_recall", "call recall"),
        ("trained_budget", "cascade_call_precision", "cascade call precision"),
        ("trained_budget", "call_rate", "realised call rate")],
    "By popularity bucket (documents per person per round): leakage, cascade calls, placement recall": [
        *[("slm", f"leakage_{b}", f"leak {b}") for b in BUCKETS],
        *[("trained_budget", f"call_rate_{b}", f"calls {b}") for b in BUCKETS],
        *[("slm", f"placement_recall_{b}", f"recall {b}") for b in BUCKETS]],
    "Call placement by fact kind, and paper Fig. 5 (validation loss on the model's own top-15% call mask)": [
        ("slm", "placement_recall_derived", "recall derived"),
        ("slm", "placement_recall_nonderived", "recall non-derived"),
        ("slm", "fig5_call_loss", "loss on calls"),
        ("slm", "fig5_noncall_loss", "loss off calls"),
        ("slm", "fig5_ref_call_loss", "vanilla's loss on calls"),
        ("slm", "fig5_ref_noncall_loss", "vanilla's loss off calls")],
}


def _fmt(values: list[float]) -> str:
    if values and all(v is None for v in values):  # measured, nothing to score (e.g. no bio made a claim)
        return "n/a"
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:  # not measured in these runs
        return ""
    spec = ",.0f" if abs(values[0]) >= 1000 else ".3f"  # token counts
    if len(values) == 1:
        return f"{values[0]:{spec}}"
    return f"{statistics.mean(values):{spec}} ± {statistics.stdev(values):{spec}}"


ORDER = ["vanilla", "random_calls", "loss_only", "rho1", "spacy_only", "spacy_ref", "llm_judge_oracle", "lacy",
         "lacy_true_mask"]  # then the LaCy budget variants, by name


def load(out: Path) -> dict[str, list[dict]]:
    """method -> its runs' results, seed order (run folders are named <method>-s<seed>), methods in ORDER."""
    runs: dict[str, list[dict]] = {}
    for f in sorted(out.glob("*/kb_eval.json")):
        method = f.parent.name.rsplit("-s", 1)[0]
        runs.setdefault(method, []).append(json.loads(f.read_text()))
    rank = lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m)
    return {m: runs[m] for m in sorted(runs, key=rank)}


def run_seconds(folder: Path) -> tuple[float, float]:
    """(fit, test) wall seconds of a run folder, from its files: each Lightning version's config.yaml (written
    at start) to its last event write; the test ends with kb_eval.json. Resumed fits add their versions."""
    last_write = lambda v: max(f.stat().st_mtime for f in v.glob("events.out.tfevents*"))
    span = lambda v: last_write(v) - (v / "config.yaml").stat().st_mtime
    fit = sum(span(v) for v in folder.glob("lightning_logs/version_*") if any(v.glob("events.out.tfevents*")))
    tests = sorted(folder.glob("test/lightning_logs/version_*/config.yaml"), key=lambda f: f.stat().st_mtime)
    test = (folder / "kb_eval.json").stat().st_mtime - tests[-1].stat().st_mtime if tests else 0.0
    return fit, test


TRAINING = [("train/gradient_tokens", "last", "tokens with a ground-truth gradient"),
            ("train/tokens_seen", "last", "tokens seen"), ("train/call_rate", "mean", "call rate"),
            ("train/fact_rate", "mean", "flagged fact rate"),
            ("train/calls_per_fact", "mean", "calls per flagged fact"),
            ("train/cap_binds", "mean", "batches where the budget binds")]


VALIDATION = [("val/p_call_at_calls", "last", "p(<CALL>) at call targets (val)"),
              ("val/p_call_at_noncalls", "last", "p(<CALL>) elsewhere (val)"),
              ("val/loss_noncall", "last", "non-call loss, nats (val)")]
OBJECTIVE_ROWS = [("trained_budget", "factscore", "FactScore @22% budget"),
                  ("trained_argmax", "call_rate", "argmax rule: call rate"),
                  ("trained_argmax", "factscore", "argmax rule: FactScore"),
                  ("lookup_budget", "factscore", "lookup partner @22%"),
                  ("lookup_argmax", "factscore", "argmax rule, lookup partner: FactScore")]
# paired comparisons (A - B, same seed and prompts): the paper's claims against the simplest rivals, and the
# objective switch against the paper's objective
PAIRS = [("lacy", "vanilla"), ("lacy", "spacy_only"), ("lacy_full", "lacy")]
PAIRED_ROWS = [("trained_budget", "trained partner, 22%"), ("lookup_budget", "lookup partner, 22%")]


def pooled_by_relation(row: dict) -> dict[str, tuple[float, float]]:
    """relation -> (claims per bio, supported claims per bio) of a cascade row of kb_eval.json."""
    return {k[len("claims_"):]: (v, v * (row.get("supported_" + k[len("claims_"):]) or 0.0))
            for k, v in row.items() if k.startswith("claims_") and k != "claims_per_bio"}


def relation_carrier(rows_a: list[dict], rows_b: list[dict]) -> str:
    """Whether one relation carries a comparison (issue 30: a generic relation word made one relation 38-53% of
    the claims and the sign of LaCy - Vanilla hang on it). On the pooled claim precision (supported / claims,
    bios pooled; the paired FactScore averages bios instead), mean over seeds of A - B with every relation and
    with each relation left out: the relation without which the difference is smallest in its own direction is
    named when without it the difference is under half of what it was or of the other sign (or nothing is left
    to score); else "no"."""
    def diff(leave_out=None):
        ds = []
        for a, b in zip(rows_a, rows_b):
            p = []
            for row in (a, b):
                rel = {r: v for r, v in pooled_by_relation(row).items() if r != leave_out}
                n = sum(c for c, _ in rel.values())
                p.append(sum(s for _, s in rel.values()) / n if n else float("nan"))
            ds.append(p[0] - p[1])
        return statistics.mean(ds)

    relations = sorted({r for row in rows_a + rows_b for r in pooled_by_relation(row)})
    full = diff()
    if not relations or math.isnan(full):
        return "n/a"
    sign = 1.0 if full >= 0 else -1.0
    left = {r: sign * diff(r) for r in relations}  # the difference without r, in the full difference's direction
    r = min(left, key=lambda x: -math.inf if math.isnan(left[x]) else left[x])
    if math.isnan(left[r]):
        return f"{r}: every claim"
    return f"{r}: {full:+.3f} -> {sign * left[r]:+.3f} without it" if left[r] < abs(full) / 2 else "no"


def paired_lines(out: Path) -> list[str]:
    """The paired-difference table from the runs' ``kb_eval_bios.json`` (experiments/stats.py says how)."""
    from experiments.stats import paired_difference

    bios: dict[str, dict[int, dict]] = {}
    for f in sorted(out.glob("*/kb_eval_bios.json")):
        method, seed = f.parent.name.rsplit("-s", 1)
        bios.setdefault(method, {})[int(seed)] = json.loads(f.read_text())
    lines = []
    for a, b in PAIRS:
        for row, label in PAIRED_ROWS:
            seeds = sorted(s for s in set(bios.get(a, {})) & set(bios.get(b, {}))
                           if row in bios[a][s] and row in bios[b][s])
            if not seeds:
                continue
            pairs = {s: ([x["factscore"] for x in bios[a][s][row]], [x["factscore"] for x in bios[b][s][row]])
                     for s in seeds}
            d = paired_difference(pairs)
            per_seed = ", ".join(f"{d['per_seed'][s]:+.3f}" for s in seeds)
            sd = "" if math.isnan(d["sd"]) else f" ± {d['sd']:.3f}"
            rows = [[json.loads((out / f"{m}-s{s}" / "kb_eval.json").read_text())[row] for s in seeds] for m in (a, b)]
            lines.append(f"| {a} - {b} | {label} | {len(seeds)} | {per_seed} | {d['mean']:+.3f}{sd} | "
                         f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] | {d['p_sign_flip']:.3f} | "
                         f"{relation_carrier(*rows)} |")
    if not lines:
        return []
    return ["## Paired differences in FactScore (same seed, same prompts)", "",
            "Per seed d = A - B; the interval resamples seeds, then prompts within each seed (hierarchical bootstrap, "
            "2,000 draws); p: exact sign-flip test over the per-seed differences (with 5 seeds it cannot go below "
            "0.0625). experiments/stats.py. One relation carries it: the relation without which the difference in "
            "pooled claim precision falls under half or changes sign (`relation_carrier`); a comparison it "
            "carries rests on how that relation is read, not on the methods.", "",
            "| comparison | cascade | seeds | per seed | mean ± sd | 95% interval | sign-flip p | one relation carries it |",
            "|---|---|---|---|---|---|---|---|", *lines, ""]


def training_scalars(folder: Path, spec: list[tuple[str, str, str]] = TRAINING) -> dict[str, float]:
    """TensorBoard scalars of a run's fit (all its Lightning versions: a resumed fit continues the curve):
    the last value or the mean over logged steps, as ``spec`` (tag, last | mean, header) says; None for a tag
    the run never logged (nothing to score)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = {}
    for version in sorted(folder.glob("lightning_logs/version_*"), key=lambda v: int(v.name.split("_")[1])):
        acc = EventAccumulator(str(version), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            series.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    out = {}
    for tag, how, _ in spec:
        if series.get(tag):
            values = [v for _, v in sorted(series[tag].items())]
            out[tag] = values[-1] if how == "last" else statistics.mean(values)
        elif series:  # a run that logged, but never this (Vanilla: no call targets): nothing to score, n/a
            out[tag] = None
    return out


def _table(runs: dict, columns: list[tuple[str, str, str]], extra: dict[str, str] | None = None) -> list[str]:
    head = ["method", "seeds", *[h for _, _, h in columns], *(["labels from"] if extra else [])]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for method, res in runs.items():
        cells = [_fmt([r[row][m] for r in res if m in r.get(row, {})]) for row, m, _ in columns]
        tail = [extra.get(method, "")] if extra else []
        lines.append(f"| {LABELS.get(method, method)} | {len(res)} | " + " | ".join(cells + tail) + " |")
    return lines


def _sweep_points(result: dict, rate: float = 0.22) -> dict[float, tuple[float, float]]:
    """target call rate -> (realised rate, FactScore) of the trained-partner cascade: SLM alone (0), the budget
    row (``rate``) and the sweep rows; a row with no score (no bio made a claim) has no point."""
    targets = {"slm_alone": 0.0, "trained_budget": rate}
    targets |= {row: float(row.split("@")[1]) for row in result if row.startswith("trained_budget@")}
    return {t: (result[row]["call_rate"], result[row]["factscore"]) for row, t in sorted(targets.items(),
                                                                                        key=lambda x: x[1])
            if result[row]["factscore"] is not None}


def report(out: Path) -> Path:
    runs = load(out)
    lines = ["# Closed-world study: results", "",
             "Mean ± sd over seeds (one value: one seed). Generated by `python -m experiments.closed_world "
             "--report` from the run folders' kb_eval.json.", ""]
    first = next(iter(runs.values()), [{}])[0]
    for i, (title, columns) in enumerate(TABLES.items()):
        lines += [f"## {title}", "", *_table(runs, columns, LABELLING if i == 0 else None)]
        if i == 0 and "partner_alone" in first:  # the trained partner writing every token, and its probe accuracy
            pa = first["partner_alone"]
            cells = {("trained_budget", "factscore"): pa["factscore"], ("slm", "leakage"): pa["leakage"],
                     ("trained_budget", "factscore_penalised"): pa["factscore_penalised"],
                     ("trained_budget", "call_rate"): 1.0}
            lines.append("| partner alone | 1 | " + " | ".join(
                _fmt([cells[r, m]]) if (r, m) in cells else "" for r, m, _ in columns) + " | none |")
        lines.append("")
    # the relations the runs measured (any world's), the trained partner's rows where there is one
    cascade = "trained_budget" if any("trained_budget" in x for res in runs.values() for x in res) else "lookup_budget"
    relations = sorted({k[len("claims_"):] for res in runs.values() for x in res for k in x.get(cascade, {})
                        if k.startswith("claims_") and k != "claims_per_bio" and "|" not in k})
    partner = "trained" if cascade == "trained_budget" else "lookup"
    if partner == "lookup":
        lines[3:3] = ["No trained partner in these runs: every cascade row uses the lookup partner (an oracle that writes "
                      "the KB's value), so FactScore here measures call placement, not a realistic cascade.", ""]
    lines += [f"## Per relation ({partner} partner, 22% calls): claims per bio, and the most frequent relation's share",
              "", *_table(runs, [(cascade, f"claims_{r}", r) for r in relations]
                          + [(cascade, "top_relation_share", "top relation's share of claims")]), "",
              f"## Per relation ({partner} partner, 22% calls): share of claims supported", "",
              *_table(runs, [(cascade, f"supported_{r}", r) for r in relations]), "",
              "## Per relation: share of the bios' value tokens the partner wrote", "",
              *_table(runs, [(cascade, f"by_partner_{r}", r) for r in relations]), "",
              "## Leakage per relation: raw, a constant guess's (the relation's most frequent answer), probes "
              "answered with any value", "",
              *_table(runs, [c for r in relations for c in (("slm", f"leakage_{r}", f"{r}"),
                                                            ("slm", f"leakage_chance_{r}", "chance"),
                                                            ("slm", f"answered_{r}", "answered"))]), ""]
    trained = {}
    for f in sorted(out.glob("*/kb_eval.json")):
        trained.setdefault(f.parent.name.rsplit("-s", 1)[0], []).append({"train": training_scalars(f.parent)})
    trained = {m: trained[m] for m in runs}
    lines += ["## Training (means over logged steps; the budget equalises tokens with a ground-truth gradient)", "",
              *_table(trained, [("train", tag, h) for tag, how, h in TRAINING]), ""]
    lines += paired_lines(out)
    if any(row.endswith("_argmax") for res in runs.values() for r in res for row in r):  # objective (issue 14.4)
        val = {}
        for f in sorted(out.glob("*/kb_eval.json")):
            res = json.loads(f.read_text())
            val.setdefault(f.parent.name.rsplit("-s", 1)[0], []).append(
                {"val": training_scalars(f.parent, VALIDATION), **res})
        val = {m: val[m] for m in runs}
        lines += ["## Where <CALL> is likely: the paper's objective and the full-softmax switch (end of training)", "",
                  *_table(val, [("val", tag, h) for tag, _, h in VALIDATION] + OBJECTIVE_ROWS), ""]
    swept = {m: _sweep_points(res[0]) for m, res in runs.items() if any("@" in row for row in res[0])}
    if swept:
        targets = sorted({t for pts in swept.values() for t in pts})
        lines += ["## FactScore vs call budget (trained partner, seed 1): FactScore (realised call rate)", "",
                  "| method | " + " | ".join(f"budget {t:g}" for t in targets) + " |",
                  "|---" * (1 + len(targets)) + "|"]
        for method, pts in swept.items():
            lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(
                f"{pts[t][1]:.3f} ({pts[t][0]:.2f})" if t in pts else "" for t in targets) + " |")
        lines.append("")
    times = [run_seconds(f.parent) for f in out.glob("*/kb_eval.json")]
    fit_h, test_h = (sum(t[i] for t in times) / 3600 for i in (0, 1))
    lines += ["", f"Compute: {len(times)} runs, {fit_h:.2f} h of fitting + {test_h:.2f} h of evaluation, one CPU "
                  f"thread each (two jobs in parallel on 2 cores: ~{(fit_h + test_h) / 2:.2f} h wall clock); the "
                  "partner's training is cached outside the study."]
    path = out / "results.md"
    write_output(path, "\n".join(lines) + "\n", "--out")
    _plots(runs, swept, out)
    print(path.read_text())
    return path


def _plots(runs: dict, swept: dict, out: Path) -> None:
    import matplotlib

    from lacy.eval.report import write_figure  # here, with matplotlib: only the plots need them

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for method, pts in swept.items():
        xy = sorted(pts.values())
        ax.plot([p[0] for p in xy], [p[1] for p in xy], marker="o", label=LABELS.get(method, method))
    ax.axvline(0.22, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="realised call rate (share of tokens from the partner)", ylabel="KB FactScore (trained partner)",
           title="Closed world: FactScore vs call rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: no point hidden
    fig.tight_layout()
    write_figure(fig, out / "factscore_vs_call_rate.png", "--out")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colours = plt.cm.tab20.colors  # more methods than the default cycle's 10 colours
    for i, (method, res) in enumerate(runs.items()):
        pts = [(r["slm"]["leakage"], r["trained_budget"]["factscore"]) for r in res if "trained_budget" in r
               and None not in (r["slm"]["leakage"], r["trained_budget"]["factscore"])]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=LABELS.get(method, method),
                       color=colours[i % len(colours)], marker="o" if method in ORDER else "^")
    ax.set(xlabel="fact leakage (SLM alone, probes)", ylabel="FactScore @22% (trained partner)",
           title="Closed world: FactScore vs leakage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: no point hidden
    fig.tight_layout()
    write_figure(fig, out / "factscore_vs_leakage.png", "--out")
    plt.close(fig)
