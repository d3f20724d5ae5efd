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

.PHONY: help venv assets helm host-deps demo test test-unit test-e2e test-slow lint fmt generate bench \
	lock clean image

help:
	@echo "make demo   start the local meta-cluster and walk through kokpit"
	@echo "make test   lint, unit tests and e2e tests (slow ones too) on a real local control plane"
	@echo "other: venv assets helm host-deps test-unit test-e2e test-slow lint fmt generate bench lock clean"
	@echo "       image (kokpit's image as an OCI archive, from the Debian mirror; see docs/image.md)"

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

# helm for the chart's tests (charts/kokpit), built from its Go module into the same cache, on
# its own: only when missing, and never rebuilding the Kubernetes binaries (kokpit/local/helm.py).
helm: $(STAMP)
	@$(PY) -m kokpit.local.helm > /dev/null

# The ssh executor's e2e tests run real OpenSSH servers as simulated hosts (kokpit/providers/machine/sshd.py).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT  := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

# Real nodes (kokpit/local/realnode.py) need containerd, runc, the CNI plugins in /usr/lib/cni,
# iptables and conntrack. The rollouts' analysis tests query a real Prometheus server
# (fixtures/prometheus.py starts its own; the package's service is not used). The image's test
# builds it as `make image` does, with mmdebstrap.
HOST_PACKAGES := openssh-server containerd runc containernetworking-plugins iptables conntrack \
	prometheus mmdebstrap
HOST_FILES    := /usr/sbin/sshd /usr/bin/containerd /usr/bin/ctr /usr/sbin/runc \
	/usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/portmap /usr/sbin/iptables \
	/usr/sbin/conntrack /usr/bin/prometheus /usr/bin/mmdebstrap

host-deps:
	@for f in $(HOST_FILES); do test -x $$f || missing=1; done; \
	test -z "$$missing" || $(APT) install -y -q $(HOST_PACKAGES) \
		|| { $(APT) update -q && $(APT) install -y -q $(HOST_PACKAGES); }

# kokpit's image, built here without a registry (docs/image.md; the Dockerfile is the same image
# for Docker or BuildKit): a Debian root filesystem (mmdebstrap, from host-deps) plus the
# virtualenv, written as an OCI archive. `kokpit local load $(IMAGE)` imports it into
# a running meta-cluster's real nodes.
IMAGE        ?= dist/kokpit-image.oci.tar
IMAGE_SOURCE ?= $(or $(shell git remote get-url origin 2>/dev/null),unknown)
IMAGE_COMMIT  = $(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)

image: $(STAMP) host-deps
	$(SUDO) $(PY) -m kokpit local image --out $(IMAGE) --revision $(or $(IMAGE_COMMIT),unknown) \
		--source $(IMAGE_SOURCE)
	@ls -l $(IMAGE)

demo: assets host-deps
	$(PY) -m kokpit demo

# `make test` runs everything, the `slow` scenarios too (about 20 minutes on 2 cores once the
# binaries are built), as three pytest sessions at once, each with a meta-cluster of its own:
# the tests that start real nodes (one after another: they share the machine's iptables
# chains; with them the image's test, which shares the image they run), then in the same
# session the upgrade tests (E2E_AFTER_REAL), the Cluster-Operator, remediation and
# guard-service modules (E2E_BESIDE), and all the others. Most of their time is waiting on API
# servers, so they overlap well. The other sessions' output follows the main one's.
REAL_LOG ?= $(or $(TMPDIR),/tmp)/kokpit-test-real-node.log
BESIDE_LOG ?= $(or $(TMPDIR),/tmp)/kokpit-test-beside.log
E2E_BESIDE := $(addprefix tests/e2e/controllers/,test_cluster_operator.py test_cluster_health.py \
	test_remediation.py test_remediation_repairs.py test_fault_hub.py test_guard_service.py \
	test_rollout_clusters.py)
E2E_AFTER_REAL := tests/e2e/test_upgrade.py
SLOWEST := --durations=15
test: lint assets helm host-deps
	@( $(PYTEST) -m real_node -p no:cacheprovider $(SLOWEST); first=$$?; \
	  $(PYTEST) -m "not real_node" -p no:cacheprovider $(SLOWEST) $(E2E_AFTER_REAL); \
	  second=$$?; test $$first -eq 0 && test $$second -eq 0 ) > $(REAL_LOG) 2>&1 & real=$$!; \
	$(PYTEST) -m "not real_node" -p no:cacheprovider $(SLOWEST) $(E2E_BESIDE) > $(BESIDE_LOG) 2>&1 & \
	beside=$$!; \
	$(PYTEST) -m "not real_node" $(SLOWEST) \
		$(addprefix --ignore=,$(E2E_BESIDE) $(E2E_AFTER_REAL)); rest=$$?; \
	wait $$beside; beside_rc=$$?; wait $$real; real_rc=$$?; \
	echo "=== the Cluster-Operator, remediation and guard-service tests (run beside) ==="; \
	cat $(BESIDE_LOG); \
	echo "=== the real-node tests, then the upgrade tests (run beside the others) ==="; \
	cat $(REAL_LOG); \
	test $$rest -eq 0 && test $$beside_rc -eq 0 && test $$real_rc -eq 0

test-unit: $(STAMP)
	$(PYTEST) tests/unit

test-e2e: assets helm host-deps
	$(PYTEST) tests/e2e -m "not slow"

test-slow: assets helm host-deps
	$(PYTEST) -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Regenerate config/crd from the API types in kokpit/api (a unit test fails when it is stale),
# then config/install.yaml from config/default with the built kubectl of $(K8S), else the one on
# PATH (an e2e test fails when it is stale), then the Helm chart charts/kokpit from it (a unit
# test fails when it is stale).
generate: $(STAMP)
	$(PY) -m kokpit.api.generate
	$(PY) -m kokpit.pki.nodeagent
	$(PY) -m kokpit.cli.install --kubernetes $(K8S)
	$(PY) -m kokpit.cli.chart

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

# Re-pin dependencies after editing pyproject.toml. The image's lock is the runtime subset of
# requirements.lock (the same pins, constrained by it), without the test and lint tools.
lock: $(STAMP)
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --generate-hashes \
		--python-version 3.11 -o requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra bench --generate-hashes \
		--python-version 3.11 -o requirements-bench.lock
	$(VENV)/bin/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
		-c requirements.lock -o requirements-image.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
