# The two newcomer entry points (see README): `make demo` and `make test`.
# Both create .venv and install exactly the versions in requirements/pins.txt (the set the suite
# last passed with): torch==2.13.0 first (the CPU wheel here; an unpinned torch would pull
# several GB of CUDA packages), then lipx with the [cpu,train,serve,dev,rtx] extras. PIP_CONSTRAINT also
# reaches pip's isolated build environment, so the build backend (setuptools) is pinned too.
#
# `make test-latest` runs the suite in .venv-latest against the newest versions the index serves
# (torch stays 2.13.0); `make pins` then writes what it installed into requirements/pins.txt.
VENV ?= .venv
LATEST_VENV ?= .venv-latest
PINS := requirements/pins.txt
TORCH := torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lipx-installed
PYTEST_ARGS ?= -q --durations=15

RAY_STAMP := $(VENV)/.lipx-ray-installed

.PHONY: install test test-fast test-ray lint demo test-latest pins clean

$(STAMP): pyproject.toml $(PINS)
	python3 -m venv $(VENV)
	PIP_CONSTRAINT=$(abspath $(PINS)) $(PY) -m pip install --quiet $(TORCH)
	PIP_CONSTRAINT=$(abspath $(PINS)) $(PY) -m pip install --quiet -e ".[cpu,train,serve,dev,rtx]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The fast lane (2 minutes on a Zen 5 core, 3.5 on an AVX2-only EPYC): the tests not marked slow.
# `make test` takes 12.5 and 20 minutes there; --durations lists the slowest tests of each run.
test-fast: install
	$(PY) -m pytest $(PYTEST_ARGS) -m "not slow"

# lipx serve --ray on a local cluster (`ray start --head`, 2 replicas): Ray is heavy, so these
# tests have their own target (and .ci/run runs it after `make test`); it adds lipx[ray].
$(RAY_STAMP): $(STAMP)
	PIP_CONSTRAINT=$(abspath $(PINS)) $(PY) -m pip install --quiet -e ".[cpu,train,serve,dev,rtx,ray]"
	touch $(RAY_STAMP)

test-ray: $(RAY_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) --ray -m ray

# ruff; mypy over the whole program (pyproject: files = ["lipx"], the lipx/ links to the folders);
# lint-imports: the layers contract in pyproject (the ground, the runtime without torch, ...).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

demo: install
	$(VENV)/bin/lipx demo

# Drift on purpose: a fresh venv with the newest releases (no pins but torch), then the suite.
test-latest:
	rm -rf $(LATEST_VENV)
	python3 -m venv $(LATEST_VENV)
	echo "$(TORCH)" > $(LATEST_VENV)/torch-pin.txt
	$(LATEST_VENV)/bin/python -m pip install --quiet $(TORCH)
	PIP_CONSTRAINT=$(abspath $(LATEST_VENV))/torch-pin.txt $(LATEST_VENV)/bin/python -m pip \
		install --quiet --upgrade --upgrade-strategy eager -e ".[cpu,train,serve,dev,rtx,ray]"
	$(LATEST_VENV)/bin/python -m pip freeze --all --exclude-editable \
		| grep -v '^torch==\|^pip==' | LC_ALL=C sort > $(LATEST_VENV)/freeze.txt
	@echo "--- versions that moved from $(PINS) (< pinned, > newest):"
	@grep -v '^#\|^torch==' $(PINS) | LC_ALL=C sort | diff - $(LATEST_VENV)/freeze.txt \
		| grep '^[<>]' || echo "(none)"
	$(LATEST_VENV)/bin/python -m pytest $(PYTEST_ARGS) --ray

# After a green `make test-latest`: record what it installed as the new pins.
pins:
	test -f $(LATEST_VENV)/freeze.txt || { echo "run make test-latest first"; exit 1; }
	{ echo "# Exact versions \`make test\` installs: the set the suite last passed with."; \
	  echo "# Refresh: make test-latest (newest releases, torch kept), then make pins; commit."; \
	  echo "$(TORCH)"; cat $(LATEST_VENV)/freeze.txt; } > $(PINS)

clean:
	rm -rf $(VENV) $(LATEST_VENV) build *.egg-info
