#!/usr/bin/env bash
# Installs the Debian 12 packages azkms needs to build, test, fuzz and package. Installs only what is
# missing, so it is quick when everything is there. Needs root (or sudo) when it installs.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  clang libclang-rt-14-dev clang-format
  libcurl4-openssl-dev libssl-dev
  nlohmann-json3-dev libcpp-httplib-dev libcli11-dev libhowardhinnant-date-dev
  libmongocrypt-dev libmongoc-dev libbson-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  ccache debhelper lintian help2man dpkg-dev
)

missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
