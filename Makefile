# Urban Functions: `make demo` and `make test` work on a fresh Debian 12 machine.
SHELL := /bin/bash
ROOT := $(abspath .)
PY := $(ROOT)/.venv/bin/python
PROFILE ?= $(ROOT)/.profile
export QT_QPA_PLATFORM ?= offscreen
export QGIS_CUSTOM_CONFIG_PATH := $(PROFILE)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test bench train-sample train-vhr reexport-vhr train-fusion fusion-ablations evidence-osm evidence-osm-seed evidence-vhr screenshots sample-city zip clean help

help:
	@echo "make demo          set up what is missing, classify the sample city with qgis_process"
	@echo "make test          run the test suite (what CI runs)"
	@echo "make bench         speed and memory benchmarks"
	@echo "make train-sample  retrain the bundled sample-city model"
	@echo "make reexport-vhr  export the VHR scene model's weights again as the shared-trunk graph, re-run its map-level study (about 2 min)"
	@echo "make train-vhr     retrain the bundled VHR scene model from ../shared/data/vhr_scenes (about 45 min on 2 CPU cores)"
	@echo "make train-fusion  retrain the fusion model on generated scenes (real VHR scene images from ../shared, simulated NTL/S2/temporal; about 25 min on 2 CPU cores)"
	@echo "make fusion-ablations  the fusion ablation study (6 variants x 3 seeds, short schedule; about 100 min on 2 CPU cores) -> docs/fusion_ablations.md and README"
	@echo "make evidence-osm  train on the real Sentinel-2 clip with real OSM land use (../shared): fine-tuned, from scratch, So2Sat trunk, RandomForest, So2Sat, So2Sat fine-tuned; about 50 min on 2 CPU cores -> docs/osm_evidence.md and README"
	@echo "make evidence-osm-seed  rows (c) and (a) again with training seed 1 on the same held-out blocks and epochs; about 30 min -> docs/osm_evidence_seeds.json"
	@echo "make evidence-vhr  adapt a scene model trained on AID + RSSCN7 to UC Merced with the train job, scored as maps (../shared); about 40 min on 2 CPU cores -> docs/vhr_evidence.md and README"
	@echo "make screenshots   dialog and styled result into docs/"
	@echo "make zip           plugin zip for the QGIS plugin repository, checked like an upload (PLUGIN_EMAIL=maintainer e-mail)"

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) scripts/demo.py --out build/demo

test: setup
	@$(PY) -m pytest tests -ra $(PYTEST_ARGS)

bench: setup
	@$(PY) scripts/bench.py

train-sample: setup
	@$(PY) -m plugin.learning.train_sample --out models/sample_city_fusion.onnx

train-vhr: setup
	@$(PY) -m plugin.learning.train_vhr --out models/vhr_scenes_resnet.onnx

reexport-vhr: setup
	@$(PY) -m plugin.learning.train_vhr --reexport models/vhr_scenes_resnet.onnx

train-fusion: setup
	@$(PY) -m plugin.learning.fusion.train --out models/urban_fusion.onnx

fusion-ablations: setup
	@$(PY) -m plugin.learning.fusion.ablations

evidence-osm: setup
	@$(PY) scripts/osm_evidence.py

evidence-osm-seed: setup
	@$(PY) scripts/osm_evidence.py --runs c,a --seed 1

evidence-vhr: setup
	@$(PY) scripts/vhr_evidence.py

screenshots: setup
	@$(PY) scripts/screenshots.py docs
	@$(PY) scripts/validation_screenshots.py docs
	@$(PY) scripts/lcz_screenshot.py docs
	@$(PY) scripts/train_screenshot.py docs

sample-city: setup
	@$(PY) -m plugin.samplecity --out build/sample_city

zip:
	@python3 scripts/plugin_zip.py

clean:
	rm -rf build dist .pytest_cache
