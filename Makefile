# llxprt-credd - build, test, install.
# Packagers: `make build && make install DESTDIR=... PREFIX=/usr`.
# `install` never compiles; it copies what `build` produced: the two
# binaries and the llxprt-sandbox wrapper (to BINDIR), the man pages, the
# user README (DOCDIR) and the systemd user units, whose ExecStart names
# BINDIR. `make deb` builds the Debian package with cargo-deb and checks it
# (scripts/check-deb.sh, which first checks its prerequisites).

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR  ?= $(DATADIR)/man
DOCDIR  ?= $(DATADIR)/doc/llxprt-credd
# systemd user units (socket activation); systemd also searches /usr/local/lib/systemd/user
SYSTEMDUSERUNITDIR ?= $(PREFIX)/lib/systemd/user
DESTDIR ?=
INSTALL ?= install
# where `install` takes the binaries from (e.g. target/debug for a quick check)
BUILD_DIR ?= target/release
CARGO   ?= cargo
CARGOFLAGS ?= --locked

BINARIES = llxprt-credd llxprt-cred
MANPAGES = $(wildcard man/*.1 man/*.5 man/*.7)
UNITS    = contrib/systemd/llxprt-credd@.socket contrib/systemd/llxprt-credd@.service
SCRIPTS  = contrib/llxprt-sandbox
DOCS     = README.md
DOCPAGES = $(wildcard docs/*.md)

.PHONY: all build test demo lint bench soak install uninstall deb clean

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

# The benchmarks (benches/credd, built with the release profile); the
# store's keyring rows run against a private gnome-keyring.
bench:
	scripts/with-keyring.sh $(CARGO) bench $(CARGOFLAGS) --bench credd -- store
	$(CARGO) bench $(CARGOFLAGS) --bench credd -- daemon
	$(CARGO) bench $(CARGOFLAGS) --bench credd -- refresh
	$(CARGO) bench $(CARGOFLAGS) --bench credd -- proxy

# The soak test (not CI): 64 connections at the rate limit for SOAK_MINUTES
# (default 10); fails if the daemon's memory, descriptors or threads grow.
SOAK_MINUTES ?= 10
soak:
	scripts/soak.sh $(SOAK_MINUTES)

install:
	@for b in $(BINARIES); do test -x $(BUILD_DIR)/$$b || { echo "run 'make build' first ($(BUILD_DIR)/$$b is missing)" >&2; exit 1; }; done
	$(INSTALL) -d $(DESTDIR)$(BINDIR)
	for b in $(BINARIES); do $(INSTALL) -m 755 $(BUILD_DIR)/$$b $(DESTDIR)$(BINDIR)/$$b; done
	for m in $(MANPAGES); do \
	  sec=$${m##*.}; $(INSTALL) -d $(DESTDIR)$(MANDIR)/man$$sec; \
	  $(INSTALL) -m 644 $$m $(DESTDIR)$(MANDIR)/man$$sec/; \
	done
	for s in $(SCRIPTS); do $(INSTALL) -m 755 $$s $(DESTDIR)$(BINDIR)/$${s##*/}; done
	$(INSTALL) -d $(DESTDIR)$(DOCDIR)
	for d in $(DOCS); do $(INSTALL) -m 644 $$d $(DESTDIR)$(DOCDIR)/; done
	$(INSTALL) -d $(DESTDIR)$(DOCDIR)/docs
	for d in $(DOCPAGES); do $(INSTALL) -m 644 $$d $(DESTDIR)$(DOCDIR)/docs/; done
	$(INSTALL) -d $(DESTDIR)$(SYSTEMDUSERUNITDIR)
	for u in $(UNITS); do \
	  sed 's|/usr/bin/llxprt-credd|$(BINDIR)/llxprt-credd|' $$u > $(DESTDIR)$(SYSTEMDUSERUNITDIR)/$${u##*/}.tmp && \
	  chmod 644 $(DESTDIR)$(SYSTEMDUSERUNITDIR)/$${u##*/}.tmp && \
	  mv $(DESTDIR)$(SYSTEMDUSERUNITDIR)/$${u##*/}.tmp $(DESTDIR)$(SYSTEMDUSERUNITDIR)/$${u##*/}; \
	done

uninstall:
	for b in $(BINARIES); do rm -f $(DESTDIR)$(BINDIR)/$$b; done
	for m in $(MANPAGES); do sec=$${m##*.}; rm -f $(DESTDIR)$(MANDIR)/man$$sec/$${m##*/}; done
	for s in $(SCRIPTS); do rm -f $(DESTDIR)$(BINDIR)/$${s##*/}; done
	for d in $(DOCS); do rm -f $(DESTDIR)$(DOCDIR)/$${d##*/}; done
	for d in $(DOCPAGES); do rm -f $(DESTDIR)$(DOCDIR)/docs/$${d##*/}; done
	-rmdir $(DESTDIR)$(DOCDIR)/docs $(DESTDIR)$(DOCDIR) 2>/dev/null
	for u in $(UNITS); do rm -f $(DESTDIR)$(SYSTEMDUSERUNITDIR)/$${u##*/}; done

# The Debian package (needs cargo-deb; lintian and dpkg for the checks).
deb:
	scripts/check-deb.sh

clean:
	$(CARGO) clean
