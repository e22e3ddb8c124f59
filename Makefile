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
# clients on real guests for STRESS (10 minutes by default).
STRESS ?= 10m
test-long: deps
	SUPERJOLT_STRESS=$(STRESS) $(GO) test -count=1 -timeout 60m -run '^TestStress$$' -v ./cmd/superjolt/

# Benchmarks: COUNT runs of each so that benchstat can report medians.
bench: deps
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count $(COUNT) -timeout 120m $(PKGS) | tee bench.txt

# The guest image (vmlinuz, initrd, rootfs.img): the test guest and a new install's built-in image.
IMAGE_DIR ?= $(BIN)/image
image: deps
	$(GO) run ./testvm/cmd/mkimage -f -o $(IMAGE_DIR)

lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf $(BIN) bench.txt

# The demo: a superjoltd on a loop-backed pool under DEMO_DIR (manual clock, so
# `bin/superjolt --socket $(DEMO_SOCKET) debug clock advance 24h` moves days),
# a demo account and a running VM from the built-in image, then the operator
# console (superjolt tui) on a terminal, or the VM table without one.
# Idempotent: a second `make demo` reuses what is there; quitting the console
# (q) leaves the daemon running. `make demo-stop` stops it.
DEMO_DIR    ?= /var/lib/superjolt-demo
DEMO_RUN    ?= /run/superjolt-demo
DEMO_SOCKET ?= $(DEMO_RUN)/superjolt.sock
# The demo's daemon, bridge, firewall and guests live in a network namespace
# of their own: nothing of the demo touches the host's network.
DEMO_NETNS  ?= superjolt-demo
SJ_DEMO      = $(BIN)/superjolt --socket $(DEMO_SOCKET)

.PHONY: demo demo-stop
demo: deps build
	@mkdir -p $(DEMO_DIR) $(DEMO_RUN)
	@if $(SJ_DEMO) debug clock show >/dev/null 2>&1; then echo "demo: superjoltd is already running on $(DEMO_SOCKET)"; \
	else first=""; [ -e $(DEMO_DIR)/pool.img ] || first="; this first start builds the built-in image, about a minute"; \
	  echo "demo: starting superjoltd (state in $(DEMO_DIR), log in $(DEMO_DIR)/superjoltd.log$$first)"; \
	  ip netns add $(DEMO_NETNS) 2>/dev/null; ip -n $(DEMO_NETNS) link set lo up; \
	  setsid ip netns exec $(DEMO_NETNS) $(BIN)/superjoltd --state-dir $(DEMO_DIR) --socket $(DEMO_SOCKET) --run-dir $(DEMO_RUN)/vm --clock=manual \
	    >>$(DEMO_DIR)/superjoltd.log 2>&1 </dev/null & echo $$! >$(DEMO_RUN)/superjoltd.pid; fi
	@for i in $$(seq 600); do $(SJ_DEMO) tier list >/dev/null 2>&1 && break; \
	  if ! kill -0 $$(cat $(DEMO_RUN)/superjoltd.pid) 2>/dev/null; then echo "demo: superjoltd died:"; tail -20 $(DEMO_DIR)/superjoltd.log; exit 1; fi; \
	  sleep 0.5; done
	@acct=$$($(SJ_DEMO) account list | awk '$$2 == "demo" { print $$1; exit }'); \
	if [ -z "$$acct" ]; then $(SJ_DEMO) account create demo --balance 100 >/dev/null; \
	  acct=$$($(SJ_DEMO) account list | awk '$$2 == "demo" { print $$1; exit }'); echo "demo: created account demo ($$acct) with 100 credits"; fi; \
	if ! $(SJ_DEMO) vm list --account $$acct | awk 'NR > 1 && ($$5 == "running" || $$5 == "stopped") { found = 1 } END { exit !found }'; then \
	  echo "demo: creating VM demo-1 (tier nano, built-in image; it boots and waits for its agent)"; \
	  $(SJ_DEMO) vm create --account $$acct --tier nano --name demo-1 >/dev/null || exit 1; fi
	@if [ -t 0 ] && [ -t 1 ]; then exec $(SJ_DEMO) tui; fi; \
	$(SJ_DEMO) vm list; echo; \
	echo "Not on a terminal, so this is the table; on one, make demo opens the console ($(SJ_DEMO) tui)."; \
	echo "Try: $(SJ_DEMO) vm exec <id> -- uname -a"; \
	echo "     $(SJ_DEMO) backup create <id>; $(SJ_DEMO) debug clock advance 24h"; \
	echo "Stop it with: make demo-stop"

demo-stop:
	@if [ -f $(DEMO_RUN)/superjoltd.pid ] && kill -TERM $$(cat $(DEMO_RUN)/superjoltd.pid) 2>/dev/null; then \
	  while kill -0 $$(cat $(DEMO_RUN)/superjoltd.pid) 2>/dev/null; do sleep 0.2; done; echo "demo: superjoltd stopped"; \
	else echo "demo: superjoltd is not running"; fi
	@rm -f $(DEMO_RUN)/superjoltd.pid
	@ip netns del $(DEMO_NETNS) 2>/dev/null || true
