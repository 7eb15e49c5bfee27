# Thin entry points; the logic lives in the Python packages.
#   make demo   build the agent package and a QEMU image, boot it, attack it, show the alert
#   make test   lint + every test, QEMU boots included

VENV    ?= .venv
BIN     := $(VENV)/bin
PYTHON  ?= python3
STAMP   := $(VENV)/.stamp-deps
PYTEST  := $(BIN)/pytest
LINTED  := agent installer tools qemu-tests tests
# Building an image needs root (mmdebstrap --mode=root, chroot): use sudo when not root.
AS_ROOT := $(if $(filter 0,$(shell id -u)),,sudo -E)

.PHONY: demo test lint unit agent-pythons qemu-test deps sysdeps docs clean

demo: deps
	$(AS_ROOT) $(BIN)/defender-tools demo

test: lint unit agent-pythons qemu-test

deps: sysdeps $(STAMP)

sysdeps:
	@scripts/install-system-deps.sh

# _version.py: the installed distributions' metadata carries the version.
$(STAMP): requirements-dev.txt agent/pyproject.toml installer/pyproject.toml tools/pyproject.toml \
		agent/src/defender_agent/_version.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt -e agent -e installer -e tools
	touch $@

lint: deps
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy --config-file agent/pyproject.toml agent/src
	cd installer && ../$(BIN)/mypy src
	cd tools && ../$(BIN)/mypy src
	cd meta-defender && ../$(BIN)/oelint-adv --quiet $$(find . -name '*.bb' -o -name '*.bbappend' -o -name '*.inc' -o -name '*.conf' | sort)
	scripts/shellcheck.sh

unit: deps
	$(PYTEST) -m "not qemu"

# The agent's unit tests on Python 3.9 (Debian 11), 3.13 (Debian 13) and 3.14 (sid), each in a
# cached Debian chroot (mmdebstrap --mode=root and mounts need root).
agent-pythons: deps
	$(AS_ROOT) $(BIN)/defender-tools pythons test

qemu-test: deps
	$(AS_ROOT) $(PYTEST) -m qemu

# Regenerate the files derived from the agent's config schema (tests fail when stale).
docs: deps
	$(BIN)/defender-agent config reference > docs/configuration.md
	$(BIN)/defender-agent config defaults > agent/packaging/agent.toml

clean:
	rm -rf build dist $(VENV)
