# foldline: the commands a person types. `make help` lists them.
SHELL := /bin/bash
# Everything runs in this checkout's own virtual environment, never the machine's Python.
VENV ?= .venv
PYTHON := $(CURDIR)/$(VENV)/bin/python
PYTEST ?= $(PYTHON) -m pytest
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHON
export PYTHONDONTWRITEBYTECODE := 1
# The image's tag is the project's version; the chart's appVersion names the same.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml | head -n1)
KIND_CLUSTER ?= foldline

.PHONY: help install lint test unit integration e2e image image-test chaos bench bench-compare demo kafka-up kafka-down postgres-up \
        postgres-down envtest-up envtest-down cluster cluster-up cluster-down crds dashboards chart-lint kind-up deploy clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

install: ## install foldline and its development tools (idempotent)
	@scripts/bootstrap.sh

lint: install ## ruff format --check, ruff, mypy --strict on the package, import-linter's layer contracts, the examples' schema gate
	$(PYTHON) -m ruff format --check services operator tests bench examples
	$(PYTHON) -m ruff check services operator tests bench examples
	$(PYTHON) -m mypy services/foldline operator/foldline_operator examples/team-image/accounts_pkg
	$(PYTHON) -m mypy tests bench
	$(CURDIR)/$(VENV)/bin/lint-imports --no-cache
	$(PYTHON) -m foldline.cli schema check --file services/foldline/examples/invoices/foldline-schema.json
	PYTHONPATH=examples/team-image $(PYTHON) -m foldline.cli schema check --file examples/team-image/foldline-schema.json

test: lint ## lint, then every test: unit, integration (real Kafka, PostgreSQL), e2e (real API server), image
	$(PYTEST) tests

unit: install ## tests that need no service
	$(PYTEST) tests/unit

integration: install ## tests against the real Kafka broker and databases
	$(PYTEST) tests/integration

e2e: install ## the operator against a real kube-apiserver and etcd
	$(PYTEST) tests/e2e

image: ## build the image (and the team example) from Containerfile without a daemon, into .cache/images/
	scripts/image.sh build

image-test: install ## run the built images with podman: entry points, user, read-only root, labels
	$(PYTEST) tests/image

chaos: install ## the long kill loop and the soak (FOLDLINE_CHAOS_KILLS, FOLDLINE_SOAK_MINUTES, FOLDLINE_SOAK_RATE)
	$(PYTEST) -m chaos -s tests/integration/test_chaos.py

bench: install ## benchmarks; they print figures and never fail on a time
	$(PYTHON) -m bench

QUIX_VENV := .cache/quix-venv

$(QUIX_VENV)/.installed: bench/quix-requirements.txt
	python3 -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/pip install -q --disable-pip-version-check -r bench/quix-requirements.txt
	touch $@

bench-compare: install $(QUIX_VENV)/.installed ## foldline against the same handler on Quix Streams (docs/benchmarks.md)
	$(PYTHON) -m bench compare

demo: install ## broker, handler, projector and gateway on this machine; walks an invoice through its life
	$(PYTHON) -m foldline.cli demo

kafka-up: ## start the development Kafka broker (KRaft, loopback)
	scripts/services.sh start kafka
kafka-down: ## stop it
	scripts/services.sh stop kafka
postgres-up: ## start the development PostgreSQL server (loopback)
	scripts/services.sh start postgres
postgres-down: ## stop it
	scripts/services.sh stop postgres
envtest-up: ## build (once) and start etcd + kube-apiserver for the e2e tests
	scripts/envtest.sh start
envtest-down: ## stop them
	scripts/envtest.sh stop

cluster-up: ## build (once) and start the real one-node cluster (kubelet, containerd, pods)
	scripts/cluster.sh up
cluster-down: ## stop it and undo its changes to the host
	scripts/cluster.sh down
cluster: install ## the tests on real pods in the one-node cluster
	$(PYTEST) tests/cluster

crds: ## regenerate manifests/crds and charts/foldline/crds from operator/foldline_operator/crds.py
	$(PYTHON) -m foldline_operator.crds --write

dashboards: ## regenerate charts/foldline/dashboards/*.json from foldline/observability/dashboards.py
	$(PYTHON) -m foldline.observability.dashboards --write

kind-up: ## a local kind cluster with foldline's image built and loaded (needs Docker and kind)
	kind get clusters | grep -qx '$(KIND_CLUSTER)' || kind create cluster --name $(KIND_CLUSTER)
	docker build -t foldline:$(VERSION) -f Containerfile --build-arg VERSION=$(VERSION) \
	  --build-arg REVISION=$$(git rev-parse HEAD) .
	kind load docker-image foldline:$(VERSION) --name $(KIND_CLUSTER)
deploy: ## helm install the chart into the current cluster, with the image kind-up loaded
	helm upgrade --install foldline charts/foldline --namespace foldline-system --create-namespace \
	  --set image.tag=$(VERSION) --wait

clean: ## stop services, remove caches of this checkout
	-scripts/services.sh stop all
	-scripts/cluster.sh down
	rm -rf .cache .mypy_cache .ruff_cache .pytest_cache
