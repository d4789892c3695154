# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A second environment without Larq, so numpy resolves to 2 (only the larq extra pins numpy < 2).
VENV2 := .venv-numpy2
BIN2 := $(VENV2)/bin
STAMP2 := $(VENV2)/.installed

.PHONY: venv venv-numpy2 demo test test-numpy2 arm64-tools lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv-numpy2: $(STAMP2)

$(STAMP2): pyproject.toml
	$(PYTHON) -m venv $(VENV2)
	$(BIN2)/pip install --quiet --upgrade pip
	$(BIN2)/pip install --quiet -e ".[all,test]"
	$(BIN2)/python -c "import numpy, sys; sys.exit(0 if numpy.__version__.startswith('2.') else 'numpy ' + numpy.__version__ + ' is not 2.x')"
	touch $(STAMP2)

demo: venv
	$(BIN)/compress demo

test: venv
	$(BIN)/ruff check edgecompress tests benchmarks
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

# The suite on numpy 2 without Larq: Larq's tests skip (with their reason); the emulated aarch64
# checks are left to `make test`, since they do not depend on the host's numpy.
test-numpy2: venv-numpy2
	$(BIN2)/python -m pytest -q -n 2 --dist loadgroup -m "not arm64"

# Host tools for `compress deploy --check DIR --arch aarch64` (Debian/Ubuntu, as root).
arm64-tools:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support debootstrap

lint: venv
	$(BIN)/ruff check edgecompress tests benchmarks

clean:
	rm -rf $(VENV) $(VENV2) build *.egg-info .pytest_cache
