#!/bin/sh
# Runs a command as an App Service app whose identity endpoint is a loopback azkms-emulator,
# then stops the emulator:
#   examples/run-with-emulator.sh path/to/azkms-emulator COMMAND [ARGS...]
set -eu
emulator="$1"
shift
# Should detection ever fall through to IMDS, it finds a closed loopback port, not Azure.
AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:9
export AZURE_POD_IDENTITY_AUTHORITY_HOST
environment=$("$emulator" --print-env app-service --quiet)
eval "$environment"
trap 'kill "$AZKMS_EMULATOR_PID"' EXIT
"$@"
