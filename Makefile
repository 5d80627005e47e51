# The two commands a newcomer needs: `make build` and `make test` (see README.md).
# PYTHON is the real interpreter (not a pyenv shim): frozen builds and source launchers use it.
PYTHON ?= $(shell python3 -c 'import sys; print(sys.executable)')

.PHONY: all deps build srcbin test test-fast lint release bench clean

all: build

deps:
	bash build/install-deps.sh "$(PYTHON)"

build: deps
	$(PYTHON) build/freeze.py

srcbin:
	$(PYTHON) build/srcbin.py

# The whole suite, from source and frozen, against the real kernel in test-owned namespaces.
test: build
	$(PYTHON) -m pytest

# Iterating without a frozen build: source tests only.
test-fast:
	PYCNI_ALLOW_NO_FROZEN=1 $(PYTHON) -m pytest -x -q

lint:
	$(PYTHON) -m ruff check libcni plugins ipam meta build tests benchmarks
	$(PYTHON) -m mypy libcni

release: build
	$(PYTHON) build/release.py

bench: build
	$(PYTHON) benchmarks/bench.py

clean:
	rm -rf build/dist build/work build/src-bin build/release
