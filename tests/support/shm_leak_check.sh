#!/usr/bin/env bash
# Snapshot /dev/shm before the suite, and fail after it if any block appeared that was not there.
set -euo pipefail
mode=$1 file=$2
list() { ls -1 /dev/shm | grep -v -E '^(sem\.|lttng|pulse)' | sort || true; }
case $mode in
    snapshot) list > "$file" ;;
    verify)
        leaked=$(comm -13 "$file" <(list))
        if [ -n "$leaked" ]; then
            echo "blocks left in /dev/shm by the test suite:" >&2
            for n in $leaked; do ls -l "/dev/shm/$n" >&2; done
            exit 1
        fi
        echo "no block left in /dev/shm"
        ;;
    *) echo "usage: $0 snapshot|verify FILE" >&2; exit 2 ;;
esac
