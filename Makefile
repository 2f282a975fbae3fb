# tracklens: `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
TL := $(VENV)/bin/tracklens
SAMPLE := samples/astronaut.mp4
export TRACKLENS_HOME ?= $(HOME)/.cache/tracklens

.PHONY: setup system models demo test bench serve clean

# The project venv. torch 2.13.0 goes in first: it is the CPU build on these machines, and
# any other request may pull a multi-GB CUDA build (the [mllm] extra accepts a range that
# includes it). trackeval goes in without its declared dependencies: they pull
# opencv-python 5, which shadows opencv-python-headless 4.x (5.x has no Haar cascades),
# and its scoring code uses none of them.
TORCH ?= torch==2.13.0
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q '$(TORCH)'
	$(PY) -m pip install -q -e '.[test,mllm,serve,finetune]'
	$(PY) -m pip install -q --no-deps 'trackeval==1.3.0'
	touch $@

setup: $(VENV)/.installed

# System packages the integration tests need: a real redis-server, GStreamer's RTSP server
# (driven by Debian's python3, where gi lives) for a real camera, and Debian's Chromium with a
# font for the console's browser tests (Playwright drives it; no browser download).
SYSTEM_PACKAGES := redis-server python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly chromium fonts-dejavu-core
system:
	@{ command -v redis-server >/dev/null && command -v chromium >/dev/null && /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" 2>/dev/null; } || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES); \
	  else echo "the tests need: sudo apt-get install $(SYSTEM_PACKAGES)" >&2; exit 1; fi; }

models: setup
	$(TL) models pull

$(SAMPLE): | setup
	$(TL) sample $@

demo: models $(SAMPLE)
	$(TL) analyze $(SAMPLE) --out out/demo --annotate out/demo/annotated.mp4

test: setup system models
	$(PY) -m pytest

# The live service with the embedded defaults (configs/serve.yaml): http://127.0.0.1:8000, a private
# redis-server unless TRACKLENS_REDIS_URL is set; Ctrl-C stops it.
serve: models
	$(TL) serve

# The pipeline side by side (tracklens bench), the face detectors, an ingest process's memory as
# streams come and go (~5 min), the MLLM estimator against a bare prefill (tiny shapes on a CPU,
# 7B shapes on a GPU), then the live service (~23 min:
# its memory run lasts BENCH_MINUTES; then two ingest nodes of a Ray cluster on this machine and
# three node losses); results in bench/results/.
BENCH_MINUTES ?= 10
bench: models system $(SAMPLE)
	$(TL) bench --video $(SAMPLE) --out bench/results
	$(PY) bench/face_detectors.py --video $(SAMPLE) --out bench/results/face_detectors.json
	$(PY) bench/ingest_memory.py --speed --out bench/results/ingest_memory.json
	$(PY) bench/mllm_gpu.py --out bench/results/mllm_gpu.json
	$(PY) bench/finetune.py --out bench/results/finetune.json
	$(PY) bench/request_policy.py --demo $(SAMPLE) --out bench/results/request_policy.json
	$(PY) bench/service.py --minutes $(BENCH_MINUTES) --out bench/results/service.json

clean:
	rm -rf $(VENV) out samples .pytest_cache
