# dpopipe: make build | test | run | bench | fuzz | lint
GO       ?= go
BIN      := bin/dpopipe
# OpenBLAS is used when it links; otherwise gonum's pure-Go BLAS.
BLAS_TAG := $(shell printf 'int main(void){return 0;}' | $${CC:-cc} -x c - -lopenblas -o /dev/null 2>/dev/null && echo openblas)
TAGS     ?= $(BLAS_TAG)
GOFLAGS_TAGS := $(if $(TAGS),-tags '$(TAGS)',)
TEST_TIMEOUT ?= 20m
FUZZTIME ?= 60s

export DPOPIPE_SELF = $(CURDIR)/$(BIN)

.PHONY: build test test-pure run bench fuzz lint clean deps

build:
	$(GO) build $(GOFLAGS_TAGS) -o $(BIN) ./cmd/dpopipe
	cd examples/thirdparty-stage && $(GO) build -o ../../bin/dpopipe-stage-length_filter . \
		&& $(GO) build -o ../../bin/dpopipe-stage-http_judge ./httpjudge

# The whole suite, with OpenBLAS when present, then the model package with
# the pure-Go BLAS so that both variants stay tested.
test: build
	$(GO) vet $(GOFLAGS_TAGS) ./...
	$(GO) test $(GOFLAGS_TAGS) -count=1 -timeout $(TEST_TIMEOUT) ./...
	cd examples/thirdparty-stage && $(GO) vet ./... && $(GO) test ./...
ifneq ($(TAGS),)
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./stages/model/
endif

# The quickstart: a synthetic task, SFT warm-up, DPO, evaluation, report.
run: build
	$(BIN) run examples/quickstart/train.hcl --run-dir runs/quickstart

bench: build
	@mkdir -p bench
	rm -f bench/results.jsonl
	BENCH_JSON=$(CURDIR)/bench/results.jsonl $(GO) test $(GOFLAGS_TAGS) -run '^$$' -bench . -benchtime 5x -timeout 30m \
		./stages/model/ ./stages/train/ ./stages/loss/ ./stages/tokenize/ ./stages/reference/ | tee bench/bench.txt
	$(GO) run ./internal/benchjson bench/results.jsonl bench/results.json

# Each fuzz target for FUZZTIME (make test runs their seed corpora).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test $(GOFLAGS_TAGS) -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet $(GOFLAGS_TAGS) ./...

deps:
	$(GO) mod download

clean:
	rm -rf bin runs bench/results.jsonl
