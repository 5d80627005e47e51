# The two commands a newcomer needs: `make build` and `make test` (see README.md). `make build`
# installs only what building needs (build/apt-packages.txt, build/requirements.txt); `make test`
# and `make lint` also install the test stack (build/apt-packages-test.txt: containerd, firewalld,
# podman, qemu, dnsmasq...; build/requirements-test.txt: pytest, hypothesis, ruff, mypy...).
#
# PYTHON is the interpreter to build with; a pyenv shim is resolved to the real binary, which the
# frozen build and the source launchers then use. If `make deps` had to create build/venv (a
# Debian python refuses pip installs), every target uses that venv's interpreter instead.
PYTHON ?= python3
VENV := build/venv
PY = $(if $(wildcard $(VENV)/bin/python3),$(VENV)/bin/python3,$(shell $(PYTHON) -c 'import sys; print(sys.executable)'))
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k loopback -x"`.
PYTEST_ARGS ?=
# Extra benchmark arguments, e.g. `make bench BENCH_ARGS="-n 50 loopback"`.
BENCH_ARGS ?=

.PHONY: all deps deps-test build srcbin test test-vm test-fast test-sanitize fuzz lint release deb bench print-python clean distclean

all: build

# Debian packages and PyPI packages, each only when missing: `deps` what building needs,
# `deps-test` that plus the test stack.
deps:
	bash build/install-deps.sh build "$(PYTHON)"

deps-test:
	bash build/install-deps.sh test "$(PYTHON)"

# Freeze every program of build/multicall.py into build/dist/bin/_internal and put the native
# front door (build/frontdoor.c, compiled with gcc) beside it under every program name.
build: deps
	$(PY) build/freeze.py
	touch $(FROZEN)

# The frozen runtime as a file, for the targets that only need *a* current build (deb,
# release): frozen again only when a source file is newer than it (`make build` always freezes).
FROZEN := build/dist/bin/_internal/pycni
FROZEN_SOURCES := $(shell find libcni plugins ipam meta -name '*.py' 2>/dev/null) \
	$(wildcard build/*.py build/frontdoor.c build/systemd/* build/requirements.txt)
$(FROZEN): $(FROZEN_SOURCES)
	bash build/install-deps.sh build "$(PYTHON)"
	$(PY) build/freeze.py
	touch $@

srcbin:
	$(PY) build/srcbin.py

# The whole suite, from source and frozen, against the real kernel in test-owned namespaces.
test: deps-test build
	$(PY) -m pytest $(PYTEST_ARGS)

# Only the kernel tests that boot Debian's kernel under qemu (vlan, ipvlan, dummy, bridge VLANs).
test-vm: deps-test build
	$(PY) -m pytest tests/kernel/test_kernel_vm.py $(PYTEST_ARGS)

# Only the front door built under ASan/UBSan, running each of its paths once (`make test` runs it
# too, once).
test-sanitize: deps-test build
	$(PY) -m pytest tests/fastpath/test_frontdoor.py -k sanitized $(PYTEST_ARGS)

# Iterating without a frozen build: source tests only.
test-fast: deps-test
	PYCNI_ALLOW_NO_FROZEN=1 $(PY) -m pytest -x -q $(PYTEST_ARGS)

# The long fuzz campaign (issues #16, #24): the hypothesis test with many more examples (a fresh
# seed, printed, unless FUZZ_SEED is set), then FUZZ_INPUTS hostile inputs in-process and
# FUZZ_FROZEN_INPUTS through the frozen executables from FUZZ_CAMPAIGN_SEED (and the next seed),
# each in namespaces and a private mount namespace it creates; prints one JSON line of counts
# per campaign (tracebacks, answers without JSON, leftovers: 0), the lines README.md quotes.
FUZZ_EXAMPLES ?= 3000
FUZZ_INPUTS ?= 20000
FUZZ_FROZEN_INPUTS ?= 3000
FUZZ_CAMPAIGN_SEED ?= 1
fuzz: deps-test build
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/robustness/test_fuzz.py $(PYTEST_ARGS)
	$(PY) tests/kit/fuzzkit.py --inputs $(FUZZ_INPUTS) --leaks late --seed $(FUZZ_CAMPAIGN_SEED)
	$(PY) tests/kit/fuzzkit.py --inputs $(FUZZ_FROZEN_INPUTS) --frozen build/dist/bin \
		--seed $$(( $(FUZZ_CAMPAIGN_SEED) + 1 ))

# ruff (lint and format) over everything, mypy over every package with the bodies of untyped
# functions checked too (all must be clean; CI runs this first).
LINT_PATHS := libcni plugins ipam meta build tests benchmarks
lint: deps-test
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy --check-untyped-defs --exclude '^build/(work|venv|dist|release)/' libcni plugins ipam meta build

# build/release/cni-plugins-linux-<arch>-v<version>.tgz, laid out like upstream's.
release: $(FROZEN)
	$(PY) build/release.py

# build/release/pycni_<version>_<arch>.deb: the plugin dir in /opt/cni/bin, cnitool, the
# systemd units, the man page (dpkg-deb only, no network; see build/deb.py). Uses the current
# frozen build; freezes only when there is none or a source file changed since.
deb: $(FROZEN)
	$(PY) build/deb.py

# Our frozen executables against Debian's Go plugins, side by side (root: makes namespaces).
bench: deps-test build
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

# The interpreter every target uses (for scripts such as .ci/run).
print-python:
	@echo $(PY)

clean:
	rm -rf build/dist build/work build/src-bin build/release

# Also forget the venv `make deps` may have created.
distclean: clean
	rm -rf $(VENV)
