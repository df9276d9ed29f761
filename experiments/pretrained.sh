#!/usr/bin/env bash
# Issue 25 item 5: SmolLM2-135M-Instruct continued on the Wikipedia summaries with Vanilla and with LaCy
# (configs/pretrained/, the same 204,800 ground-truth-gradient tokens), then what that makes measurable.
#   experiments/pretrained.sh fit        # both fits, ~50 min each on 2 cores (README "Your own model");
#                                        #   `fit lacy_full`: LaCy under model.noncall_softmax: full (a third fit)
#   experiments/pretrained.sh nlu        # NLU of base, Vanilla- and LaCy-continued (LIMIT=300 items per task;
#                                        #   resumable, and a larger LIMIT scores only the items not yet scored)
#   experiments/pretrained.sh calls      # <CALL> placement on the hand-labelled fact words (experiments/call_words.py)
#   experiments/pretrained.sh generate   # plain generate() of the LaCy-continued export with <CALL> let through
#   experiments/pretrained.sh realtext   # the real-text test (configs/eval/wiki_retrieval.yaml) of base, Vanilla, LaCy
# Resumable: a fitted run has runs/pretrained/<name>/fit.done; an interrupted fit resumes from its last.ckpt.
# Both cores per job (the fits run one after the other: two 135M fits at once need ~21 GiB).
set -eu
cd "$(dirname "$0")/.."
py=.venv/bin/python

fit() {  # fit NAME CONFIG
  local d=runs/pretrained/$1 last
  [ -f "$d/fit.done" ] && { echo "$1: fitted"; return; }
  mkdir -p "$d"
  last=$(ls -t "$d"/lightning_logs/version_*/checkpoints/last.ckpt 2>/dev/null | head -1 || true)
  /usr/bin/time -f "$1 fit %e s, peak %M KiB" $py main.py fit --config "$2" --trainer.default_root_dir "$d" \
    --trainer.enable_progress_bar false ${last:+--ckpt_path "$last"} >> "$d/log.txt" 2>&1
  touch "$d/fit.done"
  echo "$1: fitted"
}

nlu() {  # nlu NAME: zero-shot NLU of the base model (base) or a fitted run's final weights, LIMIT items per task
  local out=runs/pretrained/nlu/$1 model=smollm2
  grep -qs "\"limit\": $LIMIT," "$out/nlu.json" && { echo "$1: NLU at $LIMIT items cached"; return; }
  # (another LIMIT: lacy.nlu resumes from the items already scored in $out/items.jsonl)
  if [ "$1" != base ]; then
    [ -f "runs/pretrained/$1/fit.done" ] || { echo "$1: not fitted yet (experiments/pretrained.sh fit)" >&2; exit 2; }
    model=$(ls -t runs/pretrained/$1/lightning_logs/version_*/checkpoints/last.ckpt | head -1)
  fi
  mkdir -p runs/pretrained
  # items scored in an earlier session (committed, keyed by the weights' digest: lacy.nlu reuses only matching ones)
  if [ -f "experiments/data/nlu/$1.items.jsonl" ] && [ ! -e "$out/items.jsonl" ]; then
    mkdir -p "$out" && cp "experiments/data/nlu/$1.items.jsonl" "$out/items.jsonl"
  fi
  /usr/bin/time -f "$1 nlu %e s" $py -m lacy.nlu "$model" --limit "$LIMIT" --out "$out" > "runs/pretrained/nlu-$1.log" 2>&1
  echo "$1: NLU written to $out/nlu.json"
}

config_of() {  # config_of NAME: the fit's config (base: Vanilla's, for the pretrained weights as hosted)
  case "$1" in
    base|vanilla) echo configs/pretrained/smollm2-135m-vanilla.yaml ;;
    lacy) echo configs/pretrained/smollm2-135m.yaml ;;
    lacy_full) echo configs/pretrained/smollm2-135m-full.yaml ;;
    *) echo "experiments/pretrained.sh: unknown model '$1' (base, vanilla, lacy, lacy_full)" >&2; exit 2 ;;
  esac
}

realtext() {  # realtext NAME: cascade bios of the held-out people with a plain and a retrieval partner (issue 26)
  local out=runs/pretrained/realtext/$1 config ckpt=()
  config=$(config_of "$1")
  [ -f "$out/wiki_eval.json" ] && { echo "$1: real-text test cached"; return; }
  if [ "$1" != base ]; then  # base: the pretrained weights as hosted (<CALL> appended, p_noCALL unchanged)
    [ -f "runs/pretrained/$1/fit.done" ] || { echo "$1: not fitted yet (experiments/pretrained.sh fit)" >&2; exit 2; }
    ckpt=(--ckpt_path "$(ls -t runs/pretrained/$1/lightning_logs/version_*/checkpoints/last.ckpt | head -1)")
  fi
  mkdir -p "$out"
  /usr/bin/time -f "$1 realtext %e s" $py main.py test --config "$config" --config configs/eval/wiki_retrieval.yaml \
    --trainer.callbacks+.out "$out/wiki_eval.json" --trainer.default_root_dir "$out" \
    --trainer.enable_progress_bar false "${ckpt[@]}" > "$out/log.txt" 2>&1
  echo "$1: real-text test written to $out/wiki_eval.json"
}

LIMIT=${LIMIT:-300}  # items per task, spread over it (lacy.eval.nlu.subset); the CPU's budget, not the goal
case "${1:-fit}" in
  fit)  # experiments/pretrained.sh fit [vanilla lacy lacy_full]   (default: vanilla lacy)
    shift; models=("$@"); [ ${#models[@]} -gt 0 ] || models=(vanilla lacy)
    for m in "${models[@]}"; do fit "$m" "$(config_of "$m")"; done ;;
  nlu)  # experiments/pretrained.sh nlu [base vanilla lacy]   (one model after another, 2 threads)
    shift; models=("$@"); [ ${#models[@]} -gt 0 ] || models=(base vanilla lacy)
    for m in "${models[@]}"; do nlu "$m"; done ;;
  calls)  # where <CALL> goes on hand-labelled fact words (LaCy's call score, Vanilla's uncertainty), minutes
    [ -f runs/pretrained/call_words.jsonl ] || $py -m experiments.call_words runs/pretrained/lacy \
      runs/pretrained/vanilla --out runs/pretrained/call_words.jsonl ;;
  generate)  # plain generate() with <CALL> let through, the held-out people's "<name> was"
    $py -m experiments.plain_generate runs/pretrained/lacy --wiki --prompts 50 | tee runs/pretrained/generate.jsonl ;;
  realtext)  # experiments/pretrained.sh realtext [base vanilla lacy]; then python -m experiments.pretrained_real_text
    shift; models=("$@"); [ ${#models[@]} -gt 0 ] || models=(base vanilla lacy)   # or lacy_full, once fitted
    for m in "${models[@]}"; do realtext "$m"; done ;;
  *) echo "experiments/pretrained.sh: unknown step '$1' (fit, nlu, calls, generate, realtext)" >&2; exit 2 ;;
esac
