#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the end-to-end demo against the
# in-process emulator (loopback only). Extra arguments go to `azkms demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
TARGETS="azkms_cli" scripts/build.sh build -DAZKMS_BUILD_TESTS=OFF -DAZKMS_BUILD_BENCH=OFF
exec build/bin/azkms demo "$@"
