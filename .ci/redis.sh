#!/usr/bin/env bash
# Install redis-server (Debian package) if it is missing, for the tests of the shared rate-limit
# store. The tests start their own server on a free loopback port; nothing is started here.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo -n)
else
  echo ".ci/redis.sh: redis-server is missing and installing it needs root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends redis-server
# The package may start a system service on machines with an init system; the tests do not use it.
command -v redis-server >/dev/null
