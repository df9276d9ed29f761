"""What every evaluation shares: spreading a limit over a list, FActScore's length penalty, the call score a run's
strategy implies, and the report (TensorBoard scalars, a JSON file, a printed table, a plot).

Nothing to score is no score, not 0: a metric over an empty set is None (JSON null, "n/a" in a table, no
TensorBoard scalar).
"""
import io
import json
import math
from pathlib import Path

from lacy.io.marker import check_output, write_output


def spread(items: list, limit: int | None) -> list:
    """``limit`` items spread evenly over the list (worlds list people by popularity: every bucket stays in)."""
    if limit is None or limit >= len(items):
        return items
    return [items[round(i * len(items) / limit)] for i in range(limit)]


def length_penalty(n_facts: int, gamma: int = 10) -> float:
    """FActScore's length penalty: exp(1 - gamma / n) for a response with n < gamma facts, else 1."""
    return math.exp(1 - gamma / n_facts) if n_facts < gamma else 1.0


def call_score(score: str, pl_module) -> str:
    """``auto``: the confidence cascade (``uncertainty``) when the run's strategy trains no ``<CALL>`` (Vanilla),
    the ``<CALL>`` log-odds (``call``) otherwise; any other value as given."""
    if score != "auto":
        return score
    return "call" if pl_module.strategy.makes_calls else "uncertainty"


def output_path(trainer, out: str) -> Path:
    """Where the report file ``out`` goes: a bare name into the run's log folder, a path with a folder as given.
    Read it on every rank (``trainer.log_dir`` is a collective under DDP)."""
    return Path(out) if Path(out).parent != Path(".") else Path(getattr(trainer, "log_dir", None) or ".") / out


def check_outputs(trainer, out: str, siblings: tuple[str, ...] = ()) -> None:
    """Before the test loop: the report ``out`` and its ``siblings`` (e.g. ``_bios.json``, ``.png``: suffixes
    of its stem) may be written there: absent, or files lacy wrote and nobody edited since (lacy.io.marker)."""
    path = output_path(trainer, out)
    for p in (path, *(path.with_name(path.stem + s) for s in siblings)):
        check_output(p, f"the evaluation's out ({out})")


def report(trainer, pl_module, res: dict, prefix: str, out: str, columns: list[str]) -> Path | None:
    """Results to TensorBoard (``<prefix>/<row>/<metric>``), to a JSON file (a bare name lands in the run's log
    folder) and to a printed table; returns the JSON path on rank 0. Call it on every rank: ``trainer.log_dir``
    is a collective (a broadcast) under DDP, so it is read before the rank-0 branch."""
    for row, metrics in res.items():
        for k, v in metrics.items():
            if v is not None and not isinstance(v, str):  # None: nothing to measure (e.g. no bio made a claim);
                # JSON null, no scalar. A name (the top relation) is in the JSON and the table only
                pl_module.log(f"{prefix}/{row}/{k}", float(v), rank_zero_only=True)
    path = output_path(trainer, out)  # every rank: read only on rank 0 it deadlocks the others
    if not trainer.is_global_zero:
        return None
    write_output(path, json.dumps(res, indent=1), f"the evaluation's out ({out})")
    print(format_table(res, columns) + f"\n(written to {path})")
    return path


def plot_sweep(res: dict, path: Path, title: str = "") -> None:
    """FactScore vs call rate, one line per partner, from the ``<partner>_budget[@<rate>]`` rows."""
    import matplotlib  # here: matplotlib's import costs ~1 s and only a sweep plots

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    curves: dict[str, list] = {}
    for row, m in res.items():
        if "_budget" in row:
            if m["factscore"] is not None:  # no bio with a claim: no point
                curves.setdefault(row.split("_budget")[0], []).append((m["call_rate"], m["factscore"]))
    for name, pts in sorted(curves.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{name} partner")
    ax.set(xlabel="realised call rate (share of tokens from the partner)", ylabel="KB FactScore", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_figure(fig, path, "the evaluation's out")
    plt.close(fig)


def write_figure(fig, path: Path, option: str) -> Path:
    """A matplotlib figure as a PNG file lacy owns (lacy.io.marker.write_output: never over a user's file)."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    return write_output(path, png.getvalue(), option)


def format_table(res: dict, cols: list[str]) -> str:
    lines = ["| row | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row, m in res.items():
        cell = lambda v: "n/a" if v is None else v if isinstance(v, str) else f"{v:.3f}"  # n/a: nothing to measure
        lines.append(f"| {row} | " + " | ".join(cell(m[c]) if c in m else "" for c in cols) + " |")
    return "\n".join(lines)


