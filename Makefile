# sctrace: the two commands a new user needs are `make run` and `make test`.
# Both install what is missing (QEMU, tmux, gdb) from Debian's packages first.

GO ?= go
BIN := bin/sctrace
FUZZTIME ?= 5s

.PHONY: all setup build run test check fuzz kernel clean

all: build

setup:
	@bash scripts/setup.sh

build:
	$(GO) build -o $(BIN) ./cmd/sctrace

# Boot the bundled teaching kernel under QEMU and open the TUI on its
# system-call path.
run: setup build
	./$(BIN) run

# The whole test suite: vet, format, unit and integration tests (real QEMU,
# real teaching kernel), the tests that need no QEMU again under the race
# detector (-short skips the others), and a short fuzz run of the packet
# decoders, the trace reader, the annotator, the debugger commands and the
# diff alignment. The Linux tests boot Debian kernels under an emulated CPU
# many times over, which takes longer than go test's default ten minutes
# per package on a two-core machine.
test: setup check
	$(GO) test -count=1 -timeout 60m ./...
	$(GO) test -race -short -count=1 ./...
	$(MAKE) fuzz

check:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

FUZZPKGS := ./gdbremote ./trace ./annotate ./command ./diff

fuzz:
	@for p in $(FUZZPKGS); do \
		for f in $$($(GO) test -list '^Fuzz' $$p | grep '^Fuzz'); do \
			echo "fuzz $$p $$f ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$p || exit 1; \
		done; \
	done

# Rebuild the teaching kernel from fixtures/kernel/src (the built ELF is
# committed; a test checks the rebuild is byte-identical).
kernel:
	$(MAKE) -C fixtures/kernel/src

clean:
	rm -rf bin
