#!/bin/bash
# Builds the Debian package with cargo-deb and checks it:
#   1. the changelog's version is the crate's;
#   2. the package holds exactly the expected files (dpkg-deb -c);
#   3. lintian reports no error and no warning;
#   4. it installs into a scratch root with dpkg --root, the installed
#      binaries run, the installed (gzipped) man pages render without
#      warnings, systemd-analyze accepts the user units, and dpkg -r
#      removes every file.
# Installs cargo-deb (cargo install --locked) when it is missing; needs
# dpkg, lintian, man-db and systemd (for systemd-analyze), which .ci/run
# installs (when one is missing it says so first, with the apt command). Set CHECK_DEB_NO_BUILD=1 to package an existing release build.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

missing=()
for pair in dpkg-deb:dpkg lintian:lintian man:man-db systemd-analyze:systemd; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "make deb needs ${missing[*]} to build and check the package; install with:" >&2
  echo "  sudo apt-get install ${missing[*]}" >&2
  exit 1
fi

command -v cargo-deb >/dev/null 2>&1 || { step "installing cargo-deb"; cargo install cargo-deb --locked; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
deb=target/debian/llxprt-credd_${version}-1_${arch}.deb

step "changelog names version $version-1"
head -1 contrib/debian/changelog | grep -qF "llxprt-credd ($version-1)" \
  || { echo "contrib/debian/changelog does not start with llxprt-credd ($version-1)" >&2; exit 1; }

step "cargo deb"
rm -f "$deb"
if [ "${CHECK_DEB_NO_BUILD:-}" = 1 ]; then
  cargo deb --locked --no-build
else
  cargo deb --locked
fi

step "contents"
expected="./usr/bin/llxprt-cred
./usr/bin/llxprt-credd
./usr/bin/llxprt-sandbox
./usr/lib/systemd/user/llxprt-credd@.service
./usr/lib/systemd/user/llxprt-credd@.socket
./usr/share/doc/llxprt-credd/README.md
./usr/share/doc/llxprt-credd/changelog.Debian.gz
./usr/share/doc/llxprt-credd/copyright
./usr/share/doc/llxprt-credd/docs/DESIGN.md
./usr/share/doc/llxprt-credd/docs/PERFORMANCE.md
./usr/share/doc/llxprt-credd/docs/TESTING.md
./usr/share/lintian/overrides/llxprt-credd
./usr/share/man/man1/llxprt-cred.1.gz
./usr/share/man/man1/llxprt-credd.1.gz
./usr/share/man/man1/llxprt-sandbox.1.gz
./usr/share/man/man7/llxprt-credd.7.gz"
actual=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sort)
dpkg-deb -c "$deb"
if [ "$actual" != "$expected" ]; then
  echo "unexpected contents:" >&2
  diff <(echo "$expected") <(echo "$actual") >&2 || true
  exit 1
fi

step "synopsis"
synopsis=$(dpkg-deb -f "$deb" Description | head -1)
want="Host-side credential broker for llxprt-code sandboxes"
[ "$synopsis" = "$want" ] || { echo "the package synopsis is '$synopsis', not '$want'" >&2; exit 1; }

step "lintian"
lintian --fail-on error,warning --info "$deb" 2>&1 | grep -v 'running with root privileges' || true
lintian --fail-on error,warning "$deb" >/dev/null 2>&1 || { echo "lintian found errors or warnings" >&2; exit 1; }

step "dpkg --root install"
root=$(mktemp -d "${TMPDIR:-/tmp}/llxprt-credd-deb.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/var/lib/dpkg/{info,updates,triggers}
: >"$root/var/lib/dpkg/status"
# The scratch root has no libc6 package; the host's libc is what runs the binaries.
dpkg --root="$root" --force-depends -i "$deb"
dpkg --root="$root" -s llxprt-credd | grep -qx 'Status: install ok installed'
"$root/usr/bin/llxprt-credd" --version | grep -qx "llxprt-credd $version"
"$root/usr/bin/llxprt-cred" --version | grep -qx "llxprt-cred $version"
LLXPRT_CREDD="$root/usr/bin/llxprt-credd" "$root/usr/bin/llxprt-sandbox" --help | grep -q '^Usage: llxprt-sandbox'
for page in "$root"/usr/share/man/man*/*.gz; do
  warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
  [ -z "$warnings" ] || { echo "$page: $warnings" >&2; exit 1; }
done
units=$root/units
mkdir -p "$units" "$root/run"
chmod 700 "$root/run"
for kind in socket service; do
  sed "s|/usr/bin/llxprt-credd|$root/usr/bin/llxprt-credd|" \
    "$root/usr/lib/systemd/user/llxprt-credd@.$kind" >"$units/llxprt-credd@work.$kind"
done
XDG_RUNTIME_DIR=$root/run systemd-analyze --user --man=no verify \
  "$units/llxprt-credd@work.socket" "$units/llxprt-credd@work.service"
rm -rf "$units" "$root/run"

step "dpkg --root remove"
dpkg --root="$root" -r llxprt-credd
left=$(find "$root" -path "$root/var" -prune -o -type f -print)
[ -z "$left" ] || { echo "left after removal: $left" >&2; exit 1; }
echo
echo "check-deb: $deb is good"
