#!/usr/bin/env bash
# Uses azkms the way a downstream project would, from outside its build tree:
#   1. a Release shared build, `cmake --install` into a temporary prefix, its headers compiled
#      alone (scripts/check-headers.sh), its library exporting the public API only
#      (scripts/check-exports.sh);
#   2. the consumers in examples/ built against that prefix (find_package, pkg-config) and run
#      against the installed azkms-emulator;
#   3. a parent project that adds this source tree with add_subdirectory, and its test;
#   4. the Debian packages built with dpkg-buildpackage, checked by lintian, installed with
#      `apt-get install ./*.deb`, the consumers built against /usr and run, the packages
#      removed again.
# Everything talks to loopback emulators only. Needs root (or sudo) for step 4.
#   scripts/package-test.sh [WORK_DIR]     (default: build-package)
set -euo pipefail
cd "$(dirname "$0")/.."
source_dir=$(pwd)
work=$(realpath -m "${1:-build-package}")
jobs="${JOBS:-$(nproc)}"
mkdir -p "$work"

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

step() { echo "== package: $*"; }
dynamic_section() { readelf -d "$1" >"$work/readelf.txt" && cat "$work/readelf.txt"; }

# build_and_run_consumers <name> <prefix>: the find_package and pkg-config examples, built as
# a user would (copied out of the tree) against the azkms installed in <prefix>, then run as
# an App Service app against <prefix>/bin/azkms-emulator.
build_and_run_consumers() {
  local name="$1" prefix="$2"
  local dir="$work/consumers-$name" libdir="$prefix/lib"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -r examples/find_package examples/pkg_config "$dir/"
  # GNUInstallDirs: lib/<multiarch> under /usr on Debian, lib elsewhere.
  if [ ! -e "$libdir/pkgconfig/azkms.pc" ]; then libdir="$prefix/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)"; fi

  step "$name: find_package(azkms) consumer, shared and static library"
  for target in azkms::azkms azkms::azkms_static; do
    local build="$dir/find_package/build-${target#azkms::}"
    cmake -S "$dir/find_package" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$prefix" -DAZKMS_TARGET="$target" "${launcher[@]}" >/dev/null
    cmake --build "$build"
    examples/run-with-emulator.sh "$prefix/bin/azkms-emulator" "$build/token_from_cache"
  done
  if ! dynamic_section "$dir/find_package/build-azkms/token_from_cache" | grep 'NEEDED.*libazkms\.so\.0'; then
    echo "token_from_cache (azkms::azkms) does not load libazkms.so.0"
    return 1
  fi
  if dynamic_section "$dir/find_package/build-azkms_static/token_from_cache" | grep 'libazkms'; then
    echo "token_from_cache (azkms::azkms_static) loads libazkms"
    return 1
  fi

  step "$name: pkg-config azkms consumer (C)"
  (cd "$dir/pkg_config" && export PKG_CONFIG_PATH="$libdir/pkgconfig" &&
    cc kms_providers.c -o kms_providers $(pkg-config --cflags --libs azkms))
  LD_LIBRARY_PATH="$libdir" examples/run-with-emulator.sh "$prefix/bin/azkms-emulator" \
    "$dir/pkg_config/kms_providers"
}

step "Release shared build, cmake --install into a temporary prefix"
prefix="$work/prefix"
rm -rf "$prefix"
BUILD_TYPE=Release JOBS="$jobs" scripts/build.sh "$work/release" -DBUILD_SHARED_LIBS=ON \
  -DAZKMS_BUILD_TESTS=OFF -DAZKMS_BUILD_BENCH=OFF -DAZKMS_MAN_PAGES=ON
cmake --install "$work/release" --prefix "$prefix" >/dev/null
dynamic_section "$prefix/lib/libazkms.so" | grep 'SONAME.*\[libazkms\.so\.0\]'
"$prefix/bin/azkms" --version
"$prefix/bin/azkms-emulator" --version
test -s "$prefix/share/man/man1/azkms.1" && test -s "$prefix/share/man/man1/azkms-emulator.1"

step "public headers compile alone (installed prefix)"
PKG_CONFIG_PATH="$prefix/lib/pkgconfig" scripts/check-headers.sh "$prefix"

step "the installed shared library exports the public API only"
scripts/check-exports.sh "$prefix/lib/libazkms.so" "$prefix/include"

build_and_run_consumers prefix "$prefix"

step "add_subdirectory: a parent project building azkms from this tree"
parent="$work/add_subdirectory"
cmake -S examples/add_subdirectory -B "$parent" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DAZKMS_SOURCE_DIR="$source_dir" "${launcher[@]}" >/dev/null
cmake --build "$parent" -j"$jobs" --target token_from_cache azkms_emulator_bin
ctest --test-dir "$parent" --output-on-failure

step "Debian packages (dpkg-buildpackage -b), lintian"
# Built in a copy of the tree, so that dpkg-buildpackage's output (written next to the tree)
# lands in the work directory, and ccache finds the same paths every time.
deb_root="$work/deb"
version=$(dpkg-parsechangelog -S Version)
deb_tree="$deb_root/azkms-${version%-*}"
rm -rf "$deb_root"
mkdir -p "$deb_tree"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$deb_tree"
(cd "$deb_tree" && DEB_BUILD_OPTIONS="nocheck noautodbgsym parallel=$jobs" dpkg-buildpackage -b -us -uc >"$deb_root/build.log" 2>&1) ||
  { tail -50 "$deb_root/build.log"; exit 1; }
ls "$deb_root"/*.deb
changes=$(ls "$deb_root"/*.changes)
lintian --fail-on error "$changes"

step "apt-get install ./*.deb, consumers against /usr"
remove_packages() { $SUDO apt-get purge -y -qq azkms libazkms-dev libazkms0 >/dev/null || true; }
trap remove_packages EXIT
(cd "$deb_root" && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ./*.deb >/dev/null)
dpkg-query -W azkms libazkms-dev libazkms0
man -w azkms azkms-emulator
scripts/check-headers.sh /usr
scripts/check-exports.sh "/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/libazkms.so" /usr/include
build_and_run_consumers usr /usr
echo "== package: all checks passed"
