# kubeinfer: every target installs what it needs. `make demo` and `make test` are the two
# commands a fresh machine needs (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLUSTER := $(VENV)/bin/kubeinfer-cluster
# Reinstall when any package's dependencies change.
DEPS := requirements-dev.txt constraints-dev.txt operator/pyproject.toml runtimes/onnxruntime/pyproject.toml cluster/pyproject.toml \
        router/pyproject.toml
STAMP := $(VENV)/.installed-$(shell cat $(DEPS) | sha1sum | cut -c1-12)
# In CI (root) the cluster and every test that uses it run in a network namespace that has
# only loopback, so a stray dial fails instead of leaving the machine.
ifeq ($(CI),true)
IN_NETNS := bash .ci/netns-exec
endif
PYTEST := $(IN_NETNS) $(VENV)/bin/pytest

.PHONY: help venv lock tools triton lint crds crds-check test test-unit test-integration test-e2e \
        test-router test-reliability test-images soak demo cluster cluster-down images bench-reconcile \
        bench-runtime bench-images bench-autoscaling bench-realscale bench-realscale-day clean

help:
	@echo "make demo    - local cluster, operator, an InferenceService under load, scaling"
	@echo "make test    - lint + unit + integration + router + e2e + reliability + images (all cached)"
	@echo "make cluster / cluster-down / crds / images / bench-*"

$(STAMP): $(DEPS)
	@test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

# Re-resolve the dev environment to the newest releases and rewrite constraints-dev.txt with
# them (its header kept); run `make test` before committing the result.
lock: venv
	$(PY) -m pip install -q --upgrade --upgrade-strategy eager -r requirements-dev.txt
	{ grep '^#' constraints-dev.txt; $(PY) -m pip freeze --exclude-editable; } > constraints-dev.txt.new
	mv constraints-dev.txt.new constraints-dev.txt

# Kubernetes, etcd, kwok, helm, kubeconform and Prometheus from the Go module proxy, cached under
# $${KUBEINFER_CACHE:-~/.cache/kubeinfer}; a warm run takes well under a second.
tools: venv
	@command -v go >/dev/null || { echo "Go is required to build the local cluster: apt install golang (>= 1.24)"; exit 2; }
	$(CLUSTER) build

# Real Triton 2.51 (the nvidia-pytriton wheel) for the Triton tests, in its own virtualenv in
# the same cache: its numpy<2 pin clashes with ours. About 300 MB once; a warm run is instant.
triton: venv
	$(PY) -m kubeinfer_cluster.triton.install install

lint: venv
	$(VENV)/bin/ruff check operator runtimes cluster router tests bench examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

crds: venv
	$(PY) -m kubeinfer.core.crdgen --write

test-unit: venv
	$(VENV)/bin/pytest tests/unit -q

test-integration: venv tools triton
	$(PYTEST) tests/integration -q

# The data plane (kubeinfer-router): its pure core, the proxy in-process, real ONNX servers on
# 127.0.0.x behind it, and Pod discovery and the wake hook against the local API server.
test-router: venv tools
	$(PYTEST) tests/router -q

test-e2e: venv tools triton
	$(PYTEST) tests/e2e -q

test-reliability: venv tools
	$(PYTEST) tests/reliability -q

# The built images run in runc as the chart runs them (tests/images); `make images` first, so a
# fresh clone builds them (a few minutes once, then skipped while the sources are unchanged).
test-images: venv tools images
	$(PYTEST) tests/images -q

# Every tier runs even when one before it failed; the summary at the end names each result.
test: venv
	$(PY) tests/run_tiers.py

# The failure-mode suite at full size (100 InferenceServices x 20 operator crashes).
soak: venv tools
	$(IN_NETNS) env KUBEINFER_SOAK=1 $(VENV)/bin/pytest tests/reliability/test_operator_crashes.py -q -s

cluster: tools
	$(CLUSTER) up

cluster-down: venv
	$(CLUSTER) down

demo: tools
	$(PY) examples/demo.py

# The operator and ONNX-server images, built here into OCI archives (docs/images.md).
images: venv
	@bash .ci/images

bench-reconcile: tools
	$(IN_NETNS) $(PY) bench/reconcile/bench.py

# The ONNX server vs real Triton 2.51 under perf_analyzer (C++, cached on first use), both
# protocols, side by side (bench/runtime/RESULTS.md); `make bench-runtime ARGS=--quick` to smoke.
bench-runtime: venv triton
	$(PY) bench/runtime/bench.py $(ARGS)

# Image sizes and container start-to-ready, ours vs Triton (bench/runtime/IMAGES.md).
bench-images: venv triton images
	$(PY) bench/runtime/images.py

bench-autoscaling: venv
	$(PY) bench/autoscaling/simulate.py

# kubeinfer's autoscaler vs the real HPA fed by KEDA, on the local cluster, same open-loop step
# (bench/realscale/RESULTS.md). The first run builds KEDA from the Go module proxy (long).
bench-realscale: tools
	$(IN_NETNS) $(PY) bench/realscale/bench.py
	$(PY) bench/realscale/sim_check.py

# The forecast on the local cluster: one service, the same 600 s "day" twice (bench/realscale/
# DAY.md; about 23 minutes).
bench-realscale-day: tools
	$(IN_NETNS) $(PY) bench/realscale/day.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
	@echo "the build cache stays in $${KUBEINFER_CACHE:-~/.cache/kubeinfer}; rm -rf it to rebuild from scratch"
