# One command each: demo, test, bench. Everything installs and starts itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
include hack/versions.env
CACHE_ROOT ?= $(or $(TRUSTWARDEN_CACHE),$(HOME)/.cache/trustwarden)
KUBECTL := $(CACHE_ROOT)/kubernetes/$(KUBE_VERSION)/kubectl
HELM := $(CACHE_ROOT)/helm/$(HELM_VERSION)/helm
export TRUSTWARDEN_KUBECTL := $(KUBECTL)
export TRUSTWARDEN_HELM := $(HELM)

.PHONY: help venv tools cluster-up cluster-down node-up node-down images test-node lint typecheck importlint unit e2e test-reliability test demo bench clean

help:
	@echo "make demo          set everything up, start a local control plane and the operator, show certificates"
	@echo "make test          lint, type-check, import contracts, unit tests, e2e and reliability tests on a real control plane"
	@echo "make test-reliability  fault injection, hostile input, secrets hygiene (part of make test)"
	@echo "make bench         benchmarks (BENCH=full for the full profile)"
	@echo "make cluster-up    start the local control plane (.cluster/kubeconfig)"
	@echo "make cluster-down  stop it and remove its state"
	@echo "make node-up       add a real node (kubelet, containerd, runc) to it, with the images built here"
	@echo "make node-down     stop the node and remove its containers, mounts, cgroups and state"

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

tools:
	hack/build-control-plane.sh etcd helm kubernetes kwok

cluster-up: tools
	hack/cluster-up.sh

cluster-down:
	hack/cluster-down.sh

images:
	hack/build-images.sh

node-up: cluster-up
	hack/node-up.sh

node-down:
	hack/node-down.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check operator tests e2e bench
	$(VENV)/bin/ruff format --check operator tests e2e bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

importlint: $(STAMP)
	$(VENV)/bin/lint-imports

unit: $(STAMP)
	$(VENV)/bin/pytest tests -q

e2e: $(STAMP) tools
	$(VENV)/bin/pytest e2e -q -p no:cacheprovider --ignore=e2e/node

# Fault injection, hostile input and secrets hygiene (docs/reliability.md), on its own control
# plane in e2e/reliability/.state/.
test-reliability: $(STAMP) tools
	$(VENV)/bin/pytest e2e/reliability -q -p no:cacheprovider

test: lint typecheck importlint unit e2e test-reliability test-node

demo: $(STAMP) tools
	hack/demo.sh

bench: $(STAMP) tools
	$(VENV)/bin/pip install --quiet -e '.[dev,bench]'
	$(PY) bench/run.py --profile $${BENCH:-quick}

# Real pods on the local node (e2e/node/, docs/install.md section 10): the node is started by
# the tests and removed at their end. Its own session, so no other e2e test meets a kubelet.
test-node: $(STAMP) tools
	$(VENV)/bin/pytest e2e/node -q -p no:cacheprovider

clean: cluster-down
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
