# superjolt. `make test` is the one command that runs the tests (as root, on Debian 12);
# it installs what they need first.
GO      ?= go
BIN     ?= bin
PKGS    ?= ./...
TESTFLAGS ?=
BENCH   ?= .
COUNT   ?= 6

.PHONY: all build agent test bench lint deps image demo clean

all: build

deps:
	@scripts/install-deps

build:
	$(GO) build -o $(BIN)/ ./cmd/superjoltd ./cmd/superjolt
	$(MAKE) agent

# The guest agent runs inside VMs: static, no cgo.
agent:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/superjolt-agent ./cmd/superjolt-agent

test: deps
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 60m $(TESTFLAGS) $(PKGS)

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
