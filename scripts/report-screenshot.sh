#!/usr/bin/env bash
# Regenerates docs/report.png, the run report shown in the README: the report test's real run (busybox from
# the offline registry, one step from the cache, a fan-out of three commands, one failing command) rendered by
# headless Chromium at 1280x860.
#
#   scripts/report-screenshot.sh
#
# Needs what the test needs: root (containers), the offline registry (`cargo run -p xtask -- images` starts it;
# the test does too) and the `chromium` package (`scripts/install-packages.sh test`).
set -euo pipefail
cd "$(dirname "$0")/.."

out="$PWD/docs/report.png"
REPORT_SCREENSHOT="$out" cargo nextest run --no-capture -p tests --test report \
  -E 'test(a_real_run_reads_in_chromium_every_operation_in_order_the_failure_marked)'
echo "report-screenshot: wrote $out"
