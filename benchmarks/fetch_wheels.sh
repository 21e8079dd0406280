#!/usr/bin/env bash
# Download the wheels listed in benchmarks/wheels.txt into .whl/ (for a GPU machine without a
# package index). All are pure Python, so they install on any CPython >= 3.10.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
mkdir -p .whl
grep -v '^\s*#' benchmarks/wheels.txt | grep -v '^\s*$' | xargs "$PY" -m pip download -q \
    --no-deps --only-binary=:all: --python-version 3.12 --platform any -d .whl
du -ch .whl/*.whl | tail -1
