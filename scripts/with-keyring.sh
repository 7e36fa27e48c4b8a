#!/bin/bash
# Runs "$@" inside a private D-Bus session with an unlocked gnome-keyring
# Secret Service (a 'login' collection that is the 'default' alias), in a
# throwaway HOME, so nothing touches the real keyring and no GUI prompt can
# appear. Used by `make test` and `.ci/run`; the integration tests also start
# private keyrings of their own for the cases that lock or stall one.
#
# Pitfalls handled (see the project notes): HOME/XDG_* are exported before
# dbus-run-session so activated daemons use them; DISPLAY/WAYLAND_DISPLAY are
# unset; we wait until org.freedesktop.secrets has an owner.
set -eu
if [ -z "${_LLXPRT_IN_BUS:-}" ]; then
  for tool in dbus-run-session gnome-keyring-daemon dbus-send; do
    command -v "$tool" >/dev/null || { echo "with-keyring.sh: $tool is missing (apt-get install gnome-keyring dbus dbus-daemon)" >&2; exit 2; }
  done
  base=$(mktemp -d "${TMPDIR:-/tmp}/llxprt-keyring.XXXXXX")
  trap 'rm -rf "$base"' EXIT
  export LLXPRT_KEYRING_REAL_HOME="${HOME:-}"
  export HOME="$base/home" XDG_DATA_HOME="$base/home/.local/share" XDG_CONFIG_HOME="$base/home/.config" XDG_RUNTIME_DIR="$base/run" XDG_STATE_HOME="$base/home/.local/state"
  mkdir -p "$XDG_DATA_HOME" "$XDG_CONFIG_HOME" "$XDG_RUNTIME_DIR" "$XDG_STATE_HOME"; chmod 700 "$XDG_RUNTIME_DIR"
  # cargo and rustup live under the real home; keep them reachable
  export CARGO_HOME="${CARGO_HOME:-$LLXPRT_KEYRING_REAL_HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$LLXPRT_KEYRING_REAL_HOME/.rustup}"
  unset DISPLAY WAYLAND_DISPLAY
  _LLXPRT_IN_BUS=1 dbus-run-session -- "$0" "$@"
  exit $?
fi
printf '%s' "ci-keyring-password" | gnome-keyring-daemon --unlock --components=secrets >/dev/null
for _ in $(seq 200); do
  if dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
      org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q 'boolean true'; then
    export LLXPRT_CREDD_TEST_KEYRING=1
    exec "$@"
  fi
  sleep 0.05
done
echo "with-keyring.sh: the Secret Service did not appear on the bus" >&2
exit 1
