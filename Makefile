# metafs: `make demo` (the main job) and `make test`. Both install what they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := fuse3 libfuse3-dev pkg-config etcd-server runc busybox-static curl sqlite3 wrk gcc libc6-dev
# only for `make test`: the /ui test's browser, systemd-analyze for the contrib units, openssl
# for the TLS tests' certificates, Docker and Podman (tests/containers/test_engines.py
# starts its own dockerd), Prometheus and Node (the service-discovery clients)
APT_TEST_PACKAGES := chromium chromium-driver systemd docker.io podman openssl prometheus nodejs
DEMO_PORT ?= 8500
DEMO_DIR ?= /tmp/metafs-demo

.PHONY: demo test bench soak lint deps apt venv clean node-client

apt:
	@missing=$$(for p in $(APT_PACKAGES) $(EXTRA_APT); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages: $$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

deps: apt venv

demo: deps
	@bash contrib/demo.sh "$(VENV)" "$(DEMO_PORT)" "$(DEMO_DIR)"

lint: venv
	$(VENV)/bin/ruff check metafs tests
	$(VENV)/bin/ruff format --check metafs tests
	$(VENV)/bin/mypy

# the npm consul client the discovery tests run (versions pinned by its package-lock.json)
NODE_CLIENT := tests/clients/node
node-client: apt
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends npm; }
	@[ -d $(NODE_CLIENT)/node_modules/consul ] || npm ci --prefix $(NODE_CLIENT) --no-audit --no-fund

test: EXTRA_APT = $(APT_TEST_PACKAGES)
node-client: EXTRA_APT = $(APT_TEST_PACKAGES)
test: deps node-client lint
	$(VENV)/bin/pytest -q; status=$$?; tests/unmount-all.sh; exit $$status

bench: deps
	$(PY) -m tests.bench.run; status=$$?; tests/unmount-all.sh; exit $$status

soak: deps  # SOAK_SECONDS=300, then CHURN_ROUNDS=20 of CHURN_UNITS=200 over SQLite and etcd
	$(PY) -m tests.support.soak && $(PY) -m tests.support.churn; status=$$?; tests/unmount-all.sh; exit $$status

clean:
	rm -rf $(VENV) bench-results .pytest_cache .mypy_cache .ruff_cache $(NODE_CLIENT)/node_modules
