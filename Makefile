# superjolt. `make test` is the one command that runs the tests (as root, on Debian 12);
# it installs what they need first.
GO      ?= go
BIN     ?= bin
PKGS    ?= ./...
TESTFLAGS ?=
BENCH   ?= .
COUNT   ?= 6

.PHONY: all build agent test test-long bench lint deps image demo clean

all: build

deps:
	@scripts/install-deps

# The version the binaries report (superjolt --version, superjolt status).
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  = -X github.com/superjolt/superjolt/version.version=$(VERSION)

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/superjoltd ./cmd/superjolt
	$(MAKE) agent

# The guest agent runs inside VMs: static, no cgo.
agent:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o $(BIN)/superjolt-agent ./cmd/superjolt-agent

test: deps
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 60m $(TESTFLAGS) $(PKGS)

# Longer runs that do not fit `make test`'s budget: the stress run of racing
# clients on real guests for STRESS (10 minutes by default), and the simulated
# year of the appliance (YEAR_DAYS days; `make test` runs 65 of them).
STRESS ?= 10m
YEAR_DAYS ?= 365
test-long: deps
	SUPERJOLT_STRESS=$(STRESS) $(GO) test -count=1 -timeout 60m -run '^TestStress$$' -v ./cmd/superjolt/
	SUPERJOLT_YEAR_DAYS=$(YEAR_DAYS) $(GO) test -count=1 -timeout 120m -run '^TestSimulatedYear$$' -v ./appliance/

# Benchmarks: COUNT runs of each so that benchstat can report medians.
bench: deps
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count $(COUNT) -timeout 120m $(PKGS) | tee bench.txt

# The guest image (vmlinuz, initrd, rootfs.img): the test guest and a new install's built-in image.
IMAGE_DIR ?= $(BIN)/image
image: deps
	$(GO) run ./appliance/images/cmd/mkimage -f -o $(IMAGE_DIR)

lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf $(BIN) bench.txt

# The demo (scripts/demo): a superjoltd on a loop-backed pool under DEMO_DIR
# (manual clock: `bin/superjolt --socket $(DEMO_SOCKET) debug clock advance 24h`
# moves days) in a network namespace of its own, joined to a stand-in LAN
# namespace; a demo VM serving a page through a port forward and a domain;
# then the operator console (superjolt tui) on a terminal, or the VM table and
# the commands that reach the page without one. Idempotent; quitting the
# console (q) leaves the daemon running. `make demo-stop` stops it.
DEMO_DIR    ?= /var/lib/superjolt-demo
DEMO_RUN    ?= /run/superjolt-demo
DEMO_SOCKET ?= $(DEMO_RUN)/superjolt.sock
DEMO_NETNS  ?= superjolt-demo
DEMO_ENV     = BIN=$(BIN) DEMO_DIR=$(DEMO_DIR) DEMO_RUN=$(DEMO_RUN) DEMO_SOCKET=$(DEMO_SOCKET) DEMO_NETNS=$(DEMO_NETNS)

.PHONY: demo demo-stop
demo: deps build
	@$(DEMO_ENV) scripts/demo start

demo-stop:
	@$(DEMO_ENV) scripts/demo stop
