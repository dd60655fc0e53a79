# Set-up is part of every entry point: `make snapshot` and `make test` work on a fresh machine.
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# command:Debian package, installed only where the command is missing
SYSTEM_TOOLS := bwrap:bubblewrap faketime:faketime minisign:minisign node:nodejs npm:npm nginx:nginx-light wrk:wrk
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup system snapshot test lint benchmarks verdicts reproducibility test-report set-report

setup: system $(VENV)/.installed

system:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --isolated -q -e '.[test]'
	touch $@

snapshot: setup
	$(VENV)/bin/doit snapshot

test: setup
	$(VENV)/bin/ruff check pipeline builders tests benchmarks dodo.py
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	cd tests/js && npm ci --no-audit --no-fund
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check pipeline builders tests benchmarks dodo.py
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

benchmarks: setup
	$(PY) benchmarks/noop_build.py
	$(PY) benchmarks/noop_scale.py
	$(PY) benchmarks/rebuild_time.py
	$(PY) benchmarks/check_scale.py
	cd tests/js && npm ci --no-audit --no-fund
	$(PY) benchmarks/snapshot_throughput.py

verdicts: setup
	$(PY) benchmarks/verdicts.py

reproducibility: setup
	$(PY) benchmarks/reproducibility.py

test-report: setup
	$(PY) benchmarks/test_report.py

set-report: setup
	$(PY) benchmarks/set_report.py
