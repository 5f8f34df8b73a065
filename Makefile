# Newcomer's commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.u2seg-installed

.PHONY: setup browser demo train-demo test lint compare-rembg clean image test-image

# torch is pinned and installed on its own with pip: 2.13.0 is the local CPU wheel, whereas an
# unpinned torch pulled in by a dependency would be a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps pysodmetrics==1.6.2
	@touch $@

setup: $(STAMP)

demo: setup
	$(PY) examples/sample_images.py demo-output/inputs
	$(VENV)/bin/u2seg remove demo-output/inputs -o demo-output/cutouts --overwrite
	$(VENV)/bin/u2seg remove demo-output/inputs -o demo-output/masks --only-mask --overwrite
	@echo "demo-output/: inputs/ (from scikit-image), cutouts/ (RGBA PNG), masks/ (8-bit PNG)"

# The web page's test drives Debian's Chromium (never a downloaded browser build).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	    { echo "the web-page test needs Debian's chromium: sudo apt-get install chromium" >&2; exit 1; }

# Synthesises a small dataset, trains U²-Net-P from scratch for a few minutes, evaluates, and
# says where the metrics, best weights and previews are.
ifndef RUN
RUN := runs/synthetic_demo-$(shell date +%Y%m%d-%H%M%S)
endif
train-demo: setup
	$(VENV)/bin/u2seg data check configs/synthetic_demo.yaml
	@echo "the pretrained U²-Net-P on the held-out set, before fine-tuning:"
	$(VENV)/bin/u2seg eval --data data/synth_demo/val -m u2netp --out $(RUN)/eval-pretrained --no-progress --no-plots
	$(VENV)/bin/u2seg train configs/synthetic_demo.yaml --set output_dir=$(RUN)
	$(VENV)/bin/u2seg eval configs/synthetic_demo.yaml --set output_dir=$(RUN) --out $(RUN)/eval --no-progress
	$(VENV)/bin/u2seg visualize configs/synthetic_demo.yaml --set output_dir=$(RUN) -o $(RUN)/sheets --limit 8
	@echo
	@echo "$(RUN)/"
	@echo "  eval/metrics.json, eval/pr_curve.png, eval/f_measure.png   held-out scores and plots"
	@echo "  eval-pretrained/metrics.json                              the same before fine-tuning"
	@echo "  sheets/*.png                                              image | label | prediction"
	@echo "  previews/step_*.png                                       the same during training"
	@echo "  best/                                                     weights: u2seg remove IMG -o OUT --weights $(RUN)/best"
	@echo "  metrics.jsonl, metrics.csv, final_metrics.json            training logs"

# One pytest process per test file. In one process that has run most of the suite (OpenVINO,
# onnxruntime, torch in the engines' threads, Qt), a late test died with SIGSEGV and no Python
# trace: at the first subprocess after test_models, or in test_trainer's data-loader forks
# (2026-11-30; not pinned down: no single file or small group reproduces it). A file a process
# costs ~1 minute of start-ups in all; a failing file still lets the others run.
test: setup browser
	@# numba compiles pymatting's kernels on its first import (~80 s here) into its on-disk cache,
	@# once per environment: done before the tests, so no test file's time is that compile.
	$(PY) -c "import pymatting"
	@# Hypothesis's pytest plugin costs ~1.4 s of imports per process: loaded only by the files that use it.
	@failed=""; for f in tests/test_*.py; do echo "== $$f"; start=$$(date +%s); \
	plugins="-p no:hypothesispytest"; if grep -q hypothesis $$f; then plugins=""; fi; \
	$(PY) -m pytest -q $$plugins $$f || failed="$$failed $$f"; echo "== $$f: $$(( $$(date +%s) - start )) s"; done; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed" >&2; exit 1; fi

# The container image (podman or docker; Dockerfile, container/build_image.sh). Where no registry
# answers, its Debian base is made from Debian's packages first (mmdebstrap).
IMAGE ?= localhost/u2seg:latest
image:
	IMAGE=$(IMAGE) bash container/build_image.sh

# Builds the image, then runs it for real (tests/image/): not part of `make test`.
test-image: setup image
	IMAGE=$(IMAGE) $(PY) -m pytest -q -s tests/image

lint: setup
	$(PY) -m pip install --quiet ruff
	$(PY) -m ruff check --select F,E9,B --ignore B008,B905 src tests benchmarks examples

# Mask agreement with rembg on the same weights, U²-Net-P and U²-Net (rembg in its own venv, see
# benchmarks/; --model u2netp or u2net for one: make compare-rembg ARGS="--model u2net").
compare-rembg: setup
	bash benchmarks/setup_rembg.sh
	$(PY) benchmarks/rembg_agreement.py $(ARGS)

clean:
	rm -rf $(VENV) .venv-rembg demo-output .pytest_cache
