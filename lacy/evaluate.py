"""``python -m lacy.evaluate PARTNER``: check a trained partner on its closed world before SLMs are compared against
it (its probe accuracy and FactScore alone, cached in the partner's folder). The evaluation itself runs at
``main.py test`` (lacy/eval/kb_eval.py)."""
import json

from lacy.cli import world_from_configs
from lacy.data.tokenizer import load_tokenizer
from lacy.errors import ArgumentParser, entry_point
from lacy.eval.kb_eval import load_partner
from lacy.eval.kb_metrics import partner_alone
from lacy.model.loading import local_model_folder
from lacy.worlds.closed_world import ClosedWorld
from lacy.eval.kb_eval import KBEvaluation

__all__ = ["main", "KBEvaluation"]  # KBEvaluation: also here, the class path of lacy 0.1 configs


def main(argv=None):
    """Check a trained partner on a closed world before training SLMs against it (issue 3: >= 70% of probes)."""
    p = ArgumentParser(description=main.__doc__)
    p.add_argument("partner", help="the partner's Hugging Face folder (e.g. runs/world/partner/hf)")
    p.add_argument("--config", action="append",
                   help="the partner's training config (its data.corpus is the world, e.g. "
                        "configs/world/dense-partner.yaml); else --people/--seed")
    p.add_argument("--people", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-probe-accuracy", type=float, default=0.7)
    args = p.parse_args(argv)
    folder = local_model_folder(args.partner, "partner", "give the partner's exported folder, e.g. "
                                "runs/world/partner/hf (`make partner` trains it)")
    tok = load_tokenizer(folder, option=f"partner {args.partner!r}")
    model = load_partner(args.partner, tok)
    world = world_from_configs(args.config)[0] if args.config else ClosedWorld(people=args.people, seed=args.seed)
    m = partner_alone(args.partner, model, tok, world.kb(), world.prompts(), world.kb().probes())
    print(json.dumps(m, indent=1))
    if m["leakage"] < args.min_probe_accuracy:
        raise SystemExit(f"partner {args.partner} answers {m['leakage']:.1%} of the probes alone, below "
                         f"{args.min_probe_accuracy:.0%}: train it longer (configs/world/partner.yaml max_steps/rounds)")


if __name__ == "__main__":
    entry_point(main)()
