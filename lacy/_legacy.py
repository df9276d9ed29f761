"""Module paths of lacy 0.1 (one flat package), still importable: the class paths in configs and run folders
written before the package had parts (e.g. ``lacy.corpus.WikiSummaries`` -> ``lacy.data.corpus``).

Each old module name is the new module itself, imported on first use. The commands that kept their names
(``lacy.world``, ``lacy.evaluate``, ``lacy.nlu``, ``lacy.export``) import the class their old path named.
"""
import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {"lacy.corpus": "lacy.data.corpus", "lacy.tokenizer": "lacy.data.tokenizer",
         "lacy.facts": "lacy.annotators.spacy_facts", "lacy.budget": "lacy.train.budget",
         "lacy.module": "lacy.train.module", "lacy.objective": "lacy.train.objective",
         "lacy.strategy": "lacy.selection.strategy", "lacy.lacy_strategy": "lacy.selection.lacy_rule",
         "lacy.cascade": "lacy.inference.cascade", "lacy.factscore": "lacy.eval.wiki_eval",
         "lacy.kb": "lacy.worlds.kb", "lacy.checkpoint_io": "lacy.io.checkpoints", "lacy.monitor": "lacy.io.monitor"}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        """Nothing to run: the module is the new one, already imported (its own name and spec unchanged)."""


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
