#!/usr/bin/env bash
# Download exactly the wheels of benchmarks/device_wheels.txt (no dependencies) into a folder
# (default .device_wheels/) and check that together they stay within 20 MiB.
#   benchmarks/fetch_device_wheels.sh [FOLDER] [PYTHON_VERSION]
# PYTHON_VERSION (e.g. 3.12): that of the device machine, for the compiled wheel (xxhash);
# default: this Python's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-.device_wheels}"
version="${2:-$(python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}"
limit=$((20 * 1024 * 1024))
mkdir -p "$dest"
grep -v '^\s*#' "$here/device_wheels.txt" | grep -v '^\s*$' | xargs python -m pip download \
    --no-deps --only-binary=:all: --python-version "$version" \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any \
    --dest "$dest"
total=$(find "$dest" -name '*.whl' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
echo "$(find "$dest" -name '*.whl' | wc -l) wheels, $total bytes in $dest"
if [ "$total" -gt "$limit" ]; then
    echo "the wheels exceed 20 MiB ($total bytes): shorten benchmarks/device_wheels.txt" >&2
    exit 1
fi
