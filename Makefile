# Fleetwire. Everything here needs only Go (and, for the Redis tests, a Redis server).
GO       ?= go
BUF      := $(GO) tool -modfile=$(CURDIR)/tools/go.mod buf

.PHONY: console-perf chaos cluster test accuracy security-full test-short proto proto-check lint run bench build

## test: the whole test suite with the race detector (Redis tests skip loudly without Redis),
## then the accuracy tests at full size (under -race they shrink to smoke runs)
test:
	@$(GO) run ./cmd/internal/redischeck
	$(GO) test -race -count=1 -timeout 20m ./...
	@$(GO) run ./cmd/internal/redischeck
	$(MAKE) accuracy

## accuracy: the detectors' and filters' accuracy tests at full size, without the race detector;
## each fails below its target on its held-out set (-v prints the tables)
accuracy:
	$(GO) test -count=1 -timeout 10m -run 'TestAccuracyTable|TestAccuracyOnSyntheticFleet|TestOdometerAccuracy|TestTheftScenariosHeldOut' ./services/maintenance/fuel/ ./services/tracking/ ./services/dispatch/

## security-full: the unknown-device storm at full size (100,000 refused logins, no race detector)
security-full:
	FLEETWIRE_SECURITY_FULL=1 $(GO) test -count=1 -timeout 30m -run TestUnknownDeviceStorm -v ./pkg/natsauth/
## chaos: the fault-injection suite's long form: real service processes, NATS and Redis
## restarts, SIGKILL/SIGSTOP, one-CPU starvation; a larger fleet; prints the figures
## recorded in docs/benchmarks.md (the short form runs in make test: go test ./tests/chaos/)
chaos:
	CHAOS_LONG=1 $(GO) test -count=1 -v -timeout 60m -run TestFaultInjection ./tests/chaos/

## cluster: the scale-out suite's long form: 3 NATS nodes, 2 instances of every service,
## a larger fleet, the node and instance faults twice (the short form:
## FLEETWIRE_CLUSTER=1 go test ./tests/cluster/; not in make test yet, docs/scaling.md)
cluster:
	CLUSTER_LONG=1 $(GO) test -count=1 -v -timeout 60m -run TestClusterScaleOut ./tests/cluster/

## console-perf: the web console's performance run: 20,000 simulated vehicles moving at
## 1 Hz in a real headless Chromium; prints frame times and fix-to-marker delays (recorded
## in docs/benchmarks.md, never asserted)
console-perf:
	FLEETWIRE_CONSOLE_PERF=1 $(GO) test -count=1 -v -timeout 30m -run TestConsolePerformance ./cmd/fleetwire/

## proto: regenerate the committed Go code from proto/ (pinned buf + plugins, no system protoc)
proto:
	cd proto && $(BUF) lint && $(BUF) generate

## proto-check: fail when the committed generated code is stale
proto-check: proto
	git diff --exit-code -- proto/ || (echo "generated code is stale: run make proto and commit" && exit 1)

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## build: all binaries into bin/
build:
	$(GO) build -o bin/ ./cmd/...

## run: the all-in-one with 500 simulated vehicles
run:
	$(GO) run ./cmd/fleetwire --sim 500

## bench: the hot-path benchmarks
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
