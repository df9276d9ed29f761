"""The package's shape: no import circle, the core never imports the baselines, every module imports on its own,
and the class paths of lacy 0.1 configs still resolve."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lacy", "baselines")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for f in sorted((ROOT / package).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported project module, line, inside a function) of every import in ``path``; an import inside a function
    that says why (``# here: <the heavy import it saves>``) counts as a top-level one: the arrow is still drawn."""
    found = []
    lines = path.read_text().splitlines()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [f"{child.module}.{a.name}" for a in child.names]
            for name in names:
                target = resolve(name)
                if target:
                    found.append((target, child.lineno, inner and "# here:" not in lines[child.lineno - 1]))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {m: set() for m in modules}
    for m, f in modules.items():
        for target, _, _ in _imports(f, modules):
            parent = m if f.name == "__init__.py" else m.rpartition(".")[0]
            if target != m and target != parent:  # a package's own __init__ is no arrow back
                graph[m].add(target)
    return graph


def test_no_import_circle():
    graph, state, cycles = _graph(), {}, []

    def walk(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                walk(n, path + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            walk(m, [m])
    # lacy/__init__ names every config class lazily (importlib, no arrow); the package itself imports only _legacy
    assert cycles == []


def test_the_core_never_imports_the_baselines_and_no_project_import_hides_in_a_function_unexplained():
    modules = _modules()
    into_baselines = [(m, line) for m, f in modules.items() if m.startswith("lacy")
                      for target, line, _ in _imports(f, modules) if target.startswith("baselines")]
    hidden = [(m, target, line) for m, f in modules.items() for target, line, inner in _imports(f, modules) if inner]
    assert into_baselines == [] and hidden == []


@pytest.mark.slow
def test_every_module_imports_in_a_fresh_interpreter():
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    run = subprocess.run([sys.executable, "-c", code, *sorted(_modules())], cwd=ROOT, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.mark.parametrize("old, new", [
    ("lacy.corpus.WikiSummaries", "lacy.data.corpus"), ("lacy.corpus.JsonlCorpus", "lacy.data.corpus"),
    ("lacy.facts.SpacyFactAnnotator", "lacy.annotators.spacy_facts"), ("lacy.budget.TokenBudget", "lacy.train.budget"),
    ("lacy.checkpoint_io.AtomicCheckpointIO", "lacy.io.checkpoints"), ("lacy.world.ClosedWorld", "lacy.worlds.closed_world"),
    ("lacy.evaluate.KBEvaluation", "lacy.eval.kb_eval"), ("lacy.factscore.WikiEvaluation", "lacy.eval.wiki_eval"),
    ("lacy.nlu.NLUEvaluation", "lacy.eval.nlu"), ("lacy.export.ExportHF", "lacy.io.export"),
    ("lacy.lacy_strategy.LaCy", "lacy.selection.lacy_rule"), ("lacy.LaCy", "lacy.selection.lacy_rule")])
def test_class_paths_of_lacy_0_1_configs_resolve_to_the_same_class(old, new):
    """Run folders keep the config.yaml they ran with; their class paths must still build the same class."""
    import importlib

    def import_object(path: str):  # as jsonargparse resolves a class_path
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module), name)

    cls = import_object(old)
    assert cls.__module__ == new and cls is import_object(f"{new}.{old.rpartition('.')[2]}")
