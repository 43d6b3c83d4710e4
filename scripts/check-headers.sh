#!/usr/bin/env bash
# Compiles each installed public header alone: every .hpp and .h as C++17, every .h also as
# C99, with the flags `pkg-config --cflags azkms` gives, warnings as errors.
#   scripts/check-headers.sh PREFIX      (PREFIX/include/azkms; PKG_CONFIG_PATH set by the caller)
set -euo pipefail
prefix="$1"

cflags=$(pkg-config --cflags azkms)
warnings=(-Wall -Wextra -Werror)
failed=0
compiles() {  # compiles <language flags...> -- <header>
  local header="${*: -1}"
  local flags=("${@:1:$#-2}")
  # shellcheck disable=SC2086  # cflags is a list of flags
  # The declaration after the include keeps a header of macros alone from being an empty file.
  printf '#include <%s>\nint header_check;\n' "$header" | ${CXX:-c++} "${flags[@]}" "${warnings[@]}" $cflags \
    -fsyntax-only - 2>"$tmp/errors"
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cd "$prefix/include"
for header in $(find azkms -name '*.h' -o -name '*.hpp' | sort); do
  if compiles -x c++ -std=c++17 -- "$header"; then
    echo "check-headers: C++17 ok      $header"
  else
    echo "check-headers: C++17 FAILED  $header"
    head -20 "$tmp/errors"
    failed=1
  fi
  if [[ "$header" == *.h ]]; then
    # Strict C99 hides POSIX declarations that libmongoc's headers use (struct addrinfo).
    if compiles -x c -std=c99 -pedantic -D_POSIX_C_SOURCE=200809L -- "$header"; then
      echo "check-headers: C99 ok        $header"
    else
      echo "check-headers: C99 FAILED    $header"
      head -20 "$tmp/errors"
      failed=1
    fi
  fi
done
exit "$failed"
