#!/usr/bin/env bash
# Configures and builds one build tree: scripts/build.sh <dir> [cmake options...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}"
shift || true
# ccache, when installed, makes rebuilds of unchanged files (other build trees, later runs) cheap.
# Paths are hashed relative to the checkout, so that two build trees with the same flags (the
# default build and the one against the next libmongocrypt) share their objects.
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}" CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"
fi
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" -DAZKMS_WERROR=ON \
  "${launcher[@]}" "$@" >/dev/null
ninja -C "$dir" -j"${JOBS:-$(nproc)}" ${TARGETS:-}
