#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, generated code, docs, and all tests.
# First installs the Debian packages the tests need (scripts/install-packages.sh test, from scripts/packages.txt):
# as root they are installed with apt-get; otherwise the missing ones are named with the sudo command to run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUSTDOCFLAGS="${RUSTDOCFLAGS:--D warnings}"

step() { printf '\n==> %s\n' "$*"; }

step "Debian packages (scripts/packages.txt)"
./scripts/install-packages.sh test
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "Python SDK for the engine's client tests (scripts/python-sdk.sh --setup)"
./scripts/python-sdk.sh --setup
step "TypeScript SDK for the engine's client tests (scripts/ts-sdk.sh --setup; Node.js and npm come with the machine)"
./scripts/ts-sdk.sh --setup
step "Rust SDK client for the engine's client tests (scripts/rust-sdk.sh --setup; dagger-sdk from crates.io, built into target/rust-sdk)"
./scripts/rust-sdk.sh --setup
step "offline images on 127.0.0.1:5000 (cargo run -p xtask -- images; the first run builds them, minutes)"
cargo run -q -p xtask -- images
step "cargo nextest run (unit, integration and ui tests)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  echo "cargo-nextest is not installed; using cargo test"
  cargo test --workspace --no-fail-fast --lib --bins --tests
fi
step "the engine's unit tests as an ordinary user (they need no root; nobody runs a copy of the test binary)"
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
  lib_tests=$(cargo test -p dagger-engine --lib --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
  copy=$(mktemp /tmp/engine-lib-tests.XXXXXX)
  cp "$lib_tests" "$copy" && chmod 755 "$copy"
  (cd /tmp && runuser -u nobody -- "$copy" -q)
  rm -f "$copy"
else
  echo "skipped: not root (the unit tests above already ran as this user)"
fi
step "doc tests"
cargo test --workspace --doc
step "cargo doc (warnings are errors)"
cargo doc --workspace --no-deps
step "all checks passed"
