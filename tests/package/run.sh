#!/usr/bin/env bash
# Installs the build into a scratch prefix, then configures, builds and runs the consumer project.
set -euo pipefail
build=$1 work=$2
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work"
cmake --install "$build" --prefix "$work/prefix" > "$work.install.log" 2>&1 || { cat "$work.install.log"; exit 1; }
cmake -S "$here/consumer" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$work/build" > /dev/null
SHMPOOL_TRACKER= SHMPOOL_TRACKER_EXE="$work/prefix/bin/shmpool-tracker" "$work/build/consumer"
