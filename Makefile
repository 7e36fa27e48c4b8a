# llxprt-credd - build, test, install.
# Packagers: `make build && make install DESTDIR=... PREFIX=/usr`.
# `install` never compiles; it copies what `build` produced.

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DESTDIR ?=
INSTALL ?= install
CARGO   ?= cargo
CARGOFLAGS ?= --locked

BINARIES = llxprt-credd llxprt-cred
MANPAGES = $(wildcard man/*.1 man/*.5 man/*.7)

.PHONY: all build test demo lint bench install uninstall clean

all: build

build:
	$(CARGO) build --release $(CARGOFLAGS)

# The whole suite, with a private D-Bus session and gnome-keyring.
test:
	scripts/with-keyring.sh scripts/run-tests.sh

# The main job on the embedded default: the encrypted file store, a demo profile.
demo:
	scripts/demo.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets $(CARGOFLAGS) -- -D warnings

bench: build
	scripts/with-keyring.sh target/release/llxprt-cred bench store
	target/release/llxprt-cred bench daemon
	target/release/llxprt-cred bench refresh

install:
	@for b in $(BINARIES); do test -x target/release/$$b || { echo "run 'make build' first" >&2; exit 1; }; done
	$(INSTALL) -d $(DESTDIR)$(BINDIR)
	for b in $(BINARIES); do $(INSTALL) -m 755 target/release/$$b $(DESTDIR)$(BINDIR)/$$b; done
	for m in $(MANPAGES); do \
	  sec=$${m##*.}; $(INSTALL) -d $(DESTDIR)$(MANDIR)/man$$sec; \
	  $(INSTALL) -m 644 $$m $(DESTDIR)$(MANDIR)/man$$sec/; \
	done

uninstall:
	for b in $(BINARIES); do rm -f $(DESTDIR)$(BINDIR)/$$b; done
	for m in $(MANPAGES); do sec=$${m##*.}; rm -f $(DESTDIR)$(MANDIR)/man$$sec/$${m##*/}; done

clean:
	$(CARGO) clean
