#!/usr/bin/env bash
# Runs every libFuzzer target built in a build tree for a fixed time each, one after the other.
#
#   scripts/fuzz.sh <build dir> <seconds per target> [name filter]
#
# Each target starts from a copy of its seed corpus (fuzz/corpus/<name without _fuzzer>/) in a
# temporary directory, so that a run never writes into the repository. A crash, a sanitizer
# report, a leak or an input slower than the per-input timeout fails the run; the input that
# did it is kept in <build dir>/fuzz-artifacts/ and its path printed. At the end, one line
# per target: executions, seconds, executions per second, new corpus entries, result.
set -uo pipefail
cd "$(dirname "$0")/.."

if (($# < 2)); then
  echo "usage: $0 <build dir> <seconds per target> [name filter]" >&2
  exit 2
fi
build_dir="$1"
seconds="$2"
filter="${3:-}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "fuzz.sh: seconds must be a positive integer, not '$seconds'" >&2
  exit 2
fi

shopt -s nullglob
targets=("$build_dir"/bin/*_fuzzer)
if ((${#targets[@]} == 0)); then
  echo "fuzz.sh: no *_fuzzer executables in $build_dir/bin (configure with -DAZKMS_BUILD_FUZZ=ON)" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/azkms-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
artifacts="$build_dir/fuzz-artifacts"
mkdir -p "$artifacts"

failed=()
rows=()
for target in "${targets[@]}"; do
  name=$(basename "$target")
  [[ -n "$filter" && "$name" != *"$filter"* ]] && continue
  seeds="fuzz/corpus/${name%_fuzzer}"
  corpus="$work/$name"
  mkdir -p "$corpus"
  seed_count=0
  if [[ -d "$seeds" ]]; then
    cp -R "$seeds"/. "$corpus"/
    seed_count=$(find "$corpus" -type f | wc -l)
  else
    echo "fuzz.sh: warning: $name has no seed corpus at $seeds"
  fi
  log="$work/$name.log"
  echo "== fuzz $name: ${seconds}s from $seed_count seeds"
  start=$(date +%s)
  # -timeout: an input taking this long is a hang (parsers must be fast on any input).
  # -rss_limit_mb: a parser that balloons memory on a small input is a bug too.
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
    "$target" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/$name-" >"$log" 2>&1
  rc=$?
  elapsed=$(($(date +%s) - start))
  execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
  execs=${execs:-0}
  rate=$((elapsed > 0 ? execs / elapsed : execs))
  entries=$(($(find "$corpus" -type f | wc -l) - seed_count))
  if ((rc == 0)); then
    result="ok"
  else
    result="FAILED (exit $rc)"
    failed+=("$name")
    echo "---- $name output (last 60 lines) ----"
    tail -60 "$log"
    grep -Eo "Test unit written to .*" "$log" || true
  fi
  rows+=("$(printf '%-28s %12s execs %5ss %9s/s %6s new  %s' "$name" "$execs" "$elapsed" "$rate" "$entries" "$result")")
done

echo "== fuzz summary"
for row in "${rows[@]}"; do echo "  $row"; done
if ((${#failed[@]})); then
  echo "fuzz.sh: FAILED: ${failed[*]} (inputs in $artifacts/)"
  exit 1
fi
exit 0
