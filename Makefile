# pyctr: common tasks. Run as root (containers need it).
#   make            venv + install (editable) into .venv
#   make demo       quick start 1: install, build ./rootfs, run a container
#   make test       quick start 2: install test deps, build the test rootfs, run the tests

PYTHON ?= $(shell command -v python3.11 || command -v python3)
# `make install` prefers the distribution's interpreter: Debian builds the socket, struct,
# select and fcntl modules into it (a self-built Python loads each as a shared library), which
# is a millisecond or two off every container's start.
SYSTEM_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo $(PYTHON))
VENV   ?= .venv
PY     := $(VENV)/bin/python
ROOTFS ?= rootfs
PREFIX ?= /usr/local
SYSTEM_VENV ?= /opt/pyctr

.PHONY: all venv install uninstall rootfs create-rootfs demo test lint bench clean clean-rootfs host-deps

all: venv

host-deps:
	@command -v apt-get >/dev/null && ! $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null && \
	  { apt-get update -qq && apt-get install -y -qq python3-venv; } || true

$(PY): pyproject.toml | host-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(PY)

venv: $(PY)

# System-wide: a private venv in $(SYSTEM_VENV) and a link on root's PATH, so that
# `sudo pyctr-supervise` works without activating anything.
# Every start of pyctr-supervise pays for what this environment loads: pip is upgraded first
# (the console script pip 23 writes imports re, ~5 ms), and setuptools, which pip's isolated
# builds do not need here, goes afterwards (its .pth hook runs at every interpreter start).
install:
	@$(MAKE) -s host-deps PYTHON=$(SYSTEM_PYTHON)
	$(SYSTEM_PYTHON) -m venv --clear $(SYSTEM_VENV)
	$(SYSTEM_VENV)/bin/python -m pip install -q --upgrade pip
	@# setuptools builds in ./build/lib and reuses it: a module deleted from the source would
	@# still be installed from there.
	rm -rf build/lib build/bdist.*
	$(SYSTEM_VENV)/bin/python -m pip install -q .
	$(SYSTEM_VENV)/bin/python -m pip uninstall -q -y setuptools
	@# pip's console script goes through the site module; ours does not (see the template).
	site=$$($(SYSTEM_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') && \
	  for tool in pyctr-supervise pyctr; do \
	    sed -e 's|@PYTHON@|$(SYSTEM_VENV)/bin/python|' -e "s|@SITE_PACKAGES@|$$site|" \
	      packaging/$$tool.in > $(SYSTEM_VENV)/bin/$$tool.new && \
	    chmod 755 $(SYSTEM_VENV)/bin/$$tool.new && \
	    mv $(SYSTEM_VENV)/bin/$$tool.new $(SYSTEM_VENV)/bin/$$tool && \
	    ln -sf $(SYSTEM_VENV)/bin/$$tool $(PREFIX)/bin/$$tool || exit 1; \
	  done
	@echo "installed: $(PREFIX)/bin/pyctr-supervise $(PREFIX)/bin/pyctr"

uninstall:
	rm -f $(PREFIX)/bin/pyctr-supervise $(PREFIX)/bin/pyctr
	rm -rf $(SYSTEM_VENV)

$(ROOTFS)/bin/sh:
	rootfs-scripts/build-rootfs --from host --force $(ROOTFS)

rootfs create-rootfs: $(ROOTFS)/bin/sh

demo: venv rootfs
	$(VENV)/bin/pyctr-supervise -h mycontainer $(ROOTFS) /bin/sh -c \
	  'echo "Hello from container $$(hostname)"; echo "my pid: $$$$"; ls /'

test: venv rootfs
	PYCTR_TEST_ROOTFS=$(abspath $(ROOTFS)) $(PY) -m pytest

# mypy cannot see through the editable install's package mapping, so it checks the folders
# through a pyctr/ tree of symlinks that mirrors the installed layout.
BENCHES := $(filter-out %.md %__pycache__,$(wildcard bench/*))

lint: venv
	$(VENV)/bin/ruff check supervisor init protocol linux spec oci tests $(BENCHES) tools/oci-validation
	mkdir -p build/typecheck/pyctr
	for p in supervisor init protocol linux spec oci; do ln -sfn ../../../$$p build/typecheck/pyctr/$$p; done
	MYPYPATH=build/typecheck $(VENV)/bin/mypy -p pyctr.protocol -p pyctr.linux -p pyctr.spec -p pyctr.init -p pyctr.supervisor -p pyctr.oci
	$(VENV)/bin/mypy --strict --scripts-are-modules $(BENCHES) tools/oci-validation

# The benchmarks measure what users run: the regular install (an editable .venv adds an
# import hook to every start, and its interpreter may be another, bigger build).
bench: venv rootfs install
	@for b in bench/*; do [ -x "$$b" ] && [ -f "$$b" ] || continue; \
	  case $$b in bench/throughput) opt="--python $(SYSTEM_VENV)/bin/python";; \
	    *) opt="--pyctr $(PREFIX)/bin/pyctr-supervise";; esac; \
	  echo "== $$b $$opt"; "$$b" --rootfs $(ROOTFS) $$opt || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

clean-rootfs:
	rm -rf $(ROOTFS)
