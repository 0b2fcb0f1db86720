#!/usr/bin/env bash
# Installs the Debian packages a command needs, from scripts/packages.txt (the only list):
#
#   scripts/install-packages.sh quickstart|test [--check]
#
# Packages already installed are left alone (nothing runs when none is missing). The missing ones are installed
# with apt-get: directly as root, through `sudo` otherwise (apt-get is the only thing run with sudo; without
# sudo the exact command to run is printed and the exit code is 1). With --check nothing is installed: the
# missing packages are listed and the exit code says whether any are.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  echo "usage: $0 quickstart|test [--check]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
command="$1"
check=0
[ "${2:-}" = "--check" ] && check=1
case "$command" in
  quickstart | test) ;;
  *) usage ;;
esac

wanted=()
while read -r name rest; do
  case "$name" in '' | '#'*) continue ;; esac
  needed_by="${rest%%#*}"
  for c in $needed_by; do
    if [ "$c" = "$command" ]; then
      wanted+=("$name")
      break
    fi
  done
done <packages.txt

missing=()
for p in "${wanted[@]}"; do
  # `dpkg-query` reports removed-but-configured packages as known: ask for the installed state itself.
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "packages: all installed (${wanted[*]})"
  exit 0
fi
if [ "$check" -eq 1 ]; then
  echo "packages: missing ${missing[*]}"
  exit 1
fi
apt=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "packages: missing ${missing[*]}; install them as root with:" >&2
    echo "  apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "packages: installing ${missing[*]} with sudo apt-get (the only step that needs root)"
  apt=(sudo DEBIAN_FRONTEND=noninteractive)
else
  echo "packages: installing ${missing[*]}"
fi
export DEBIAN_FRONTEND=noninteractive
"${apt[@]}" apt-get update -q
"${apt[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
