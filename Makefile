GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     := bin/bindsync

.PHONY: build test deploy-check demo bench bench-memory lint fuzz clean

## build: the bindsync binary in bin/
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/bindsync

## test: every test: the main module's with the race detector (end-to-end tests build and run the binary), then deploy/'s
# The heaviest test packages are named first: go test starts them first, and
# the small ones fill the cores while they end (alphabetical order left the
# worker's tests alone on the cores for the last half minute).
# test-race and test-more run side by side, their output kept whole, one
# after the other.
# -vet=off: `make lint` runs the whole of go vet; the subset go test runs
# by default would only check again what lint checked.
# GOGC=400: the tests are CPU-bound under the race detector, and fewer
# collections cut their time.
# Under the race detector, the test that kills publishing before each of its
# steps takes every fourth step; test-more takes them all without it, then
# runs deploy/'s tests. Those start no goroutines; built with -race,
# kustomize, Kubernetes and Prometheus would cost about two more minutes of
# compiling on a fresh 2-core machine, while without it they reuse what
# `make lint` compiled.
test:
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-race test-more

.PHONY: test-race test-more
test-race:
	GOGC=400 $(GO) test -race -vet=off -count=1 ./worker/ ./cmd/bindsync/ ./exporter/ ./publish/ ./twilio/twiliotest/ ./...
test-more:
	$(GO) test -vet=off -count=1 -run '^TestChangesSurviveAKillAtEveryStep$$' ./publish/
	cd deploy && $(GO) test -vet=off -count=1 ./...

## deploy-check: render and check the Kubernetes manifests and alert rules after editing them
deploy-check:
	cd deploy && $(GO) test -count=1 ./...

## demo: the whole job against an in-process fake Twilio, into ./demo-out
demo:
	$(GO) run ./cmd/bindsync demo --dir demo-out

## bench: pipeline throughput and memory next to a decode-only baseline; then reading under latency and account limits
# The load cases read the world of issue 8 (3 services × 3,000 users, runs of
# 10 to 30 s) once each: on the small default worlds a run lasts 1 to 5 s and
# its fixed costs (slow start, lock, checkpoint, publishing) weigh several
# times as much as in a nightly run. BenchmarkExport runs in a process of its
# own: the in-process fakes of the benchmarks before it would leave their heap
# to its resident memory and their live data to its collections.
LOAD_BENCHMARKS := ^Benchmark(ConcurrencyLimit|LatencyBound|SparseWorld|AccountLimits)$$
bench:
	$(GO) test -run '^$$' -bench . -skip '$(LOAD_BENCHMARKS)|^BenchmarkExport$$|^BenchmarkRunMemory$$' -benchmem -benchtime 3x ./bench/
	$(GO) test -run '^$$' -bench '^BenchmarkExport$$' -benchmem -benchtime 3x ./bench/
	BINDSYNC_BENCH_LOAD_WORLD=3x3000 $(GO) test -run '^$$' -bench '$(LOAD_BENCHMARKS)' -benchtime 1x ./bench/

## bench-memory: peak RSS of whole `bindsync run` processes on 5 million bindings (about 5 minutes)
bench-memory:
	BINDSYNC_BENCH_MEMORY_USERS=83000 $(GO) test -run '^$$' -bench '^BenchmarkRunMemory$$' -benchtime 1x -timeout 1h ./bench/

## lint: formatting and vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd deploy && $(GO) vet ./...

## fuzz: a short run of every fuzz test (FUZZTIME each)
FUZZTIME ?= 20s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./config/
	$(GO) test -run '^$$' -fuzz '^FuzzNextPage$$' -fuzztime $(FUZZTIME) ./twilio/
	$(GO) test -run '^$$' -fuzz '^FuzzBindingsPage$$' -fuzztime $(FUZZTIME) ./twilio/
	$(GO) test -run '^$$' -fuzz '^FuzzPageGuard$$' -fuzztime $(FUZZTIME) ./twilio/
	$(GO) test -run '^$$' -fuzz '^FuzzWholeBodyEqualsEncodingJSON$$' -fuzztime $(FUZZTIME) ./twilio/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEqualsEncodingJSON$$' -fuzztime $(FUZZTIME) ./twilio/bindjson/
	$(GO) test -run '^$$' -fuzz '^FuzzRedact$$' -fuzztime $(FUZZTIME) ./twilio/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeToken$$' -fuzztime $(FUZZTIME) ./twilio/twiliotest/
	$(GO) test -run '^$$' -fuzz '^FuzzEscape$$' -fuzztime $(FUZZTIME) ./internal/safetext/
	$(GO) test -run '^$$' -fuzz '^FuzzRedact$$' -fuzztime $(FUZZTIME) ./internal/safetext/

clean:
	rm -rf bin demo-out
