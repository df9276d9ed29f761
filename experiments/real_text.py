"""The paper's comparison on real text: the methods trained on the Wikipedia summaries, evaluated on
Wikipedia biographies in the cascade, one command, resumable, cached per finished run.

    python -m experiments.real_text [--jobs 2] [--only lacy,vanilla] [--seeds 1] [--out runs/wiki_study]
    python -m experiments.real_text --report

First the partner (configs/wiki/partner.yaml: a `small` vanilla model on the same summaries and tokenizer;
also Rho-1's reference) is trained once and exported to runs/wiki/partner/hf. Then each method: `main.py fit`
with its config and a TokenBudget equalising the tokens that get a ground-truth gradient (the closed world's
rule and budget: 1,228,800 tokens for Vanilla), then `main.py test` with configs/eval/wiki.yaml: NE precision
and year leakage of the SLM alone and of the cascade at 22% calls with (a) the trained partner (token
hand-over) and (b) SmolLM2-135M-Instruct (another tokenizer: text hand-over), and FActScore with the local
SmolLM2 judge on `JUDGE_LIMIT` bios per row. A reference run (``partners``) scores each partner writing
every token: the trained partner as the model under test, SmolLM2 always called. llm_judge's annotation
(SmolLM2 judging 1.16M tokens at ~58 tokens/s: ~5.5 h on one CPU thread) runs last and resumes where it
stopped (lacy/annotate.py chunks).
"""
import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


from experiments.closed_world import BASE_STEPS, BATCH, BLOCK
from experiments.report import training_scalars
from experiments.runner import (fit_and_test, last_checkpoint, merged_list, read_config, set_init_args,
                                write_run_configs)
from lacy.errors import ArgumentParser, entry_point

PARTNER = "runs/wiki/partner/hf"
METHODS = ["vanilla", "loss_only", "random_calls", "rho1", "spacy_only", "lacy", "spacy_ref", "llm_judge"]
JUDGE = {"class_path": "baselines.HFJudge", "init_args": {"model": "smollm2"}}  # the FActScore judge
LIMIT, JUDGE_LIMIT = 64, 16  # bios per row; bios per row scored by the (slow, CPU) FActScore judge


def train_partner(root: Path = Path("runs/wiki/partner")) -> str:
    """The partner, trained once (resumable) and exported to ``PARTNER``; returns a status line."""
    from lacy.io.export import export_checkpoint

    if (Path(PARTNER) / "config.json").is_file():
        return f"partner: cached in {PARTNER}"
    root.mkdir(parents=True, exist_ok=True)
    msg = fit_and_test(root, ["configs/vanilla.yaml", "configs/wiki/partner.yaml"], "fit.done", test=False)
    export_checkpoint(last_checkpoint(root), PARTNER)
    return f"partner {msg}, exported to {PARTNER}"


def write_configs(method: str, seed: int, folder: Path, partner_alone: bool = False) -> list[str]:
    """The run's configs (strategy, the real-text evaluation overlay) and its changes over them (``study.yaml``),
    written into its folder. ``partner_alone``: the reference run instead: the trained partner is the model under
    test (``slm_alone`` = the partner alone) and SmolLM2 writes every token (``smollm2_alone``)."""
    sources = [f"configs/{method}.yaml", "configs/eval/wiki.yaml"]
    if partner_alone:
        sources.insert(1, "configs/wiki/partner.yaml")
    configs = [read_config(s) for s in sources]
    callbacks, annotators = merged_list(configs, "trainer", "callbacks"), merged_list(configs, "data", "annotators")
    set_init_args(callbacks, "Rho1", reference=PARTNER)  # Rho-1's and spacy_ref's reference: the partner
    changed = set_init_args(annotators, "ReferenceLoss", reference=PARTNER)
    evaluation = dict(judge=JUDGE, limit=LIMIT, judge_limit=JUDGE_LIMIT, out=str(folder / "wiki_eval.json"))
    if partner_alone:  # eval/wiki.yaml's partner (SmolLM2) stays: the rows of each partner alone
        evaluation["modes"] = ["never", "always"]
    else:
        evaluation["partner"] = [PARTNER, "smollm2"]
    if not set_init_args(callbacks, "WikiEvaluation", **evaluation):
        raise ValueError(f"{folder.name}: no WikiEvaluation in callbacks of {' + '.join(sources)}")
    budget = {"max_tokens": BASE_STEPS * BATCH * BLOCK, "count": "gradient"}
    overlay = {"seed_everything": seed,
               "trainer": {"callbacks": callbacks + [{"class_path": "lacy.TokenBudget", "init_args": budget}]}}
    if changed:
        overlay["data"] = {"annotators": annotators}
    return write_run_configs(folder, sources, overlay)


def partners_alone(out: Path) -> str:
    """The reference rows (the cascade's ceiling): each partner writing every bio token."""
    folder = out / "partners"
    return fit_and_test(folder, write_configs("vanilla", 1, folder, partner_alone=True), "wiki_eval.json",
                        checkpoint=last_checkpoint(Path(PARTNER).parent))


