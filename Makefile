# chaperone — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
BIN := target/debug/chaperone

.PHONY: all build demo test test-rust test-policies test-python test-conformance lint fmt bench deps chart-policies clean

all: build

build:
	$(CARGO) build --locked -p chaperone-cli

## The embedded default: dev certs, example policies, echo tool API, the sidecar and a scripted agent.
demo: build
	$(BIN) demo

## Everything: Rust unit + integration tests (real TLS, real OpenBao), the policy library's
## own tests, Python interop (official MCP SDK), chart rendering, OPA conformance.
test: build test-rust test-policies test-python test-conformance

test-rust:
	$(CARGO) test --locked --workspace --all-targets --no-fail-fast

test-policies: build
	$(BIN) policy test policies/

test-python: build
	CHAPERONE_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q tests/python

test-conformance: build
	$(PYTHON) tests/conformance/opa_conformance.py

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Side-by-side load benchmark against Envoy, then the criterion micro-benchmarks
## (SKIP_MICRO=1 skips those). Results: benches/results/latest.md, target/criterion/.
bench:
	benches/run.sh
	@if [ "$(SKIP_MICRO)" != 1 ]; then \
		$(CARGO) bench --locked -p chaperone-proxy --bench hotpath && \
		$(CARGO) bench --locked -p chaperone-policy --bench policy_scaling; \
	fi

## Python and system dependencies for the tests (what .ci/run installs).
deps:
	tests/install-deps.sh

## Copy the policy library into the chart (a test fails when they drift apart).
chart-policies:
	rm -rf charts/chaperone/policies && mkdir -p charts/chaperone/policies
	cd policies && find . -type f \( -name '*.rego' -o -name 'data.yaml' -o -name 'data.json' \) ! -name '*_test.rego' \
		-exec install -D -m 0644 {} ../charts/chaperone/policies/{} \;

clean:
	$(CARGO) clean
