"""Does a change to the KB checker (lacy/worlds/kb.py) read the generated worlds' documents differently?

Loads the checker of a git revision next to today's and reads every document of the default and the dense world
(validation and training documents, QA documents included) with both: the count of documents whose claims
(entity, attribute, value, span, verdict) differ, and a few of them. Zero means every study number that scores
those documents is unchanged; model-written bios can still differ where they leave the templates.

    python -m experiments.checker_diff REVISION [--show 3]
"""
import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from lacy.errors import ArgumentParser, UsageError, entry_point
from lacy.worlds.closed_world import ClosedWorld

WORLDS = {"default": "configs/world/slm.yaml", "dense": "configs/world/dense.yaml"}


def old_checker(revision: str, folder: Path):
    """The module lacy/worlds/kb.py as it was at ``revision`` (it imports today's lacy for its helpers)."""
    try:
        source = subprocess.run(["git", "show", f"{revision}:lacy/worlds/kb.py"], capture_output=True, text=True,
                                check=True).stdout
    except subprocess.CalledProcessError as err:
        raise UsageError(f"revision {revision!r}: git has no lacy/worlds/kb.py there ({err.stderr.strip()})") from None
    path = folder / "kb_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("kb_old", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("revision", help="a git revision whose checker to compare with (e.g. HEAD~3)")
    p.add_argument("--show", type=int, default=3, help="documents read differently to print per world")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        old = old_checker(args.revision, Path(tmp))
        for name, overlay in WORLDS.items():
            world = ClosedWorld(**yaml.safe_load(open(overlay))["data"]["corpus"]["init_args"])
            new_kb = world.kb()
            new_kb.save(Path(tmp) / f"{name}.json")
            old_kb = old.KnowledgeBase.load(Path(tmp) / f"{name}.json")
            docs = [(p.name, d) for p, d in world.val_documents()] + [(None, d) for d in world.documents()]
            read = lambda kb, text, subject: [(c.entity, c.attribute, c.value, c.start, c.supported)
                                              for c in kb.claims(text, subject)]
            differ, claims = [], 0
            for subject, text in docs:
                a, b = read(new_kb, text, subject), read(old_kb, text, subject)
                claims += len(a)
                if a != b:
                    differ.append((text, sorted(set(a) - set(b)), sorted(set(b) - set(a))))
            print(f"{name} world: {len(docs)} documents, {claims} claims, {len(differ)} documents read differently")
            for text, new, gone in differ[:args.show]:
                print(f"  {text[:160]!r}\n    now: {new}\n    was: {gone}")
    sys.stdout.flush()


if __name__ == "__main__":
    entry_point(main)()
