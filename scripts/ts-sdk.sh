#!/usr/bin/env bash
# Drives the engine with the official TypeScript SDK (@dagger.io/dagger 0.21.9), the way real users' programs
# do: tests/ts/session_client.mjs (plain ESM JavaScript, run by `node`, no TypeScript compiler) lets the SDK
# start `dagger-rs session` itself (_EXPERIMENTAL_DAGGER_CLI_BIN). That SDK ends the session by sending SIGTERM
# to the CLI and reports an error if the CLI dies from it; the client checks it ends with exit code 0. With
# DRS_TEST_REGISTRY naming a registry that holds busybox:latest it also runs a container pipeline
# (`cargo run -p xtask -- images` serves one: DRS_TEST_REGISTRY=127.0.0.1:5000).
#
#   scripts/ts-sdk.sh           install the SDK if needed, build dagger-rs, run the client
#   scripts/ts-sdk.sh --setup   only install (or update) the SDK at target/ts-sdk
#
# The SDK's exact dependency tree is pinned by tests/ts/package-lock.json (`npm ci`); the setup does nothing,
# and needs no network, when target/ts-sdk already holds that tree. Node.js 20 and npm are on every machine of
# the project's kind, so scripts/packages.txt does not list them.
# The same client runs in `cargo test -p dagger-cli --test ts_sdk`, which needs target/ts-sdk.
set -euo pipefail
cd "$(dirname "$0")/.."

SDK_DIR=target/ts-sdk
SRC=tests/ts
VERSION=0.21.9

installed() {
  cmp -s "$SRC/package-lock.json" "$SDK_DIR/package-lock.json" &&
    [ -f "$SDK_DIR/node_modules/.package-lock.json" ] &&
    grep -q "\"version\": \"$VERSION\"" "$SDK_DIR/node_modules/@dagger.io/dagger/package.json" 2>/dev/null
}

setup() {
  if installed; then
    return
  fi
  for tool in node npm; do
    if ! command -v "$tool" >/dev/null; then
      echo "ts-sdk: \`$tool\` is not on PATH; install Node.js 20 or later with npm (Debian: apt-get install nodejs npm)" >&2
      exit 1
    fi
  done
  echo "ts-sdk: installing @dagger.io/dagger@$VERSION into $SDK_DIR (npm ci, from $SRC/package-lock.json)" >&2
  # Installed beside the final place and renamed into it, so an interrupted install never looks complete.
  local partial="$SDK_DIR.partial"
  rm -rf "$partial"
  mkdir -p "$partial"
  cp "$SRC/package.json" "$SRC/package-lock.json" "$partial/"
  if ! (cd "$partial" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error); then
    echo "ts-sdk: \`npm ci\` failed in $partial (it needs the npm registry the first time)" >&2
    exit 1
  fi
  rm -rf "$SDK_DIR"
  mv "$partial" "$SDK_DIR"
}

setup
if [ "${1:-}" = "--setup" ]; then
  exit 0
fi

cargo build --quiet -p dagger-cli --bin dagger-rs
TARGET="${CARGO_TARGET_DIR:-target}"
case "$TARGET" in /*) ;; *) TARGET="$(pwd)/$TARGET" ;; esac
BIN="$TARGET/debug/dagger-rs"
CACHE="$(mktemp -d)"
trap 'rm -rf "$CACHE"' EXIT
export DAGGER_RS_CACHE_DIR="$CACHE"
unset DAGGER_SESSION_PORT DAGGER_SESSION_TOKEN

echo "==> the SDK starts \`dagger-rs session\` and ends it with SIGTERM"
if [ -z "${DRS_TEST_REGISTRY:-}" ]; then
  echo "==> no container pipeline: set DRS_TEST_REGISTRY to a registry holding busybox:latest" \
    "(\`cargo run -p xtask -- images\` serves one on 127.0.0.1:5000)"
fi
_EXPERIMENTAL_DAGGER_CLI_BIN="$BIN" node "$SRC/session_client.mjs"
