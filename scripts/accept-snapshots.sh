#!/usr/bin/env bash
# Accepts every pending insta snapshot (`*.snap.new`) after you have reviewed it by eye.
# (The same as `cargo insta accept`, without installing cargo-insta.)
set -euo pipefail
cd "$(dirname "$0")/.."
find . -name '*.snap.new' -not -path './target/*' -print0 | while IFS= read -r -d '' f; do
  sed '/^assertion_line:/d' "$f" > "${f%.new}"
  rm "$f"
  echo "accepted ${f%.new}"
done
