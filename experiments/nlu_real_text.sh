#!/usr/bin/env bash
# Issue 18 item 6: fit the real-text study's SLMs (seed 1), then zero-shot NLU of each (lacy.nlu, 200 items/task).
#   experiments/nlu_real_text.sh [METHOD ...]      (default: every method of experiments.real_text.METHODS)
# Resumable: a fitted run has fit.done, a scored one runs/nlu/<m>-s1/nlu.json. Rho-1 and spaCy+reference need the
# trained partner (runs/wiki/partner/hf, ~70 min on one thread), trained first when missing. One thread per call:
# run two lanes at once on two cores, e.g. `... loss_only random_calls` and `... rho1 spacy_ref`.
set -eu
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
methods=("$@")
[ ${#methods[@]} -gt 0 ] || read -ra methods <<< "$(.venv/bin/python -c 'from experiments.real_text import METHODS; print(*METHODS)')"
for m in "${methods[@]}"; do
  [ -f "runs/nlu/$m-s1/nlu.json" ] && { echo "$m: NLU cached"; continue; }
  /usr/bin/time -f "$m fit %e s" .venv/bin/python -c "
from pathlib import Path
from experiments.real_text import train_partner, write_configs
from experiments.runner import fit_and_test
if '$m' in ('rho1', 'spacy_ref'):
    print(train_partner(), flush=True)
f = Path('runs/wiki_study/$m-s1')
print(fit_and_test(f, write_configs('$m', 1, f), 'wiki_eval.json', fit_only=True), flush=True)
"
  ckpt=$(ls -t runs/wiki_study/$m-s1/lightning_logs/version_*/checkpoints/last.ckpt | head -1)
  /usr/bin/time -f "$m nlu %e s" .venv/bin/python -m lacy.nlu "$ckpt" --limit 200 --out "runs/nlu/$m-s1"
done
