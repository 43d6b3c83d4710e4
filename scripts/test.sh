#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite:
#   unit   - every test (CTest/GoogleTest), warnings as errors
#   sdk    - real Azure SDK clients from npm (@azure/identity, @azure/keyvault-keys) against
#            azkms-emulator, loopback only (scripts/sdk-smoke.sh); skipped without node/npm or
#            when npm cannot reach its registry
#   asan   - every test again under AddressSanitizer + UndefinedBehaviorSanitizer
#   tsan   - the cache, concurrency and fork tests under ThreadSanitizer
#   fuzz   - a short run of each libFuzzer target on its seed corpus
#   package - install (cmake --install, Debian packages) and build the downstream examples
#             against what was installed (scripts/package-test.sh)
#   mongocrypt-next - the libmongocrypt-facing tests, named providers included, against the
#             next Debian release's libmongocrypt in a private prefix (scripts/mongocrypt-next-test.sh)
# Choose stages with AZKMS_TEST_STAGES="unit asan" (default: all seven).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

stages="${AZKMS_TEST_STAGES:-unit mongocrypt-next sdk asan tsan fuzz package}"
failed_stages=()
summary=()

run_ctest() {  # run_ctest <name> <build dir> [ctest args...]
  local name="$1" dir="$2"
  shift 2
  local log="$dir/ctest.log"
  echo "== $name: ctest $*"
  if ctest --test-dir "$dir" --output-on-failure -j"$(nproc)" "$@" | tee "$log"; then :; else failed_stages+=("$name"); fi
  local line
  line=$(grep -E 'tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | tail -1 || true)
  summary+=("$name: ${line:-no result}")
  if [[ "$line" =~ ([0-9]+)\ tests\ failed\ out\ of\ ([0-9]+) ]]; then
    total_failed=$((total_failed + BASH_REMATCH[1]))
    total_passed=$((total_passed + BASH_REMATCH[2] - BASH_REMATCH[1]))
  fi
}
total_passed=0
total_failed=0

for stage in $stages; do
  case "$stage" in
    unit)
      echo "== unit: build"
      scripts/build.sh build -DAZKMS_BUILD_TESTS=ON
      run_ctest unit build
      ;;
    sdk)
      echo "== sdk: build azkms-emulator, then scripts/sdk-smoke.sh"
      # After `unit` this is a no-op build; alone, only the emulator is built.
      TARGETS=azkms_emulator_bin scripts/build.sh build -DAZKMS_BUILD_TESTS=ON
      started=$(date +%s)
      if scripts/sdk-smoke.sh build | tee build/sdk-smoke.log; then
        if grep -q "skipped" build/sdk-smoke.log; then
          summary+=("sdk: skipped ($(grep -m1 skipped build/sdk-smoke.log))")
        else
          summary+=("sdk: passed in $(($(date +%s) - started)) s")
        fi
      else
        failed_stages+=("sdk")
        summary+=("sdk: FAILED after $(($(date +%s) - started)) s")
      fi
      ;;
    asan)
      echo "== asan: build (AddressSanitizer + UndefinedBehaviorSanitizer)"
      BUILD_TYPE=Debug scripts/build.sh build-asan -DAZKMS_SANITIZE=address,undefined -DAZKMS_BUILD_BENCH=OFF
      ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 run_ctest asan build-asan
      ;;
    tsan)
      echo "== tsan: build (ThreadSanitizer)"
      # Only the cache, concurrency and fork suites run here, so only they are built. (In the
      # fork suite, the tests whose children start threads skip themselves under TSan.)
      tsan_targets=$(ls tests/ | sed -n 's/^\(.*\(cache\|concurrency\|fork\).*_test\)\.cpp$/\1/p' | tr '\n' ' ')
      TARGETS="$tsan_targets" BUILD_TYPE=Debug CC=clang CXX=clang++ scripts/build.sh build-tsan -DAZKMS_SANITIZE=thread -DAZKMS_BUILD_BENCH=OFF
      TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 run_ctest tsan build-tsan -L 'cache|concurrency|fork'
      ;;
    fuzz)
      if ls fuzz/*_fuzzer.cpp >/dev/null 2>&1; then
        echo "== fuzz: build (libFuzzer)"
        fuzz_targets=$(ls fuzz/*_fuzzer.cpp | xargs -n1 basename | sed 's/\.cpp$//' | tr '\n' ' ')
        TARGETS="$fuzz_targets" CC=clang CXX=clang++ BUILD_TYPE=Debug scripts/build.sh build-fuzz -DAZKMS_BUILD_FUZZ=ON -DAZKMS_BUILD_TESTS=OFF -DAZKMS_BUILD_BENCH=OFF
        scripts/fuzz.sh build-fuzz "${AZKMS_FUZZ_SECONDS:-20}" || failed_stages+=("fuzz")
        summary+=("fuzz: see above")
      fi
      ;;
    mongocrypt-next)
      # After unit: with ccache, it rebuilds only what includes libmongocrypt's header.
      started=$(date +%s)
      mkdir -p build-mongocrypt-next
      if scripts/mongocrypt-next-test.sh build-mongocrypt-next 2>&1 | tee build-mongocrypt-next/stage.log; then
        line=$(grep -E 'tests passed, [0-9]+ tests failed out of [0-9]+' build-mongocrypt-next/stage.log | tail -1 || true)
        summary+=("mongocrypt-next: ${line:-no result} ($(($(date +%s) - started)) s)")
        if [[ "$line" =~ ([0-9]+)\ tests\ failed\ out\ of\ ([0-9]+) ]]; then
          total_passed=$((total_passed + BASH_REMATCH[2] - BASH_REMATCH[1]))
        fi
      else
        failed_stages+=("mongocrypt-next")
        summary+=("mongocrypt-next: FAILED after $(($(date +%s) - started)) s")
      fi
      ;;
    package)
      started=$(date +%s)
      if scripts/package-test.sh build-package; then
        summary+=("package: passed in $(($(date +%s) - started)) s")
      else
        failed_stages+=("package")
        summary+=("package: FAILED after $(($(date +%s) - started)) s")
      fi
      ;;
    *) echo "unknown stage '$stage'"; exit 2 ;;
  esac
done

echo "== summary"
for line in "${summary[@]}"; do echo "  $line"; done
if ((${#failed_stages[@]})); then
  echo "FAILED stages: ${failed_stages[*]}"
fi
echo "$total_passed passed, $total_failed failed"
if ((${#failed_stages[@]})); then exit 1; fi
