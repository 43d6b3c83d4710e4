#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the end-to-end demo against the
# in-process emulator (loopback only). Extra arguments go to `azkms demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# Builds only the CLI and the emulator, in the same tree and with the same options as scripts/test.sh, so that
# running one after the other never reconfigures or hides the tests.
TARGETS="azkms_cli azkms_emulator_bin" scripts/build.sh build
exec build/bin/azkms demo "$@"
