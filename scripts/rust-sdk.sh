#!/usr/bin/env bash
# Drives the engine with the official Rust SDK (dagger-sdk 0.21.8 from crates.io), the way real users' programs
# do: tests/rust-sdk/ is a small crate of its own (outside the workspace, so the main build never compiles the
# SDK) whose program runs under `dagger-rs run` a quickstart-like pipeline and the common API. With
# DRS_TEST_REGISTRY naming a registry that holds busybox:latest it runs the container checks too
# (`cargo run -p xtask -- images` serves one: DRS_TEST_REGISTRY=127.0.0.1:5000).
#
#   scripts/rust-sdk.sh           fetch and build the client if needed, build dagger-rs, run the client
#   scripts/rust-sdk.sh --setup   only fetch the client's dependencies and build it into target/rust-sdk
#
# tests/rust-sdk/Cargo.lock pins the dependency tree; `cargo fetch --locked` needs crates.io the first time and
# nothing once the crates are in cargo's cache. The build then runs offline (about a minute and a half the
# first time). The same client runs in `cargo test -p dagger-cli --test rust_sdk`, which builds it offline.
set -euo pipefail
cd "$(dirname "$0")/.."

MANIFEST=tests/rust-sdk/Cargo.toml
CLIENT_TARGET="$(pwd)/target/rust-sdk"

setup() {
  if ! cargo fetch --locked --manifest-path "$MANIFEST"; then
    echo "rust-sdk: \`cargo fetch\` failed for $MANIFEST (it needs crates.io the first time)" >&2
    exit 1
  fi
  CARGO_TARGET_DIR="$CLIENT_TARGET" cargo build --quiet --offline --locked --manifest-path "$MANIFEST"
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
unset DAGGER_SESSION_PORT DAGGER_SESSION_TOKEN _EXPERIMENTAL_DAGGER_CLI_BIN

echo "==> dagger-rs run target/rust-sdk/debug/rust-sdk-client"
if [ -z "${DRS_TEST_REGISTRY:-}" ]; then
  echo "==> no container checks: set DRS_TEST_REGISTRY to a registry holding busybox:latest" \
    "(\`cargo run -p xtask -- images\` serves one on 127.0.0.1:5000)"
fi
"$BIN" run "$CLIENT_TARGET/debug/rust-sdk-client"
