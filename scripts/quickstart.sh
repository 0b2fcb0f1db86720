#!/usr/bin/env bash
# The README's first command: run the quickstart pipeline on this machine, offline from Docker Hub.
#
# On Debian 12, as yourself or as root. Idempotent; each step says what it does:
#   1. installs the Debian packages that are missing (scripts/install-packages.sh quickstart, from the list in
#      scripts/packages.txt; through `sudo apt-get` when not root — the only step that may need root): runc
#      (runs the containers), busybox-static, docker-registry (a loopback OCI registry), mmdebstrap (builds the
#      Debian images), ca-certificates, iptables (networking as root), uidmap and slirp4netns (as yourself:
#      the engine's user namespace and the containers' network);
#   2. `cargo run -p xtask -- images`: starts the registry on 127.0.0.1:5000 (or reuses it) and pushes
#      busybox, debian:bookworm-slim and rust:1-slim to it; the first run builds the Debian images with
#      mmdebstrap from deb.debian.org (a few minutes), later runs find them there;
#   3. `cargo run -p examples --bin quickstart` with DAGGER_RS_REGISTRY_MIRRORS pointing Docker Hub names at
#      that registry (unless you set it): tests and builds examples/app in rust:1-slim, packages it on
#      debian:bookworm-slim, publishes it to 127.0.0.1:5000/quickstart-app:latest, runs the published image
#      (its self-test, and as a service that a busybox container requests by the alias `app`).
# The SDK starts its embedded engine in-process, since no Dagger session or CLI is configured; as an ordinary
# user the program runs itself again in a user namespace of its own and runs the containers rootless (cache in
# ~/.cache/dagger-rs; see docs/engine.md, "Without root"). It writes a
# report of the run (DAGGER_RS_REPORT, default target/quickstart-report.html: a timeline of every operation,
# self-contained HTML) and says where at the end.
# Arguments are passed to the example (--address, --rust-image, --runtime-image, --app-dir, --client-image,
# --no-serve).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
step() { printf '\n==> [%ss] %s\n' "$(($(date +%s) - started))" "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not on PATH; install Rust from https://rustup.rs (the project needs Rust 1.89 or later)" >&2
  exit 1
fi

step "Debian packages (scripts/packages.txt)"
./scripts/install-packages.sh quickstart

if [ "$(id -u)" -ne 0 ]; then
  user=$(id -un)
  if ! grep -q "^$user:" /etc/subuid 2>/dev/null || ! grep -q "^$user:" /etc/subgid 2>/dev/null; then
    echo "note: $user has no subordinate ID range in /etc/subuid and /etc/subgid: containers can use one user"
    echo "      ID only, and building the Debian images needs a range. Add one (as root):"
    echo "        usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $user"
  fi
fi

step "offline images: cargo run -p xtask -- images"
cargo run -p xtask -- images

export DAGGER_RS_REGISTRY_MIRRORS="${DAGGER_RS_REGISTRY_MIRRORS:-docker.io=http://127.0.0.1:5000}"
export DAGGER_RS_REPORT="${DAGGER_RS_REPORT:-$PWD/target/quickstart-report.html}"
step "quickstart pipeline: cargo run -p examples --bin quickstart (DAGGER_RS_REGISTRY_MIRRORS=$DAGGER_RS_REGISTRY_MIRRORS)"
cargo run -p examples --bin quickstart -- "$@"

step "done; the run's report: $DAGGER_RS_REPORT (open it in a browser)"
