#!/usr/bin/env bash
# Drives the engine with the official Python SDK (dagger-io 0.21.x), the way real users' programs do:
# tests/python/session_client.py lets the SDK start `dagger-rs session` itself (_EXPERIMENTAL_DAGGER_CLI_BIN),
# and tests/python/run_client.py runs under `dagger-rs run` (DAGGER_SESSION_PORT/DAGGER_SESSION_TOKEN).
# tests/python/containers.py runs container pipelines under `dagger-rs run`; it needs a registry holding
# busybox:latest, named by DRS_TEST_REGISTRY (it publishes py-app:latest there), and is skipped without one;
# tests/python/services.py runs service pipelines the same way (as root: services need the session's bridge).
# `cargo run -p xtask -- images` starts such a registry: DRS_TEST_REGISTRY=127.0.0.1:5000.
#
#   scripts/python-sdk.sh           set up the venv if needed, build dagger-rs, run the clients
#   scripts/python-sdk.sh --setup   only create (or update) the venv at target/python-sdk-venv
#
# The same clients run in `cargo test -p dagger-cli --test python_sdk`, which needs the venv.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/python-sdk-venv
SDK='dagger-io>=0.21,<0.22'

setup() {
  # Idempotent: an existing venv with a 0.21.x SDK is kept as is.
  if [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(not m.version("dagger-io").startswith("0.21."))' \
      2>/dev/null; then
    return
  fi
  echo "python-sdk: creating $VENV with $SDK" >&2
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV"; then
    echo "python-sdk: \`python3 -m venv\` failed; on Debian install it with: apt-get install python3-venv" >&2
    exit 1
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$SDK"
}

setup
if [ "${1:-}" = "--setup" ]; then
  exit 0
fi

cargo build --quiet -p dagger-cli --bin dagger-rs
TARGET="${CARGO_TARGET_DIR:-target}"
case "$TARGET" in /*) ;; *) TARGET="$(pwd)/$TARGET" ;; esac
BIN="$TARGET/debug/dagger-rs"
PY="$(pwd)/$VENV/bin/python"
CACHE="$(mktemp -d)"
trap 'rm -rf "$CACHE"' EXIT
export DAGGER_RS_CACHE_DIR="$CACHE"
unset DAGGER_SESSION_PORT DAGGER_SESSION_TOKEN

cd tests/python
echo "==> the SDK starts \`dagger-rs session\`"
_EXPERIMENTAL_DAGGER_CLI_BIN="$BIN" "$PY" session_client.py
echo "==> the SDK inside \`dagger-rs run\`"
"$BIN" --progress plain run "$PY" run_client.py
if [ -n "${DRS_TEST_REGISTRY:-}" ]; then
  echo "==> container pipelines inside \`dagger-rs run\` (registry $DRS_TEST_REGISTRY)"
  "$BIN" --progress plain run "$PY" containers.py
  echo "==> service pipelines inside \`dagger-rs run\` (registry $DRS_TEST_REGISTRY)"
  "$BIN" --progress plain run "$PY" services.py
else
  echo "==> skipping containers.py and services.py: set DRS_TEST_REGISTRY to a registry holding busybox:latest" \
    "(\`cargo run -p xtask -- images\` serves one on 127.0.0.1:5000)"
fi
