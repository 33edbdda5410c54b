# Set-up and entry points. `make demo` and `make test` install everything first (into .venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYRIGHT_VERSION := 1.1.414
PYRIGHT := .tools/node_modules/.bin/pyright

.PHONY: install test test-fast test-all typecheck typecheck-tree demo int8 bench clean

install: $(STAMP)

# torch is installed first and pinned: the CPU wheel lies on local disk; any other torch
# requirement could pull a multi-GB CUDA build. tensorrt-stubs is installed without its
# dependency (a TensorRT download stub that fails) into .tools/, outside the venv: it only
# serves the type checker, and inside the venv its bare `tensorrt/` folder would import as an
# empty namespace package that ModelOpt mistakes for TensorRT. nvidia-pytriton is installed
# for the tritonserver binary it bundles (`stae serve`), also without its dependencies: its
# numpy<2 pin would downgrade numpy under torch and OpenCV; nothing imports its Python code.
TRT_STUBS := .tools/tensorrt-stubs
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	$(BIN)/python -m pip install --quiet --no-deps --upgrade --target $(TRT_STUBS) \
		tensorrt-stubs==10.13.0.35.1
	$(BIN)/python -m pip install --quiet --no-deps nvidia-pytriton==0.7.0
	touch $(STAMP)

# TensorRT code cannot run here; pyright (mypy cannot parse TensorRT's stubs) checks every call
# against the TensorRT 10 API instead.
$(PYRIGHT):
	npm install --silent --prefix .tools pyright@$(PYRIGHT_VERSION)

# pyright cannot follow setuptools' editable finder, which maps stae_deploy.runtime onto runtime/
# and so on: it reads `stae_deploy` from a tree of symlinks laid out by pyproject.toml's
# package-dir (pyrightconfig.json's extraPaths), made afresh each time.
TYPECHECK_TREE := .tools/typecheck
typecheck-tree: install
	rm -rf $(TYPECHECK_TREE)
	$(BIN)/python -c 'import os, tomllib; \
	dirs = tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["package-dir"]; \
	root = "$(TYPECHECK_TREE)/stae_deploy"; os.makedirs(root); \
	[os.symlink(os.path.abspath(os.path.join(dirs["stae_deploy"], name)), os.path.join(root, name)) \
	 for name in os.listdir(dirs["stae_deploy"])]; \
	[os.symlink(os.path.abspath(folder), os.path.join(root, package.split(".", 1)[1])) \
	 for package, folder in dirs.items() if package != "stae_deploy"]'

typecheck: install $(PYRIGHT) typecheck-tree
	$(PYRIGHT)

test: install typecheck
	$(BIN)/python -m pytest -m "not slow"

# The unit tier (under a minute on 2 cores): leaves out the slow tests and the integration ones
# (those that export, train or roll out for long; tests/conftest.py and the marks say which).
test-fast: install typecheck-tree
	$(BIN)/python -m pytest -m "not slow and not integration"

test-all: install typecheck
	$(BIN)/python -m pytest

# The demo: the committed CPU-trained checkpoint, exported to ONNX and checked against PyTorch,
# then streamed by the runtime over the city clip (frames 93-115 are held out from training).
DEMO_CKPT := stae_ref/checkpoints/demo/stae_demo.pt
DEMO_HELD_OUT_FROM := 93
demo: install
	$(BIN)/stae data
	mkdir -p out
	$(BIN)/stae export --checkpoint $(DEMO_CKPT) -o out/stae_demo.onnx --force --steps 100 \
		--clip city --quiet --plot out/parity_psnr.png
	$(BIN)/stae predict --checkpoint $(DEMO_CKPT) --clip city --output-dir out --force
	$(BIN)/stae run out/stae_demo.onnx --input "$$($(BIN)/stae data city --json | \
		$(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)["city"])')" \
		--max-frames 116 --output out/demo_side_by_side.mp4 --metrics out/demo_metrics.jsonl \
		--latency-plot out/demo_latency.png --force --quiet
	$(BIN)/stae report --metrics out/demo_metrics.jsonl --reference out/reference_psnr.json \
		--held-out-from $(DEMO_HELD_OUT_FROM) --output-dir out --force
	@echo "demo outputs are in $(CURDIR)/out/: demo_side_by_side.mp4, demo_psnr.png,"
	@echo "  demo_latency.png, summary.txt, parity_psnr.png, reference_side_by_side.mp4"

# INT8 and FP16 of the demo model, with their drift over 1000 held-out steps per clip and the
# per-group sensitivity table (about 21 minutes here). Run after `make demo` (uses its ONNX).
int8: install
	test -f out/stae_demo.onnx || $(MAKE) demo
	$(BIN)/stae calibrate out/stae_demo.onnx -o out/calib.npz --force
	$(BIN)/stae quantize out/stae_demo.onnx --calib out/calib.npz -o out/stae_demo.int8.onnx \
		--target tensorrt --force --checkpoint $(DEMO_CKPT) --quiet
	$(BIN)/stae quantize out/stae_demo.onnx --calib out/calib.npz \
		-o out/stae_demo.int8_ort.onnx --target onnxruntime --force --checkpoint $(DEMO_CKPT) --quiet
	$(BIN)/stae fp16 out/stae_demo.onnx -o out/stae_demo.fp16.onnx --force --no-check
	$(BIN)/stae drift out/stae_demo.onnx out/stae_demo.int8.onnx out/stae_demo.int8_ort.onnx \
		out/stae_demo.fp16.onnx --steps 1000 --plot out/drift.png --force --json > out/drift.json
	$(BIN)/stae sensitivity out/stae_demo.onnx --calib out/calib.npz --steps 100 \
		-o out/sensitivity.md --force
	$(BIN)/python -m stae_deploy.benchmarks.int8_speed out/stae_demo.onnx out/stae_demo.int8_ort.onnx \
		out/stae_demo.int8.onnx out/stae_demo.fp16.onnx --steps 80 | tee out/int8_speed.jsonl
	@echo "INT8 outputs are in $(CURDIR)/out/: drift.json, drift.png, sensitivity.md, int8_speed.jsonl"

# Every backend side by side at 256 and 512 (paper config, seeded weights), interleaved step by
# step, with peak RSS and the op-time profile (about 4 minutes here). A benchmark, not a test.
bench: install
	mkdir -p out
	$(BIN)/stae bench --frame-sizes 256 512 --profile --json out/bench.json \
		--markdown out/bench.md --plot out/bench.png --force

clean:
	rm -rf $(VENV) .tools out .pytest_cache
