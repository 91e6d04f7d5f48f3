# `make test` is the one test command (README, .ci/run): install, lint, type-check, architecture contracts, tests.
PY ?= python3

.PHONY: install test lint typecheck cluster
install:
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@# promtool lints every component's /metrics in the tests (Debian package prometheus); without it they skip.
	@command -v promtool >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
		|| echo "promtool could not be installed: the metrics lint tests will skip"

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck:
	$(PY) -m mypy -p warmserve.protocol -p warmserve.operator -p warmserve.worker -p warmserve.gateway -p warmserve.replay -p warmserve.sim -p warmserve.local -m warmserve.cli
	$(PY) -m mypy hatch_build.py
	lint-imports

# The test control plane (kube-apiserver, etcd, scheduler, controller-manager, kubectl, helm), built from source
# into a cache outside the repo; a no-op once built (docs/test-cluster.md).
cluster:
	e2e/cluster/build.sh

test: install lint typecheck cluster
	$(PY) -m pytest
