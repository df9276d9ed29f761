"""Tables and plots of the closed-world study from the finished runs' kb_eval.json files.

Writes ``<out>/results.md`` (mean ± sd over seeds; every number comes from the run folders) and PNGs:
FactScore vs call rate per method (trained partner), FactScore vs fact leakage.
"""
import json
import statistics
from pathlib import Path

COLUMNS = [  # (row, metric, header)
    ("trained_budget", "factscore", "FactScore, trained partner @22%"),
    ("trained_budget", "factscore_penalised", "penalised"),
    ("lookup_budget", "factscore", "FactScore, lookup (oracle) @22%"),
    ("slm_alone", "factscore", "SLM alone"),
    ("slm", "leakage", "leakage"),
    ("slm", "leakage_1", "leak 1 doc"),
    ("slm", "leakage_2-4", "leak 2-4"),
    ("slm", "leakage_5-9", "leak 5-9"),
    ("slm", "leakage_10+", "leak 10+"),
    ("slm", "placement_precision", "call precision (val, 15%)"),
    ("slm", "placement_recall_derived", "recall derived"),
    ("slm", "placement_recall_nonderived", "recall non-derived"),
    ("trained_budget", "cascade_call_precision", "cascade call precision"),
]


def _fmt(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def load(out: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for f in sorted(out.glob("*/kb_eval.json")):
        method = f.parent.name.rsplit("-s", 1)[0]
        runs.setdefault(method, []).append(json.loads(f.read_text()))
    return runs


def report(out: Path) -> Path:
    runs = load(out)
    lines = ["| method | seeds | " + " | ".join(h for _, _, h in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for method, res in runs.items():
        cells = [_fmt([r[row][m] for r in res if m in r.get(row, {})]) for row, m, _ in COLUMNS]
        lines.append(f"| {method} | {len(res)} | " + " | ".join(cells) + " |")
    first = next(iter(runs.values()), [{}])[0]
    if "partner_alone" in first:
        pa = first["partner_alone"]
        lines += ["", f"Partner alone: FactScore {pa['factscore']:.3f} (penalised {pa['factscore_penalised']:.3f}), "
                      f"probe accuracy {pa['leakage']:.3f}."]
    path = out / "results.md"
    path.write_text("\n".join(lines) + "\n")
    _plots(runs, out)
    print(path.read_text())
    return path


def _plots(runs: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, res in runs.items():
        pts = sorted((m["call_rate"], m["factscore"]) for row, m in res[0].items() if row.startswith("trained_budget@"))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    ax.set(xlabel="realised call rate", ylabel="KB FactScore (trained partner)", title="Closed world: FactScore vs calls")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "factscore_vs_call_rate.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, res in runs.items():
        xs = [r["slm"]["leakage"] for r in res]
        ys = [r["trained_budget"]["factscore"] for r in res if "trained_budget" in r]
        if ys:
            ax.scatter(xs[:len(ys)], ys, label=method)
    ax.set(xlabel="fact leakage (SLM alone, probes)", ylabel="FactScore @22% (trained partner)",
           title="Closed world: FactScore vs leakage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "factscore_vs_leakage.png", dpi=120)
    plt.close(fig)