# per run: training signals (fit's TensorBoard) and, on the final model over the validation documents (the test
# loop), paper Fig. 5: the ground-truth loss on the model's own top-15% call mask vs the rest, and the share of
# that mask the method's rule also selects (did the SLM learn where its rule calls? chance = the call rate)
SIGNALS = [("train/gradient_tokens", "last", "tokens with a ground-truth gradient"),
           ("train/call_rate", "mean", "train call rate"), ("test/loss_noncall", "last", "val loss, non-call"),
           ("test/orig_loss_at_calls", "last", "val loss at the rule's calls"),
           ("test/fig5_call_loss", "last", "Fig. 5: own call mask"),
           ("test/fig5_noncall_loss", "last", "Fig. 5: rest"),
           ("test/fig5_rule_overlap", "last", "own mask in the rule's calls")]


def _cell(metrics: dict, name: str) -> str:
    """A table cell: 3 decimals; n/a where nothing was scored (None); blank where the row has no such metric."""
    v = metrics.get(name, "")
    return f"{v:.3f}" if isinstance(v, float) else "n/a" if v is None else str(v)


def report(out: Path) -> Path:
    """``<out>/results.md``: one line per run and cascade row (NE precision, year leakage, FActScore), methods in
    ``METHODS`` order, the partners' reference rows last; then one person's bio from every trained-partner cascade
    (partner pieces in [brackets]): the numbers of a weak SLM need its text beside them."""
    cols = ["ne_precision", "named_entities", "call_rate", "factscore", "init_score", "facts_per_response",
            "judged_bios"]
    order = {m: i for i, m in enumerate(METHODS)}
    runs = sorted((f.parent for f in out.glob("*/wiki_eval.json")),
                  key=lambda d: (order.get(d.name.rsplit("-s", 1)[0], len(order)), d.name))
    lines = ["| run | year leakage (model under test) | row | " + " | ".join(cols) + " |",
             "|---" * (len(cols) + 3) + "|"]
    signals = ["| run | " + " | ".join(h for _, _, h in SIGNALS) + " |", "|---" * (len(SIGNALS) + 1) + "|"]
    bios = []
    for run in runs:
        fit = {t: v for part in (run, run / "test") for t, v in training_scalars(part, SIGNALS).items()
               if v is not None}  # the fit's and the test's scalars (each logs only some of SIGNALS)
        if not fit.get("train/call_rate"):  # never trained to call (Vanilla, the partners): no call mask to read
            fit = {t: v for t, v in fit.items() if t == "test/loss_noncall" or t.startswith("train/")}
        if fit:
            signals.append(f"| {run.name} | " + " | ".join(f"{fit[t]:,.3f}".rstrip("0").rstrip(".") if t in fit
                                                          else "" for t, _, _ in SIGNALS) + " |")
        res = json.loads((run / "wiki_eval.json").read_text())
        for row, m in res.items():
            if row != "slm":
                cells = [_cell(m, c) for c in cols]
                lines.append(f"| {run.name} | {_cell(res['slm'], 'year_leakage')} | {row} | " + " | ".join(cells)
                             + " |")
        texts = run / "wiki_eval_bios.json"
        if texts.is_file():
            row = "slm_alone" if run.name == "partners" else "partner_budget"
            bio = json.loads(texts.read_text())[row][0]
            bios.append(f"- **{run.name}** ({row}): {bio['title']}{bio['text']}")
    path = out / "results.md"
    path.write_text(f"FActScore judge: SmolLM2-135M-Instruct (offline), {JUDGE_LIMIT} bios per row. Run `partners`: "
                    "the trained partner is the model under test (`slm_alone` = the partner alone), `smollm2_alone` "
                    "= SmolLM2 writing every token.\n\n" + "\n".join(lines) + "\n\n"
                    + "Training and Fig. 5 signals (TensorBoard; train call rate: mean over steps):\n\n"
                    + "\n".join(signals) + "\n\n"
                    + "One bio per run, greedy, partner pieces in [brackets]:\n\n" + "\n".join(bios) + "\n")
    print(path.read_text())
    return path


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/wiki_study")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seeds", default="1", help="comma-separated seeds")
    p.add_argument("--only", default=None, help="comma-separated methods")
    p.add_argument("--report", action="store_true", help="only write the table")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not args.report:
        methods = [m for m in METHODS if not args.only or m in args.only.split(",")]
        runs = [(m, int(s), out / f"{m}-s{s}") for m in methods for s in args.seeds.split(",")]
        run = lambda r, fit_only=False: fit_and_test(r[2], write_configs(r[0], r[1], r[2]), "wiki_eval.json", fit_only)
        with ThreadPoolExecutor(args.jobs) as pool:
            # while the partner trains, the other jobs fit the methods that need no reference (every evaluation
            # needs the partner; llm_judge's hours of judging wait for the second phase, last)
            first = [pool.submit(train_partner)] + [pool.submit(run, r, True) for r in runs
                                                    if r[0] not in ("rho1", "spacy_ref", "llm_judge")]
            for f in first:
                print(f.result(), flush=True)
            done = pool.submit(partners_alone, out)
            for msg in pool.map(run, runs):
                print(msg, flush=True)
            print(done.result(), flush=True)
    report(out)


if __name__ == "__main__":
    entry_point(main)()
