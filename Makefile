# The two newcomer entry points (see README): `make demo` and `make test`.
# Both create .venv, install torch==2.13.0 first (the CPU wheel here; an unpinned torch would
# pull several GB of CUDA packages), then lipx with the [cpu,dev] extras.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lipx-installed

.PHONY: install test demo clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[cpu,dev]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/lipx demo

clean:
	rm -rf $(VENV) build *.egg-info
