#!/usr/bin/env bash
# A short, bounded libFuzzer run from the checked-in seeds (new inputs go to the build tree).
set -euo pipefail
fuzzer=$1 seeds=$2 work=$3
mkdir -p "$work"
cp -n "$seeds"/* "$work"/ 2>/dev/null || true
exec "$fuzzer" -max_total_time=15 -timeout=5 -rss_limit_mb=1024 -print_final_stats=1 "$work"
