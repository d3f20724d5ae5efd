# kokpit — the two commands a newcomer needs are `make demo` and `make test`.
# Every target installs what it needs: the virtualenv from requirements.lock (hash-pinned),
# the Kubernetes binaries (built once from Go modules into ~/.cache/kokpit/bin) and, for the
# tests and the demo, Debian packages from apt when missing: OpenSSH's sshd, and what a real node
# of the meta-cluster runs besides kubelet and kube-proxy (containerd, runc, the CNI plugins,
# iptables, conntrack).

VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
K8S     ?= v1.36.3
K8S_PREVIOUS ?= v1.35.4
PYTEST  ?= $(PY) -m pytest

.PHONY: help venv assets host-deps demo test test-unit test-e2e test-slow lint fmt generate bench \
	lock clean

help:
	@echo "make demo   start the local meta-cluster and walk through kokpit"
	@echo "make test   lint, unit tests and e2e tests (slow ones too) on a real local control plane"
	@echo "other: venv assets host-deps test-unit test-e2e test-slow lint fmt generate bench lock clean"

$(STAMP): requirements.lock pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(STAMP)

# The default release, and the previous minor that upgrade and rollback tests start from.
assets: $(STAMP)
	$(PY) -m kokpit local build --version $(K8S)
	$(PY) -m kokpit local build --version $(K8S_PREVIOUS)

# The ssh executor's e2e tests run real OpenSSH servers as simulated hosts (kokpit/providers/machine/sshd.py).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT  := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

# Real nodes (kokpit/local/realnode.py) need containerd, runc, the CNI plugins in /usr/lib/cni,
# iptables and conntrack.
HOST_PACKAGES := openssh-server containerd runc containernetworking-plugins iptables conntrack
HOST_FILES    := /usr/sbin/sshd /usr/bin/containerd /usr/bin/ctr /usr/sbin/runc \
	/usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/portmap /usr/sbin/iptables \
	/usr/sbin/conntrack

host-deps:
	@for f in $(HOST_FILES); do test -x $$f || missing=1; done; \
	test -z "$$missing" || $(APT) install -y -q $(HOST_PACKAGES) \
		|| { $(APT) update -q && $(APT) install -y -q $(HOST_PACKAGES); }

demo: assets host-deps
	$(PY) -m kokpit demo

# `make test` runs everything, the `slow` scenarios too (under 20 minutes on 2 cores once the
# binaries are built), as two pytest sessions at once, each with a meta-cluster of its own:
# the tests that start real nodes (one after another: they share the machine's iptables
# chains) beside all the others (most of whose time is waiting on API servers). The real-node
# session's output follows the other's. test-e2e leaves the slow ones out, test-slow runs
# only them.
REAL_LOG ?= $(or $(TMPDIR),/tmp)/kokpit-test-real-node.log
test: lint assets host-deps
	@$(PYTEST) -m real_node -p no:cacheprovider > $(REAL_LOG) 2>&1 & real=$$!; \
	$(PYTEST) -m "not real_node"; rest=$$?; \
	wait $$real; real_rc=$$?; \
	echo "=== the real-node tests (run beside the others) ==="; cat $(REAL_LOG); \
	test $$rest -eq 0 && test $$real_rc -eq 0

test-unit: $(STAMP)
	$(PYTEST) tests/unit

test-e2e: assets host-deps
	$(PYTEST) tests/e2e -m "not slow"

test-slow: assets host-deps
	$(PYTEST) -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Regenerate config/crd from the API types in kokpit/api (a unit test fails when it is stale).
generate: $(STAMP)
	$(PY) -m kokpit.api.generate
	$(PY) -m kokpit.pki.nodeagent

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) requirements-bench.lock
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r requirements-bench.lock
	touch $@

# `make bench` runs every benchmark at the sizes docs/benchmarks.md quotes (hours on 2 cores);
# `make bench QUICK=1` runs the same code at small sizes in minutes, into bench/results/quick/.
BENCH_FLAGS := $(if $(QUICK),--quick,)

bench: assets host-deps $(BENCH_STAMP)
	$(PY) -m bench.local $(BENCH_FLAGS)
	$(PY) -m bench.kopf_tuning $(BENCH_FLAGS)
	$(PY) -m bench.runtime $(BENCH_FLAGS)
	$(PY) -m bench.cluster $(BENCH_FLAGS)
	$(PY) -m bench.clustercache $(BENCH_FLAGS)
	$(PY) -m bench.machines $(BENCH_FLAGS)
	$(PY) -m bench.risk $(BENCH_FLAGS)
	$(PY) -m bench.rollout $(BENCH_FLAGS)
	$(PY) -m bench.healing $(BENCH_FLAGS)

# Re-pin dependencies after editing pyproject.toml.
lock: $(STAMP)
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --generate-hashes \
		--python-version 3.11 -o requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra bench --generate-hashes \
		--python-version 3.11 -o requirements-bench.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
