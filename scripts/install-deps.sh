#!/usr/bin/env bash
# Installs the Debian 12 packages shmpool needs, and nothing when they are all present (idempotent).
set -euo pipefail

packages=(
    build-essential cmake make pkg-config
    libboost1.81-dev libtbb-dev libfmt-dev libcli11-dev nlohmann-json3-dev
    libgtest-dev libgmock-dev libbenchmark-dev
    clang libclang-rt-14-dev
    python3 python3-numpy python3-dev python3-venv pybind11-dev
    libpython3.11-testsuite
    libpng-dev gnuplot-nox
    openmpi-bin libopenmpi-dev
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "shmpool: these Debian packages are missing: ${missing[*]}" >&2
    echo "Install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi

echo "shmpool: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
