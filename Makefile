# The whole pipeline on one machine, no Docker needed. `make` lists the targets.
SHELL := bash
.DEFAULT_GOAL := help

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# The same flags the Dockerfiles use.
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)"
SERVICES := deploy/local/services.sh
# The alert rules are parsed by Prometheus's own parser in a module of its own,
# which keeps Prometheus's dependency tree out of go.mod, and tested by promtool.
MONITORING_TEST := cd deploy/monitoring && go test -count=1 ./...

.PHONY: help build test unit bench chaos run services services-down vet lint docker images compose-test clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

build: ## build webserver, backend, publisher and nats-server into bin/
	CGO_ENABLED=0 go build $(GOFLAGS_BUILD) -o bin/ ./cmd/...
	go build -o bin/nats-server github.com/nats-io/nats-server/v2

# Tests that need a real Elasticsearch carry the build tag "integration": plain
# `go test ./...` runs only the hermetic ones, in seconds, on any machine.
# Tests that share nothing call t.Parallel; most of e2e's time is waiting (publish
# rates, outages, leases), so up to 4 run at once rather than one per core.
# The secured node (Elasticsearch's own security, HTTPS) starts beside the plain one,
# in parallel; its URL, CA and password reach the tests as ELASTICSEARCH_SECURED_*.
# e2e runs the binaries as processes built without the race detector, so -race
# there would instrument only the tests' own clients, which decode every document
# they get: it doubled e2e's processor time and checked no product code. e2e runs
# without it, beside every other package, which runs with it.
TEST_FLAGS := -tags integration -count=1 -parallel 4 -timeout 30m
test: ## go vet, then every test (integration ones too; -race but in e2e/) against real Elasticsearch nodes, a plain and a secured one (started if needed)
	go vet -tags 'integration bench chaos' ./...
	$(SERVICES) with elasticsearch elasticsearch-secured -- bash -c '\
	  go test $(TEST_FLAGS) -race $$(go list -tags integration ./... | grep -v /e2e$$) & race=$$!; \
	  go test $(TEST_FLAGS) ./e2e/...; e2e=$$?; \
	  wait $$race; race=$$?; [ $$e2e = 0 ] && [ $$race = 0 ]'
	$(MONITORING_TEST)

unit: ## the hermetic tests only (no services needed): go test ./...
	go test -count=1 ./...
	$(MONITORING_TEST)

# The benchmarks carry the tag "bench" as well, so that `make test` neither
# compiles nor links them.
bench: ## the benchmarks in e2e/ against a real Elasticsearch (scale with BENCH_DOCS, BENCH_RSS_DOCS, BENCH_AUDIT_DOCS, BENCH_QUERY_DOCS)
	$(SERVICES) with elasticsearch -- go test -tags 'integration bench' -run '^$$' -bench . -benchtime 1x -timeout 90m ./e2e/...

# The chaos scenarios carry the tags "integration chaos", so that `make test`
# neither compiles nor runs them. They need the two 3-node clusters, which
# services.sh starts here and stops afterwards (CHAOS_SERVICES: another copy of
# the script, whose node controls the scenarios use too), and run one after
# another. CHAOS_MESSAGES (50000) and CHAOS_RATE (500 a second) size each one;
# the table of their figures is printed at the end, and appended to CHAOS_REPORT if set.
# First, the clusters themselves (deploy/clusters_test.go: each leader killed, the
# secured cluster), on clusters of their own and free ports.
CHAOS_SERVICES ?= $(SERVICES)
chaos: ## faults on 3-node Elasticsearch and NATS clusters while data flows (kill, pause, restart, cut off), judged by the audit; prints a table
	go test -tags 'integration chaos' -run Cluster -count=1 -timeout 20m ./deploy/
	@report=$${CHAOS_REPORT:-$$(mktemp -u)}; \
	CHAOS_REPORT=$$report $(CHAOS_SERVICES) with elasticsearch-cluster nats-cluster -- \
	  go test -tags 'integration chaos' -run Chaos -parallel 1 -count=1 -timeout 60m -v ./e2e/; status=$$?; \
	echo; cat "$$report" 2>/dev/null; [ -n "$$CHAOS_REPORT" ] || rm -f "$$report"; exit $$status

run: build ## the whole pipeline with demo data; prints a URL to open; Ctrl-C stops it
	deploy/local/run.sh

# ES_SECURITY=on adds the secured node; any other value leaves it out. The same
# for the clusters: ES_CLUSTER=on, NATS_CLUSTER=on, or CLUSTERS=on for both;
# ES_CLUSTER_SECURITY=on reaches services.sh from make's command line as it is.
ES_SECURITY ?= off
CLUSTERS ?= off
ES_CLUSTER ?= $(CLUSTERS)
NATS_CLUSTER ?= $(CLUSTERS)
services: ## start Elasticsearch and NATS in the background (URLs in .services/env); ES_SECURITY=on also a secured node on 9201 (HTTPS; CA and password in .services/env); ES_CLUSTER=on, NATS_CLUSTER=on (CLUSTERS=on: both) also a cluster of 3 (ELASTICSEARCH_CLUSTER_URLS, NATS_CLUSTER_URLS; with ES_CLUSTER_SECURITY=on, HTTPS and TLS between nodes; nodes killed, paused and started with deploy/local/services.sh node, see docs/operating.md)
	$(SERVICES) up elasticsearch nats $(if $(filter on,$(ES_SECURITY)),elasticsearch-secured) \
	  $(if $(filter on,$(ES_CLUSTER)),elasticsearch-cluster) $(if $(filter on,$(NATS_CLUSTER)),nats-cluster)

services-down: ## stop what `make services` started
	$(SERVICES) down

vet: ## go vet, the benchmarks and chaos scenarios included
	go vet -tags 'integration bench chaos' ./...

lint: ## go vet and staticcheck (a tool in go.mod, fetched from the Go module proxy)
	go vet -tags 'integration bench chaos' ./...
	go tool staticcheck -tags 'integration bench chaos' ./...

docker: ## build both images (needs a Docker engine)
	@if ! docker info >/dev/null 2>&1; then \
	  echo "make docker: no Docker engine is reachable here (docker info failed); on a machine with one, run it again or use docker compose up --build"; exit 1; fi
	docker build -f Dockerfile.webserver --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t annotations-webserver:$(VERSION) .
	docker build -f Dockerfile.backend --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t annotations-backend:$(VERSION) .

images: ## build local stand-ins for the upstream images compose needs, where missing (deploy/images)
	deploy/images/build.sh

compose-test: images ## docker compose up for real: health, data, restarts, volumes, stop, non-root, autocert (needs a Docker engine)
	go test -tags compose -count=1 -timeout 60m -v ./deploy/composetest/

clean: ## remove binaries, build output and local service data (stops services first)
	-$(SERVICES) down
	rm -rf bin .services deploy/elasticsearch-local/target
