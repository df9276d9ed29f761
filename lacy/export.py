"""``python -m lacy.export CKPT OUT_DIR [--no-call]``: a lacy checkpoint as a Hugging Face folder (lacy/io/export.py)."""
from pathlib import Path

from lacy.errors import ArgumentParser, UsageError, entry_point
from lacy.io.export import export_checkpoint
from lacy.io.export import ExportHF

__all__ = ["main", "ExportHF"]  # ExportHF: also here, the class path of lacy 0.1 configs


def main() -> None:
    parser = ArgumentParser(description="Export a lacy checkpoint to a Hugging Face folder.")
    parser.add_argument("ckpt", help="a .ckpt written by `python main.py fit` (or a run folder: its last.ckpt)")
    parser.add_argument("out_dir", help="folder for AutoModelForCausalLM / AutoTokenizer.from_pretrained; "
                                        "new, empty, or an earlier lacy export")
    parser.add_argument("--no-call", action="store_true",
                        help="a plain GPT-2 without the <CALL> row: its distribution is the SLM's p_noCALL")
    args = parser.parse_args()
    if not Path(args.ckpt).exists():
        raise UsageError(f"{args.ckpt}: no such checkpoint; pass a .ckpt written by `python main.py fit` (e.g. "
                         "lightning_logs/version_0/checkpoints/last.ckpt)")
    print(export_checkpoint(args.ckpt, args.out_dir, call=not args.no_call))


if __name__ == "__main__":
    entry_point(main)()
