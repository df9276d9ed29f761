#!/usr/bin/env bash
# Behaviour unchanged across a refactor: a fixed-seed tiny LaCy fit + `main.py test` on a small closed world, at an
# earlier revision and at the working tree, compared byte for byte (kb_eval.json, every checkpoint tensor, the
# Hugging Face export), plus the earlier revision's checkpoint exported by today's code. The configs are the earlier
# revision's own (its class paths, e.g. lacy.corpus.WikiSummaries, must still resolve today).
#   experiments/behaviour_check.sh REV [OUT]      e.g. experiments/behaviour_check.sh 2e6ff49   (~4 min on 2 cores)
set -euo pipefail
REV=${1:?give the earlier revision}; OUT=${2:-/tmp/lacy-behaviour}; ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=$ROOT/.venv/bin/python; export OMP_NUM_THREADS=1
rm -rf "$OUT"; mkdir -p "$OUT"; git -C "$ROOT" worktree add -q --detach "$OUT/src" "$REV"
trap 'git -C "$ROOT" worktree remove --force "$OUT/src"' EXIT
git -C "$ROOT" show "$REV:configs/lacy.yaml" > "$OUT/lacy.yaml"
cat > "$OUT/overlay.yaml" <<YAML
trainer: {max_steps: 40, val_check_interval: 20, enable_progress_bar: false,
          callbacks+: [{class_path: lacy.evaluate.KBEvaluation, init_args: {partner: null, limit: 24, modes: [never, always, budget]}}]}
model: {preset: tiny}
data: {corpus: {class_path: lacy.world.ClosedWorld, init_args: {people: 60, seed: 0, rounds: 2, qa_fraction: 0.5}}, bpe_vocab_size: 512}
YAML
run() {  # run TAG REPO: fit + test in REPO's code, results to $OUT/TAG
  local d=$OUT/$1; mkdir -p "$d"
  local args=(--config "$OUT/lacy.yaml" --config "$OUT/overlay.yaml" --trainer.default_root_dir "$d/run" --data.cache_dir "$d/cache" --seed_everything 7)
  (cd "$2" && $PY main.py fit "${args[@]}" > "$d/fit.log" 2>&1)
  local ck=$d/run/lightning_logs/version_0/checkpoints/last.ckpt
  (cd "$2" && $PY main.py test "${args[@]}" --ckpt_path "$ck" > "$d/test.log" 2>&1)
  cp "$(ls -t "$d"/run/lightning_logs/*/kb_eval.json | head -1)" "$d/kb_eval.json"
  $PY -c "import sys, torch, hashlib; sd = torch.load(sys.argv[1], weights_only=True)['state_dict']
for k in sorted(sd): print(k, tuple(sd[k].shape), hashlib.sha256(sd[k].numpy().tobytes()).hexdigest()[:16])" "$ck" > "$d/tensors.txt"
  (cd "$d/run/lightning_logs/version_0/hf" && sha256sum model.safetensors config.json tokenizer.json) > "$d/export.txt"
}
run before "$OUT/src"; run after "$ROOT"
(cd "$ROOT" && $PY -m lacy.export "$OUT/before/run/lightning_logs/version_0/checkpoints/last.ckpt" "$OUT/reexport" > /dev/null)
(cd "$OUT/reexport" && sha256sum model.safetensors config.json tokenizer.json) > "$OUT/reexport.txt"
status=0
for f in kb_eval.json tensors.txt export.txt; do
  if cmp -s "$OUT/before/$f" "$OUT/after/$f"; then echo "same: $f"; else echo "DIFFERENT: $f"; status=1; fi
done
if cmp -s "$OUT/before/export.txt" "$OUT/reexport.txt"; then echo "same: the earlier checkpoint exported today"
else echo "DIFFERENT: the earlier checkpoint exported today"; status=1; fi
exit $status
