#!/usr/bin/env bash
# The libmongocrypt-facing tests against the next Debian release's libmongocrypt (>= 1.9, which
# has named KMS providers), unpacked into a private prefix; Debian 12's 1.7.2 stays the one the
# other stages use. scripts/mongocrypt-next-test.sh <build dir>
# With ccache, every file but the libmongocrypt session comes from the default build's objects.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build-mongocrypt-next}"
tests="crypt_session_test kms_faults_test c_api_test demo_test named_providers_test named_provider_bridge_test"

scripts/fetch-next-libmongocrypt.sh "$dir/libmongocrypt"
prefix="$(cd "$dir/libmongocrypt/prefix/usr" && pwd)"
libdir="$(dirname "$(find "$prefix/lib" -name 'libmongocrypt.so.0' | head -1)")"

echo "== mongocrypt-next: build ($tests)"
TARGETS="$tests" scripts/build.sh "$dir" -DAZKMS_BUILD_TESTS=ON -DAZKMS_BUILD_BENCH=OFF \
  -DCMAKE_PREFIX_PATH="$prefix"
found=$(sed -n 's/^mongocrypt_DIR:PATH=//p' "$dir/CMakeCache.txt")
if [[ "$found" != "$prefix"/* ]]; then
  echo "mongocrypt-next: CMake found libmongocrypt in '$found', not in $prefix" >&2
  exit 1
fi

# libmongoc (Debian 12's) loads libmongocrypt.so.0 too: the same, newer one.
labels=$(echo "$tests" | tr ' ' '|')
echo "== mongocrypt-next: ctest -L '$labels'"
LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" AZKMS_REQUIRE_NAMED_PROVIDERS=1 \
  ctest --test-dir "$dir" --output-on-failure -j"$(nproc)" -L "^($labels)\$"
