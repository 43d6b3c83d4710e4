#!/usr/bin/env bash
# Real Azure SDK clients against azkms-emulator: scripts/sdk-smoke.sh [build-dir]
#
# Installs @azure/identity and @azure/keyvault-keys from npm (once, cached in
# <build-dir>/sdk-smoke), then for every endpoint the SDK supports starts the built
# azkms-emulator, configures the credential with nothing but what `azkms-emulator --print-env
# <endpoint>` exported, gets a token and wraps and unwraps a key through CryptographyClient
# (tests/sdk-smoke/smoke.js). Node runs with `env -i`: no proxy, no other Azure variable.
#
# Loopback only: when it can, everything runs in a new network namespace (`unshare -n`) whose
# only interface is lo, so nothing can reach 169.254.169.254 or the internet; Azure Arc also
# needs a mount namespace, for the key file directory the SDK insists on. Without namespaces the
# endpoints still point at loopback only, and Azure Arc is left out.
#
# Skipped (exit 0, "skipped" printed) when node or npm is missing or npm cannot install.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

# The SDK's own Arc key file directory on Linux (msal-node refuses key files elsewhere).
arc_tokens=/var/opt/azcmagent/tokens
endpoints=(imds app-service azure-ml cloud-shell service-fabric workload-identity azure-arc)

# ---- inside the namespaces ---------------------------------------------------------------------
if [ "${1:-}" = "--inside" ]; then
  build="$2"
  with_arc="$3"
  ip link set lo up 2>/dev/null || true
  if [ "$with_arc" = yes ]; then
    # A private tmpfs over /var/opt in this mount namespace only.
    mount -t tmpfs -o mode=0755 tmpfs /var/opt
    mkdir -p "$arc_tokens"
    chmod 0700 "$arc_tokens"
  fi
  emulator="$build/bin/azkms-emulator"
  cache="$build/sdk-smoke"
  logs="$(mktemp -d "${TMPDIR:-/tmp}/azkms-sdk-smoke-XXXXXX")"
  failed=0
  for endpoint in "${endpoints[@]}"; do
    extra=()
    if [ "$endpoint" = azure-arc ]; then
      if [ "$with_arc" != yes ]; then
        echo "$endpoint: left out (needs a mount namespace for $arc_tokens)"
        continue
      fi
      extra=(--arc-key-dir "$arc_tokens")
    fi
    if ! env_out="$("$emulator" --print-env "$endpoint" "${extra[@]}" --log-file "$logs/$endpoint.log")"; then
      echo "$endpoint: FAILED: azkms-emulator did not start"
      failed=1
      continue
    fi
    pid="$(printf '%s\n' "$env_out" | sed -n 's/^export AZKMS_EMULATOR_PID=//p')"
    # The environment is print-env's output and nothing else (plus PATH and a scratch HOME).
    if ! env -i PATH="$PATH" HOME="$logs" bash -c 'eval "$1"; cd "$2" && exec timeout 90 node smoke.js "$3"' \
        _ "$env_out" "$cache" "$endpoint"; then
      failed=1
      echo "--- emulator log ($endpoint) ---"
      cat "$logs/$endpoint.log" || true
    fi
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  rm -rf "$logs"
  exit "$failed"
fi

# ---- outside: prerequisites, npm, isolation ----------------------------------------------------
build="$(cd "${1:-build}" && pwd)"
if [ ! -x "$build/bin/azkms-emulator" ]; then
  echo "sdk-smoke: $build/bin/azkms-emulator is not built" >&2
  exit 1
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "sdk-smoke: skipped (node and npm are needed)"
  exit 0
fi
cache="$build/sdk-smoke"
mkdir -p "$cache"
cp "$root/tests/sdk-smoke/package.json" "$root/tests/sdk-smoke/smoke.js" "$cache/"
if [ ! -f "$cache/node_modules/@azure/identity/package.json" ] ||
   [ ! -f "$cache/node_modules/@azure/keyvault-keys/package.json" ]; then
  echo "sdk-smoke: npm install @azure/identity @azure/keyvault-keys (cached in $cache)"
  if ! (cd "$cache" && timeout 300 npm install --no-audit --no-fund --loglevel=error \
          >"$cache/npm.log" 2>&1); then
    echo "sdk-smoke: skipped (npm could not install the Azure SDK packages; see $cache/npm.log)"
    exit 0
  fi
fi
echo "sdk-smoke: node $(node --version), @azure/identity $(node -p "require('$cache/node_modules/@azure/identity/package.json').version"), @azure/keyvault-keys $(node -p "require('$cache/node_modules/@azure/keyvault-keys/package.json').version")"

self="$root/scripts/sdk-smoke.sh"
if unshare -n -m true 2>/dev/null; then
  echo "sdk-smoke: isolated (network namespace with loopback only)"
  exec unshare -n -m bash "$self" --inside "$build" yes
elif unshare -r -n -m true 2>/dev/null; then
  echo "sdk-smoke: isolated (user and network namespace with loopback only)"
  exec unshare -r -n -m bash "$self" --inside "$build" yes
else
  echo "sdk-smoke: no namespaces here; every endpoint still points at loopback"
  exec bash "$self" --inside "$build" no
fi
