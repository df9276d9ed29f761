#!/usr/bin/env bash
# Issue 18 item 6: fit the real-text study's SLMs that need no reference model (seed 1), then zero-shot NLU.
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for m in vanilla lacy spacy_only loss_only random_calls; do
  /usr/bin/time -f "$m fit %e s" .venv/bin/python -c "
from pathlib import Path
from experiments.real_text import write_configs
from experiments.runner import fit_and_test
f = Path('runs/wiki_study/$m-s1')
print(fit_and_test(f, write_configs('$m', 1, f), 'wiki_eval.json', fit_only=True), flush=True)
"
  ckpt=$(ls -t runs/wiki_study/$m-s1/lightning_logs/version_*/checkpoints/last.ckpt | head -1)
  /usr/bin/time -f "$m nlu %e s" .venv/bin/python -m lacy.nlu "$ckpt" --limit 200 --out runs/nlu/$m-s1
done
